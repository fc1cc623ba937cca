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
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

from tests.reliability import intruder_data
from tests.reliability.harness import Harness, Row

USER = "eft-intruder"
VICTIM = "eft-victim"
ROOT = Path(__file__).resolve().parents[2]
SERVER_URL = os.environ.get("ELEFAST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def other_user(h: Harness) -> List[Row]:
    """The attacks of the security issue, by a second local user against a run as root, then against
    a run as an ordinary user (a third account, running this checkout with the system's Python)."""
    if os.geteuid() != 0 or not shutil.which("useradd"):
        row = Row("another user's attacks (needs root and useradd)")
        row.notes.append("skipped: not root, or no useradd")
        return [row]
    intruder = Intruder()
    rows: List[Row] = []
    try:
        victims = [Victim.root(h)]
        ordinary = Victim.ordinary(h, intruder)
        if ordinary is None:
            skipped = Row("attacks on an ordinary user's run")
            skipped.notes.append(f"skipped: no system Python {sys.version_info[0]}.{sys.version_info[1]} to run "
                                 "this checkout as another account")
            rows.append(skipped)
        else:
            victims.append(ordinary)
        for victim in victims:
            found = [planted_cache(victim, intruder), planted_run_dir(victim, intruder),
                     nothing_readable(victim, intruder), planted_checkout_registry(victim, intruder),
                     *checkout_holder(victim, intruder), intruder_data.symlinked_data_root(victim, intruder),
                     intruder_data.planted_postmaster_pid(victim, intruder)]
            for row in found:
                row.scenario = f"{victim.label}: {row.scenario}"
            rows.extend(found)
        return rows
    finally:
        intruder.close()


class Victim:
    """Whose run is attacked: root's (this process's Python), or an ordinary account's."""

    def __init__(self, label: str, python: List[str], env: Dict[str, str], uid: Optional[int] = None,
                 gid: Optional[int] = None) -> None:
        self.label, self.python, self.env, self.uid, self.gid = label, python, env, uid, gid

    @classmethod
    def root(cls, h: Harness) -> Victim:
        env = {k: v for k, v in h.env.items() if not k.startswith("ELEFAST_")}
        return cls("root", [sys.executable], env)

    @classmethod
    def ordinary(cls, h: Harness, intruder: Intruder) -> Optional[Victim]:
        """A second account running elefast from this checkout and this venv's packages with the
        system's Python of the same version (root's Python lives in root's private home)."""
        python = shutil.which(f"python{sys.version_info[0]}.{sys.version_info[1]}", path="/usr/bin:/usr/local/bin")
        if python is None:
            return None
        subprocess.run(["userdel", VICTIM], capture_output=True)
        subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", VICTIM], check=True, capture_output=True)
        intruder.users.append(VICTIM)
        entry = pwd.getpwnam(VICTIM)
        home = Path(tempfile.mkdtemp(prefix="elefast-victim-home-"))
        os.chown(home, entry.pw_uid, entry.pw_gid)
        intruder.places.append(home)
        packages = sysconfig.get_paths()["purelib"]
        env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "PYTHONPATH": f"{ROOT}{os.pathsep}{packages}",
               "LANG": "C.UTF-8"}
        victim = cls("ordinary user", [python], env, entry.pw_uid, entry.pw_gid)
        check = victim.run(["-c", "import sqlalchemy, psycopg, elefast"], {})
        return victim if check.returncode == 0 else None

    def run(self, args: List[str], env: Dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
        """``python ARGS`` as this victim, with its environment plus ``env``."""
        options: Dict[str, object] = {}
        if self.uid is not None:
            options.update(user=self.uid, group=self.gid, extra_groups=[])
        return subprocess.run([*self.python, *args], env=dict(self.env, **env), capture_output=True, text=True,
                              timeout=timeout, cwd=str(ROOT) if self.uid is None else "/", **options)  # type: ignore[arg-type]

    def elefast(self, args: List[str], env: Dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
        """``python -m elefast ARGS`` as this victim."""
        return self.run(["-m", "elefast", *args], env, timeout)

    def private_place(self) -> Path:
        """A fresh directory of the victim's own."""
        place = Path(tempfile.mkdtemp(prefix="elefast-victim-"))
        if self.uid is not None:
            os.chown(place, self.uid, self.gid or -1)
        return place

    def registry(self, tmpdir: Path) -> Path:
        return tmpdir / f"elefast-checkouts-{self.uid if self.uid is not None else os.getuid()}"


class Intruder:
    """The second user, and world-writable scratch directories like /var/tmp for it to plant in."""

    def __init__(self) -> None:
        subprocess.run(["userdel", USER], capture_output=True)
        subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", USER], check=True, capture_output=True)
        entry = pwd.getpwnam(USER)
        self.uid, self.gid = entry.pw_uid, entry.pw_gid
        self.places: List[Path] = []
        self.users: List[str] = [USER]
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
        for user in self.users:  # a process the account still runs (a server of its own) would keep it
            subprocess.run(["pkill", "-KILL", "-u", user], capture_output=True)
            time.sleep(0.2)
            subprocess.run(["userdel", user], capture_output=True)


def _refused(row: Row, result: subprocess.CompletedProcess, place: Path) -> None:  # type: ignore[type-arg]
    said = result.stdout + result.stderr
    if result.returncode == 0:
        row.fail(f"the run went ahead ({said.strip()[-300:]})")
    elif str(place) not in said or USER not in said:
        row.fail(f"refused, but without naming {place} and its owner: {said.strip()[-400:]}")


def planted_cache(victim: Victim, intruder: Intruder) -> Row:
    """The intruder makes the victim's cache directory first, with a remembered `pg_config --bindir`
    answer pointing at its own "postgres": the victim refuses the directory and runs none of it."""
    row = Row("another user's cache dir (planted programs.json) refused")
    row.runs += 1
    shared = intruder.shared_place()
    cache, evil = shared / "cache", shared / "evil"
    marker = shared / "evil-ran"
    fake = f"#!/bin/sh\ntouch {marker}\n"
    keys = {}
    found = shutil.which("pg_config")
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
    env = {"ELEFAST_SERVER": "local", "ELEFAST_CACHE_DIR": str(cache), "ELEFAST_RUN_DIR": str(victim.private_place())}
    try:
        _refused(row, victim.elefast(["server", "start"], env), cache)
        if marker.exists():
            row.fail("the victim ran the intruder's program")
        if any(cache.glob("initdb-*")) or any(cache.glob("bin-*")):
            row.fail("the victim wrote into the intruder's cache")
    finally:
        victim.elefast(["server", "stop"], env)
        shutil.rmtree(env["ELEFAST_RUN_DIR"], ignore_errors=True)
    return row


def planted_run_dir(victim: Victim, intruder: Intruder) -> Row:
    """The intruder makes the victim's (predictable) run directory first, with a state file naming its
    own server: the victim refuses the directory, and never reaches that server."""
    row = Row("another user's run dir (planted state.json) refused")
    row.runs += 1
    shared = intruder.shared_place()
    env = {"ELEFAST_SERVER": "local", "ELEFAST_RUN_DIR": str(shared)}
    found = victim.run(["-c", "from elefast.provision.local import local_layout; print(local_layout().run_dir)"], env)
    if found.returncode != 0 or not found.stdout.strip():
        row.fail(f"could not compute the run directory's name: {found.stderr.strip()[-300:]}")
        return row
    run_dir = Path(found.stdout.strip())
    state = json.dumps({"supervisor_pid": 1, "postgres_pid": 1, "port": 5432, "socket_dir": "/tmp",
                        "version": [15], "bindir": "/tmp"})
    planted = intruder.sh(f"mkdir -m 755 {run_dir} && printf '%s' '{state}' > {run_dir}/state.json")
    if planted.returncode != 0:
        row.fail(f"the intruder could not plant: {planted.stderr}")
        return row
    _refused(row, victim.elefast(["server", "start"], env), run_dir)
    status = victim.elefast(["server", "url"], env)
    if status.returncode == 0 and "5432" in status.stdout:
        row.fail(f"the victim took the intruder's server: {status.stdout.strip()}")
    return row


def nothing_readable(victim: Victim, intruder: Intruder) -> Row:
    """A fresh throwaway server (initdb, cache filled) in the world-writable places: the intruder can
    read none of its files, and each file that holds a secret or data is 0600."""
    row = Row("run dir and cache files: 0600, unreadable by another user")
    row.runs += 1
    run_base, cache = intruder.shared_place(), intruder.shared_place() / "cache"
    env = {"ELEFAST_SERVER": "local", "ELEFAST_CACHE_DIR": str(cache), "ELEFAST_RUN_DIR": str(run_base)}
    try:
        started = victim.elefast(["server", "start"], env)
        if started.returncode != 0:
            row.fail(f"the server did not start: {started.stderr.strip()[-400:]}")
            return row
        deadline = time.monotonic() + 30  # the supervisor fills the cache just after the server is up
        while time.monotonic() < deadline and (not any(cache.glob("*.password"))
                                               or any(run_base.glob("elefast-*/initdb.fresh"))):
            time.sleep(0.2)
        files = [path for base in (run_base, cache) for path in base.rglob("*")
                 if path.is_file() and not path.is_symlink() and "/bin-" not in str(path)]
        files = [path for path in files if path.exists()]  # a temporary file may have gone meanwhile
        if not any(path.name == "postgres.log" for path in files) or not any(cache.glob("*.password")):
            row.fail(f"the log or the cached password is missing: {[str(path) for path in files][:8]}")
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
        victim.elefast(["server", "stop"], env)
    return row


def planted_checkout_registry(victim: Victim, intruder: Intruder) -> Row:
    """The intruder makes the victim's checkout registry (a fixed name in $TMPDIR) first: `checkout` refuses."""
    row = Row("another user's checkout registry refused")
    row.runs += 1
    shared = intruder.shared_place()
    registry = victim.registry(shared)
    planted = intruder.sh(f"mkdir -m 777 {registry}")
    if planted.returncode != 0:
        row.fail(f"the intruder could not plant: {planted.stderr}")
        return row
    env = {"TMPDIR": str(shared)}
    result = victim.elefast(["checkout", "--url", SERVER_URL, "--hold", "60", "--timeout", "20"], env)
    _refused(row, result, registry)
    if result.returncode == 0:  # it went ahead: give the database back
        victim.elefast(["release", result.stdout.strip().rsplit("/", 1)[-1]], env)
    return row


def checkout_holder(victim: Victim, intruder: Intruder) -> List[Row]:
    """A checkout with a password in --url: no password on the holder's command line; a record whose
    pid was swapped for another process is refused by `release`, which signals nothing."""
    secret_row = Row("checkout --url password not on any command line")
    swap_row = Row("release with a swapped pid signals nothing")
    secret_row.runs += 1
    swap_row.runs += 1
    tmpdir = victim.private_place()
    env = {"TMPDIR": str(tmpdir)}
    secret = "not-a-real-s3cret"
    url = SERVER_URL.replace("postgres@", f"postgres:{secret}@", 1)
    name = ""
    try:
        result = victim.elefast(["checkout", "--url", url, "--hold", "120", "--json", "--timeout", "20"], env)
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
        other = intruder.start(["/bin/sleep", "120"])
        record = victim.registry(tmpdir) / f"{name}.json"
        entry = json.loads(record.read_text())
        record.write_text(json.dumps(dict(entry, pid=other.pid)))  # as root: the record keeps its owner
        refused = victim.elefast(["release", name], env)
        if refused.returncode == 0:
            swap_row.fail(f"release accepted the swapped record: {refused.stdout.strip()}")
        elif "Not signalling" not in refused.stderr + refused.stdout:
            swap_row.fail(f"refused without saying why: {refused.stderr.strip()[-300:]}")
        time.sleep(0.2)
        if other.poll() is not None:
            swap_row.fail("release killed the unrelated process")
        record.write_text(json.dumps(entry))
        released = victim.elefast(["release", name], env)
        if released.returncode != 0:
            swap_row.fail(f"the real release failed: {released.stderr.strip()[-300:]}")
        else:
            name = ""
    finally:
        if name:  # leave nothing: the holder is the victim's, stop it
            for path in tmpdir.rglob("*.json"):
                try:
                    os.kill(int(json.loads(path.read_text())["pid"]), signal.SIGTERM)
                except (OSError, ValueError, KeyError):
                    pass
            swap_row.leftovers += 1
        shutil.rmtree(tmpdir, ignore_errors=True)
    return [secret_row, swap_row]
