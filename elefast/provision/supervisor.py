"""The supervisor: one small process that owns a throwaway PostgreSQL server.

Started (detached, in its own session) by the first test process that needs the
local server: ``python -m elefast.provision.supervisor RUN_DIR``. It

1. prepares the data directory (a copy of the cached ``initdb`` output, or a
   fresh ``initdb --no-sync`` that then fills the cache);
2. starts ``postgres`` directly, as the server user when we are root, with
   ``PR_SET_PDEATHSIG`` so the server dies with its supervisor whatever kills it;
3. writes the state file once a connection succeeds;
4. every few hundred milliseconds, under the lock file, looks at the client
   leases (files each client process holds an ``flock`` on; the kernel releases
   it when the process dies, SIGKILL included) and stops the server shortly
   after the last client is gone, unless ``keep`` exists.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from elefast.provision import locks, reflinks
from elefast.provision.binaries import Binaries
from elefast.provision.cache import cache_dir, private_cache
from elefast.provision.layout import Layout, ServerUser, server_user
from elefast.provision.private import (
    check_private_dir,
    foreign_process,
    open_private,
    process_start,
    read_private,
    server_dir,
    write_private,
)

#: Seconds without any client before the server is stopped.
IDLE_GRACE = 1.0
#: Seconds between two looks at the leases.
LEASE_POLL = 0.25

#: Settings for a disposable test server (upstream elefast's Optimizations where they apply).
TEST_SETTINGS = (
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "wal_level=minimal",
    "max_wal_senders=0",
    "archive_mode=off",
    "jit=off",
    "shared_buffers=128MB",
    "checkpoint_timeout=1800",
    "max_connections=300",
    "log_statement=none",
    "log_min_duration_statement=-1",
    "logging_collector=off",
    "unix_socket_permissions=0700",
)


def _as_user(user: Optional[ServerUser]) -> Dict[str, Any]:
    if user is None:
        return {}
    return {"user": user.uid, "group": user.gid, "extra_groups": []}


def _own(path: Path, user: Optional[ServerUser], what: str = "the directory") -> None:
    """Create ``path`` ``0700``, the server user's (never through a symbolic link), or check the one there."""
    ids = (user.uid, user.gid) if user is not None else (os.geteuid(), os.getegid())
    server_dir(path, *ids, what=what)


def _child_setup(user: Optional[ServerUser]) -> Callable[[], None]:
    """What the server process runs between fork and exec: drop privileges, then ask to die with us.

    The credentials change comes first because changing them clears the
    parent-death signal; that is why the server is not started with
    ``Popen(user=...)`` (which switches user after ``preexec_fn``).
    """

    prctl = None
    if sys.platform.startswith("linux"):
        try:  # loaded here: after setuid the server user may not read our Python's files
            import ctypes

            prctl = ctypes.CDLL(None, use_errno=True).prctl
        except Exception:
            prctl = None

    def setup() -> None:
        if user is not None:
            os.setgroups([])
            os.setgid(user.gid)
            os.setuid(user.uid)
        if prctl is not None:
            prctl(1, int(signal.SIGQUIT))  # PR_SET_PDEATHSIG: immediate shutdown if we die

    return setup


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _check_reachable(directory: Path, user: Optional[ServerUser]) -> None:
    """Refuse (with the fix) an ``ELEFAST_DATA_DIR`` the server user cannot enter; never chmod it."""
    if user is None:
        return
    for folder in [directory, *directory.parents]:
        if not folder.exists():
            continue  # made below, by us, 0755
        mode, owner, group = folder.stat().st_mode, folder.stat().st_uid, folder.stat().st_gid
        if (owner == user.uid and mode & 0o100) or (group == user.gid and mode & 0o010) or mode & 0o001:
            continue
        raise RuntimeError(
            f"ELEFAST_DATA_DIR={directory}: the server runs as {user.name!r}, which cannot enter {folder} "
            f"(mode {oct(mode & 0o777)}). Choose a directory it can reach, or let it in: chmod o+x {folder}"
        )


def prepare_data_root(layout: Layout) -> None:
    """``ELEFAST_DATA_DIR``: make (or check) the directory of ours inside it that holds the data, before
    anything reads or writes there. A name another user planted (a symbolic link, a directory of
    theirs) is refused, never followed."""
    if layout.data_root is None:
        return
    _check_reachable(layout.data_root.parent, layout.user)  # before making anything there
    for folder in reversed([layout.data_root.parent, *layout.data_root.parent.parents]):
        if not folder.exists():  # ours: made enterable, whatever the umask says
            folder.mkdir(mode=0o755)
            os.chmod(folder, 0o755)
    _own(layout.data_root, layout.user, "the local server's data root (in ELEFAST_DATA_DIR)")


