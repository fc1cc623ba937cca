"""Another user of the machine against a run as root: each attack fails, and nothing is left.

A real second Linux user (made with ``useradd``, removed after) plants what it can in the
world-writable places elefast uses (``/var/tmp``, ``/dev/shm``, ``$TMPDIR``) and tries to read
what elefast keeps. Each row is one attack; it fails (the row is clean) when elefast refuses
with a message naming the place and its owner, or stays private. The intruder runs only
``/bin/sh`` (root's Python is in root's private home), so it does what a shell user can.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

from tests.reliability.harness import Harness, Row

USER = "eft-intruder"
SERVER_URL = os.environ.get("ELEFAST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def other_user(h: Harness) -> List[Row]:
    """The attacks of the security issue, by a second local user against a run as root."""
    if os.geteuid() != 0 or not shutil.which("useradd"):
        row = Row("another user's attacks (needs root and useradd)")
        row.notes.append("skipped: not root, or no useradd")
        return [row]
    intruder = Intruder()
    try:
        return [planted_cache(h, intruder), planted_run_dir(h, intruder), nothing_readable(h, intruder),
                planted_checkout_registry(intruder), *checkout_holder(intruder)]
    finally:
        intruder.close()


class Intruder:
    """The second user, and world-writable scratch directories like /var/tmp for it to plant in."""

    def __init__(self) -> None:
        subprocess.run(["userdel", USER], capture_output=True)
        subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", USER], check=True, capture_output=True)
        entry = pwd.getpwnam(USER)
        self.uid, self.gid = entry.pw_uid, entry.pw_gid
        self.places: List[Path] = []
        self.processes: List[subprocess.Popen] = []  # type: ignore[type-arg]

    def shared_place(self) -> Path:
        """A fresh directory with /var/tmp's mode (1777): anyone may create in it."""
        place = Path(tempfile.mkdtemp(prefix="elefast-shared-", dir="/var/tmp"))
        os.chmod(place, 0o1777)
        self.places.append(place)
        return place

    def sh(self, script: str, timeout: float = 30) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
        """Run ``script`` as the intruder."""
        return subprocess.run(["/bin/sh", "-c", script], user=self.uid, group=self.gid, extra_groups=[],
                              capture_output=True, text=True, timeout=timeout, cwd="/")

    def start(self, command: List[str]) -> subprocess.Popen:  # type: ignore[type-arg]
        process = subprocess.Popen(command, user=self.uid, group=self.gid, extra_groups=[], cwd="/",
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.processes.append(process)
        return process

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        for place in self.places:
            shutil.rmtree(place, ignore_errors=True)
        subprocess.run(["userdel", USER], capture_output=True)


def _elefast(args: List[str], env: Dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    return subprocess.run([sys.executable, "-m", "elefast", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=str(Path(__file__).resolve().parents[2]))


def _env(h: Harness, **extra: str) -> Dict[str, str]:
    env = {k: v for k, v in h.env.items() if not k.startswith("ELEFAST_")}
    env.update(PYTHONPATH=h.env["PYTHONPATH"], ELEFAST_SERVER="local")
    env.update(extra)
    return env


def _refused(row: Row, result: subprocess.CompletedProcess, place: Path) -> None:  # type: ignore[type-arg]
    said = result.stdout + result.stderr
    if result.returncode == 0:
        row.fail(f"the run went ahead ({said.strip()[-300:]})")
    elif str(place) not in said or USER not in said:
        row.fail(f"refused, but without naming {place} and its owner: {said.strip()[-400:]}")


def planted_cache(h: Harness, intruder: Intruder) -> Row:
    """The intruder makes root's cache directory first, with a remembered `pg_config --bindir`
    answer pointing at its own "postgres": root refuses the directory and runs none of it."""
    row = Row("another user's cache dir (planted programs.json) refused")
    row.runs += 1
    shared = intruder.shared_place()
    cache, evil = shared / "cache", shared / "evil"
    marker = shared / "evil-ran"
    fake = f"#!/bin/sh\ntouch {marker}\n"
    keys = {}
    for name in ("pg_config",):
        found = shutil.which(name)
        if found:
            real = Path(found).resolve()
            info = real.stat()
            keys[f"{real}|--bindir|{info.st_size}|{info.st_mtime_ns}|{info.st_ino}|{info.st_uid}"] = f"{evil}/bin\n"
    memo = json.dumps(keys).replace("'", "'\"'\"'")
    planted = intruder.sh(
        f"mkdir -p {cache} {evil}/bin && printf '%s' '{memo}' > {cache}/programs.json && "
        f"for p in postgres initdb pg_ctl; do printf '{fake}' > {evil}/bin/$p; chmod 755 {evil}/bin/$p; done && "
        f"chmod 777 {cache}")
    if planted.returncode != 0:
        row.fail(f"the intruder could not plant: {planted.stderr}")
        return row
    run_base = Path(tempfile.mkdtemp(prefix="elefast-intruder-run-"))
    try:
        result = _elefast(["server", "start"], _env(h, ELEFAST_CACHE_DIR=str(cache), ELEFAST_RUN_DIR=str(run_base)))
        _refused(row, result, cache)
        if marker.exists():
            row.fail("root ran the intruder's program")
        if (cache / "initdb").exists() or any(cache.glob("initdb-*")):
            row.fail("root wrote into the intruder's cache")
    finally:
        _elefast(["server", "stop"], _env(h, ELEFAST_CACHE_DIR=str(cache), ELEFAST_RUN_DIR=str(run_base)))
        shutil.rmtree(run_base, ignore_errors=True)
    return row


def _run_dir_for(env: Dict[str, str]) -> Optional[Path]:
    found = subprocess.run([sys.executable, "-c", "from elefast.provision.local import local_layout; "
                            "print(local_layout().run_dir)"], env=env, capture_output=True, text=True, timeout=60)
    return Path(found.stdout.strip()) if found.returncode == 0 and found.stdout.strip() else None


def planted_run_dir(h: Harness, intruder: Intruder) -> Row:
    """The intruder makes root's (predictable) run directory first, with a state file naming its own
    server: root refuses the directory, and its tests never reach that server."""
    row = Row("another user's run dir (planted state.json) refused")
    row.runs += 1
    shared = intruder.shared_place()
    env = _env(h, ELEFAST_RUN_DIR=str(shared))
    run_dir = _run_dir_for(env)
    if run_dir is None:
        row.fail("could not compute the run directory's name")
        return row
    state = json.dumps({"supervisor_pid": 1, "postgres_pid": 1, "port": 5432, "socket_dir": "/tmp",
                        "version": [15], "bindir": "/tmp"})
    planted = intruder.sh(f"mkdir -m 755 {run_dir} && printf '%s' '{state}' > {run_dir}/state.json")
    if planted.returncode != 0:
        row.fail(f"the intruder could not plant: {planted.stderr}")
        return row
    result = _elefast(["server", "start"], env)
    _refused(row, result, run_dir)
    status = _elefast(["server", "url"], env)
    if status.returncode == 0 and "5432" in status.stdout:
        row.fail(f"root took the intruder's server: {status.stdout.strip()}")
    return row


def nothing_readable(h: Harness, intruder: Intruder) -> Row:
    """A fresh throwaway server (initdb, cache filled): the intruder can read none of its files, and
    each file that holds a secret or data is 0600."""
    row = Row("run dir and cache files: 0600, unreadable by another user")
    row.runs += 1
    run_base, cache = Path(tempfile.mkdtemp(prefix="elefast-intruder-run-")), intruder.shared_place() / "cache"
    os.chmod(run_base, 0o755)  # the server user must get in; the intruder may list the base, nothing below
    env = _env(h, ELEFAST_CACHE_DIR=str(cache), ELEFAST_RUN_DIR=str(run_base))
    try:
        started = _elefast(["server", "start"], env)
        if started.returncode != 0:
            row.fail(f"the server did not start: {started.stderr.strip()[-400:]}")
            return row
        deadline = time.monotonic() + 30  # the supervisor fills the cache just after the server is up
        while not any(cache.glob("*.password")) and time.monotonic() < deadline:
            time.sleep(0.2)
        files = [path for base in (run_base, cache) for path in base.rglob("*")
                 if path.is_file() and not path.is_symlink() and "/bin-" not in str(path)]
        if not files:
            row.fail("no files found to check")
        loose = [f"{path} ({oct(path.stat().st_mode & 0o777)})" for path in files
                 if path.parent in (cache, *run_base.iterdir()) and path.stat().st_mode & 0o077]
        if loose:
            row.fail(f"files open to others: {loose[:5]}")
        listing = intruder.shared_place() / "files"
        listing.write_text("\n".join(str(path) for path in files) + "\n")
        os.chmod(listing, 0o644)
        read = intruder.sh(f"while read -r f; do cat \"$f\" > /dev/null 2>&1 && echo \"READ $f\"; done < {listing}; "
                           "true", timeout=120)
        readable = [line for line in read.stdout.splitlines() if line.startswith("READ ")]
        if readable:
            row.fail(f"the intruder read {len(readable)} file(s): {readable[:5]}")
    finally:
        _elefast(["server", "stop"], env)
        shutil.rmtree(run_base, ignore_errors=True)
    return row


def planted_checkout_registry(intruder: Intruder) -> Row:
    """The intruder makes root's checkout registry (a fixed name in $TMPDIR) first: `checkout` refuses."""
    row = Row("another user's checkout registry refused")
    row.runs += 1
    shared = intruder.shared_place()
    registry = shared / "elefast-checkouts-0"
    planted = intruder.sh(f"mkdir -m 777 {registry}")
    if planted.returncode != 0:
        row.fail(f"the intruder could not plant: {planted.stderr}")
        return row
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELEFAST_")}
    env.update(TMPDIR=str(shared), PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    result = _elefast(["checkout", "--url", SERVER_URL, "--hold", "60", "--timeout", "20"], env)
    _refused(row, result, registry)
    if result.returncode == 0:  # it went ahead: give the database back
        _elefast(["release", result.stdout.strip().rsplit("/", 1)[-1]], env)
    return row


def checkout_holder(intruder: Intruder) -> List[Row]:
    """A checkout with a password in --url: no password on the holder's command line; a record whose
    pid was swapped for another process is refused by `release`, which signals nothing."""
    secret_row = Row("checkout --url password not on any command line")
    swap_row = Row("release with a swapped pid signals nothing")
    secret_row.runs += 1
    swap_row.runs += 1
    registry_base = Path(tempfile.mkdtemp(prefix="elefast-intruder-tmp-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELEFAST_")}
    env.update(TMPDIR=str(registry_base), PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    secret = "not-a-real-s3cret"
    url = SERVER_URL.replace("postgres@", f"postgres:{secret}@", 1)
    name = ""
    try:
        result = _elefast(["checkout", "--url", url, "--hold", "120", "--json", "--timeout", "20"], env)
        if result.returncode != 0:
            secret_row.fail(f"checkout failed: {result.stderr.strip()[-400:]}")
            swap_row.fail("no checkout to release")
            return [secret_row, swap_row]
        report = json.loads(result.stdout)
        name, holder = report["name"], int(report["holder_pid"])
        command = Path(f"/proc/{holder}/cmdline").read_bytes().decode(errors="replace")
        if secret in command:
            secret_row.fail("the password is on the holder's command line")
        if secret in result.stdout + result.stderr:
            secret_row.fail("the password was printed")
        victim = intruder.start(["/bin/sleep", "120"])
        record = registry_base / f"elefast-checkouts-{os.getuid()}" / f"{name}.json"
        entry = json.loads(record.read_text())
        record.write_text(json.dumps(dict(entry, pid=victim.pid)))
        refused = _elefast(["release", name], env)
        if refused.returncode == 0:
            swap_row.fail(f"release accepted the swapped record: {refused.stdout.strip()}")
        elif "Not signalling" not in refused.stderr + refused.stdout:
            swap_row.fail(f"refused without saying why: {refused.stderr.strip()[-300:]}")
        time.sleep(0.2)
        if victim.poll() is not None:
            swap_row.fail("release killed the unrelated process")
        record.write_text(json.dumps(entry))
        released = _elefast(["release", name], env)
        if released.returncode != 0:
            swap_row.fail(f"the real release failed: {released.stderr.strip()[-300:]}")
        else:
            name = ""
    finally:
        if name:  # leave nothing: the holder is ours, stop it
            for path in registry_base.rglob("*.json"):
                try:
                    os.kill(int(json.loads(path.read_text())["pid"]), signal.SIGTERM)
                except (OSError, ValueError, KeyError):
                    pass
            swap_row.leftovers += 1
        shutil.rmtree(registry_base, ignore_errors=True)
    return [secret_row, swap_row]