def prepare_data(layout: Layout) -> Optional[Path]:
    """Make sure ``layout.data`` holds a cluster: copy the cached initdb output, or run initdb.

    After a fresh initdb, returns the directory holding its pristine output, for
    :func:`fill_cache` to copy to the (slower, on-disk) cache once the server is up.
    """
    user = layout.user
    if (layout.data / "PG_VERSION").is_file():
        return None
    if layout.data.exists():
        shutil.rmtree(layout.data)
    _own(layout.data, user, "the local server's data directory")
    cached = layout.initdb_cache
    private_cache()  # a cluster another user planted in the cache would come with their password
    cached_password = cached.parent / (cached.name + ".password")
    if (cached / "PG_VERSION").is_file() and cached_password.is_file():
        subprocess.run(["cp", "-a", f"{cached}/.", str(layout.data)], check=True, **_as_user(user))
        write_private(layout.password_file, read_private(cached_password, "the cached password file") or "")
        return None
    fresh = layout.run_dir / "initdb.fresh"
    if fresh.exists():
        shutil.rmtree(fresh)
    _own(fresh, user)
    import secrets  # only for a fresh initdb: not on the warm path

    password = secrets.token_urlsafe(18)
    pwfile = layout.run_dir / "initdb.pw"
    write_private(pwfile, password + "\n")  # 0600 from the start; then the server user's, for initdb
    if user is not None:
        os.chown(pwfile, user.uid, user.gid)
    try:
        result = subprocess.run(
            [str(layout.binaries.initdb), "-D", str(fresh), "-U", "postgres", "-E", "UTF8",
             "--locale=C", "--no-sync", "--auth-local=trust", "--auth-host=scram-sha-256",
             f"--pwfile={pwfile}"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, **_as_user(user),
        )
    finally:
        pwfile.unlink()
    if result.returncode != 0:
        raise RuntimeError(f"initdb failed: {result.stderr.strip() or result.stdout.strip()}")
    write_private(layout.password_file, password)
    subprocess.run(["cp", "-a", f"{fresh}/.", str(layout.data)], check=True, **_as_user(user))
    return fresh


def fill_cache(layout: Layout, fresh: Path) -> None:
    """Copy a pristine initdb output into the cache, then remove it (best effort)."""
    user = layout.user
    cached = layout.initdb_cache
    password = read_private(layout.password_file, "the local server's password file") or ""
    try:
        private_cache()
        tmp = layout.cache / f"{cached.name}.tmp-{os.getpid()}"
        _own(tmp, user)
        subprocess.run(["cp", "-a", f"{fresh}/.", str(tmp)], check=True, **_as_user(user))
        pw = cached.parent / (cached.name + ".password")
        write_private(pw, password)
        os.replace(tmp, cached)
    except OSError:
        shutil.rmtree(layout.cache / f"{cached.name}.tmp-{os.getpid()}", ignore_errors=True)
    except subprocess.CalledProcessError:
        shutil.rmtree(layout.cache / f"{cached.name}.tmp-{os.getpid()}", ignore_errors=True)
    finally:
        shutil.rmtree(fresh, ignore_errors=True)


def _kill_stale_postmaster(layout: Layout, log: Any) -> None:
    """A postgres left running on our data directory by a dead supervisor is stopped: only a process
    of the server's user running our ``postgres`` program (a pid file names any process)."""
    pidfile = layout.data / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    if not locks.pid_alive(pid):
        return
    why = foreign_process(pid, layout.user.uid if layout.user else os.geteuid(), layout.binaries.postgres)
    if why is not None:
        log.write(f"elefast: not stopping pid {pid}, named by {pidfile}: {why}\n".encode())
        log.flush()
        return
    os.kill(pid, signal.SIGQUIT)
    deadline = time.monotonic() + 10
    while locks.pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)


def start_postgres(layout: Layout, port: int, log: Any) -> subprocess.Popen:  # type: ignore[type-arg]
    """Start ``postgres`` on the data directory; returns the process."""
    _own(layout.socket_dir, layout.user, "the local server's socket directory")
    settings: List[str] = []
    extra = ["file_copy_method=clone"] if layout.binaries.major >= 18 and reflinks.supported(layout.data) else []
    for setting in (*TEST_SETTINGS, *extra, f"unix_socket_directories={layout.socket_dir}",
                    "listen_addresses=127.0.0.1"):
        settings += ["-c", setting]
    return subprocess.Popen(
        [str(layout.binaries.postgres), "-D", str(layout.data), "-p", str(port), *settings],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        preexec_fn=_child_setup(layout.user),
    )


def wait_ready(layout: Layout, port: int, process: subprocess.Popen, timeout: float) -> None:  # type: ignore[type-arg]
    """Poll every few milliseconds until postgres says it is ready.

    PostgreSQL writes ``ready`` as the eighth line of ``postmaster.pid`` once it
    accepts connections (what ``pg_ctl`` waits for, minus its 100 ms sleeps);
    reading a file costs far less than trying to connect.
    """
    pidfile = layout.data / "postmaster.pid"
    deadline = time.monotonic() + timeout
    while True:
        try:
            lines = pidfile.read_text().splitlines()
            if len(lines) >= 8 and lines[0].strip() == str(process.pid) and lines[7].strip() == "ready":
                return
        except OSError:
            pass
        if process.poll() is not None:
            raise RuntimeError(f"postgres exited with code {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"postgres was not ready within {timeout:g} s")
        time.sleep(0.002)


def stop_postgres(process: subprocess.Popen) -> None:  # type: ignore[type-arg]
    """Fast shutdown (SIGINT), then immediate (SIGQUIT), then SIGKILL."""
    for sig, wait in ((signal.SIGINT, 10.0), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
        if process.poll() is not None:
            return
        try:
            process.send_signal(sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _write_state(layout: Layout, state: Dict[str, Any]) -> None:
    write_private(layout.state, json.dumps(dict(state, supervisor_start=process_start(os.getpid()))))


def run(layout: Layout) -> int:
    """The supervisor's life: start, serve while there are clients, stop."""
    stopping = {"requested": False}

    def request_stop(signum: int, frame: Any) -> None:
        stopping["requested"] = True

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, request_stop)

    with os.fdopen(open_private(layout.log), "ab") as log:
        try:
            prepare_data_root(layout)
            _kill_stale_postmaster(layout, log)
            fresh = prepare_data(layout)
            port = _free_port()
            launched = time.monotonic()
            process = start_postgres(layout, port, log)
            wait_ready(layout, port, process, timeout=60)
            ready_ms = round((time.monotonic() - launched) * 1000, 1)
        except Exception as error:
            _write_state(layout, {"error": str(error), "supervisor_pid": os.getpid()})
            return 1
        _write_state(layout, {
            "supervisor_pid": os.getpid(), "postgres_pid": process.pid, "port": port,
            "socket_dir": str(layout.socket_dir), "version": list(layout.binaries.version),
            "bindir": str(layout.binaries.bindir), "started_at": time.time(), "ready_ms": ready_ms,
        })
        if fresh is not None:  # clients are already running tests; cache the initdb output now
            fill_cache(layout, fresh)
        idle_since: Optional[float] = None
        try:
            while True:
                time.sleep(LEASE_POLL)
                if process.poll() is not None:
                    with locks.FileLock(layout.lock):
                        layout.state.unlink(missing_ok=True)
                    return 2
                with locks.FileLock(layout.lock):
                    clients = locks.live_leases(layout.leases)
                    now = time.monotonic()
                    if clients or layout.keep.exists():
                        idle_since = None
                        if not stopping["requested"]:
                            continue
                    idle_since = idle_since or now
                    if stopping["requested"] or now - idle_since >= IDLE_GRACE:
                        layout.state.unlink(missing_ok=True)
                        stop_postgres(process)
                        return 0
        finally:
            if process.poll() is None:
                stop_postgres(process)


def main(argv: List[str]) -> int:
    """Entry point: ``python -m elefast.provision.supervisor RUN_DIR``."""
    run_dir = check_private_dir(Path(argv[0]), "the local server's run directory")
    config = json.loads(read_private(run_dir / "config.json", "the local server's configuration") or "{}")
    binaries = Binaries(Path(config["bindir"]), tuple(config["version"]), config["source"])
    data_root = config.get("data_root")
    layout = Layout(binaries, server_user(), run_dir, cache_dir(), Path(data_root) if data_root else None)
    return run(layout)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
