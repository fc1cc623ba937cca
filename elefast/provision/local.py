"""The throwaway local server, from the client side: find it, or start it, and lease it.

:func:`ensure_local_server` returns the URL of a PostgreSQL server that runs
for as long as any process that asked for it lives. The first process starts
a supervisor (:mod:`elefast.provision.supervisor`); the others join it. The
URL points at the unix socket in a private directory, so it holds no password.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from sqlalchemy import URL

from elefast._base.process import background_thread
from elefast.errors import LocalServerError
from elefast.provision import locks
from elefast.provision.binaries import Binaries, find_binaries
from elefast.provision.cache import private_cache
from elefast.provision.layout import Layout
from elefast.provision.private import open_private, private_dir, process_start, read_private, write_private

__all__ = ["LocalServerError", "ensure_local_server", "local_layout", "server_status", "stop_local_server", "tcp_url"]


_CACHED: Dict[str, Any] = {}  # the default server's (the binaries found first)
_VERSIONED: Dict[str, Dict[str, Any]] = {}  # servers of binaries asked for by name (a version matrix)


def local_layout(binaries: Optional[Binaries] = None) -> Layout:
    """The layout of the local server for ``binaries`` (default: the ones found first)."""
    return Layout.for_binaries(binaries or find_binaries())


def _url(state: Dict[str, Any], driver: str = "psycopg") -> URL:
    return URL.create(
        f"postgresql+{driver}", username="postgres", database="postgres", port=int(state["port"]),
        query={"host": state["socket_dir"]},
    )


def tcp_url(url: URL) -> Optional[URL]:
    """``url`` (on the local server's socket) as a TCP URL on 127.0.0.1 with the server's password,
    for programs that want a host in the URL (pydantic's ``PostgresDsn`` rejects an empty one);
    None when ``url`` is not on the local server."""
    socket_dir = url.query.get("host")
    if url.host or not isinstance(socket_dir, str):
        return None
    password_file = Path(socket_dir).parent / "password"
    try:
        password = (read_private(password_file, "the local server's password file") or "").strip()
    except OSError:
        return None
    if not password:
        return None
    return url.set(host="127.0.0.1", password=password, query={})


def _alive(state: Optional[Dict[str, Any]]) -> bool:
    if not state or "error" in state:
        return False
    supervisor, postgres = int(state["supervisor_pid"]), int(state["postgres_pid"])
    if not (locks.pid_alive(supervisor) and locks.pid_alive(postgres)):
        return False
    command = locks.cmdline(supervisor)
    return not command or "elefast" in command


def _open_to_everyone(program: Path) -> bool:
    """Whether every directory up to ``program`` is searchable, and it readable and runnable, by all."""
    try:
        if program.stat().st_mode & 0o005 != 0o005:
            return False
        return all(parent.stat().st_mode & 0o001 for parent in program.resolve().parents)
    except OSError:
        return False


def _readable_by(user_uid: int, user_gid: int, program: Path) -> bool:
    if _open_to_everyone(program):
        return True
    try:
        result = subprocess.run([str(program), "--version"], capture_output=True, timeout=20,
                                user=user_uid, group=user_gid, extra_groups=[])
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0


def _usable_binaries(layout: Layout) -> Layout:
    """As root: if the server user cannot run the binaries, copy them into the cache once."""
    user = layout.user
    if user is None or _readable_by(user.uid, user.gid, layout.binaries.postgres):
        return layout
    binaries = layout.binaries
    roots = binaries.install_roots()
    base = roots[0].parent.parent
    target = layout.cache / f"bin-{binaries.fingerprint()}"
    if not (target / binaries.bindir.relative_to(base) / "postgres").is_file():
        private_cache()  # ours, 0711: the server user enters it; an existing one is checked, never chmod-ed
        tmp = layout.cache / f"bin-{binaries.fingerprint()}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        for root in roots:
            shutil.copytree(root, tmp / root.relative_to(base), symlinks=True)
        for dirpath, _dirnames, filenames in os.walk(tmp):
            os.chmod(dirpath, 0o755)
            for name in filenames:
                path = os.path.join(dirpath, name)
                if not os.path.islink(path):
                    os.chmod(path, os.stat(path).st_mode | 0o444)
        os.replace(tmp, target)
    copied = Binaries(target / binaries.bindir.relative_to(base), binaries.version,
                      f"{binaries.source}, copied to {target}")
    return Layout(copied, user, layout.run_dir, layout.cache, layout.data_root)


def _prepare_run_dir(layout: Layout) -> None:
    private_dir(layout.run_dir, "the local server's run directory", 0o711 if layout.user else 0o700)


def _spawn_supervisor(layout: Layout) -> None:
    write_private(layout.run_dir / "config.json", json.dumps({
        "bindir": str(layout.binaries.bindir), "version": list(layout.binaries.version),
        "source": layout.binaries.source,
        "data_root": str(layout.data_root) if layout.data_root else None,
    }))
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = package_root + os.pathsep + env.get("PYTHONPATH", "")
    # -S: no site-packages to scan; the supervisor needs only the stdlib and elefast.
    command = [sys.executable, "-S", "-m", "elefast.provision.supervisor", str(layout.run_dir)]
    with os.fdopen(open_private(layout.run_dir / "supervisor.log"), "ab") as log:
        # Started through a shell that backgrounds it and exits at once, so the supervisor is
        # not our child: no zombie if it stops before we do, nothing for us to wait for.
        subprocess.run(
            ["/bin/sh", "-c", '"$@" &', "elefast-launch", *command],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True, env=env, cwd=str(layout.run_dir), check=True,
        )


def _log_tail(layout: Layout, lines: int = 15) -> str:
    try:
        text = layout.log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text[-lines:])


#: One caller at a time in this process (the prestart thread and a class's set-up).
_ENSURING = threading.Lock()
_PRESTART: Dict[str, Any] = {}


def _after_fork_in_child() -> None:
    global _ENSURING
    _ENSURING = threading.Lock()  # a lock the parent's prestart thread held is not ours


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def prestart() -> None:
    """Start (or join) the local server in a background thread, once per process.

    Called when a test class that will use the local server is created, while Python is
    still importing the rest of the suite: the server's start (tens of ms) overlaps that
    work instead of following it. What goes wrong here is raised again, with its message,
    by the class's own :func:`ensure_local_server` call.
    """
    if _PRESTART.get("pid") == os.getpid():
        return
    _PRESTART["pid"] = os.getpid()

    def run() -> None:
        try:
            ensure_local_server()
        except Exception:
            pass  # the class's set-up asks again and says what is wrong

    background_thread(run, "elefast-prestart").start()


def ensure_local_server(timeout: float = 60, driver: str = "psycopg",
                        binaries: Optional[Binaries] = None) -> URL:
    """Start or join the local server and lease it for this process; return its URL.

    Raises :class:`~elefast.provision.binaries.BinariesNotFoundError` when no
    PostgreSQL binaries exist, and :class:`LocalServerError` (quoting the
    server's log) when the server does not start within ``timeout``.
    """
    if not _ENSURING.acquire(timeout=max(timeout, 0.001)):  # a prestart thread may be starting it: wait
        layout = local_layout(binaries)  # for it no longer than this caller's own timeout
        raise LocalServerError(
            f"The local PostgreSQL ({layout.binaries.bindir}) was not ready within {timeout:g} s "
            f"(it was being started in the background).\nIts log ({layout.log}) ends with:\n{_log_tail(layout)}")
    try:
        return _ensure_local_server(timeout, driver, binaries)
    finally:
        _ENSURING.release()


def _ensure_local_server(timeout: float, driver: str, binaries: Optional[Binaries]) -> URL:
    cache = _CACHED if binaries is None else _VERSIONED.setdefault(str(binaries.bindir), {})
    cached = cache.get("state")
    if cached is not None and cache.get("pid") == os.getpid() and _alive(cached):
        return _url(cached, driver)
    layout = local_layout(binaries)
    _prepare_run_dir(layout)
    with locks.FileLock(layout.lock, timeout=timeout):
        locks.Lease.hold(layout.leases)
        state = layout.read_state()
        if not _alive(state):
            layout.state.unlink(missing_ok=True)
            layout = _usable_binaries(layout)
            _spawn_supervisor(layout)
            state = _wait_for_state(layout, timeout)
    assert state is not None
    cache.update(state=state, pid=os.getpid(), layout=layout)
    return _url(state, driver)


def _wait_for_state(layout: Layout, timeout: float) -> Dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        state = layout.read_state()
        if state is not None:
            if "error" in state:
                layout.state.unlink(missing_ok=True)
                raise LocalServerError(
                    f"The local PostgreSQL ({layout.binaries.bindir}) did not start: {state['error']}.\n"
                    f"Its log ({layout.log}) ends with:\n{_log_tail(layout)}"
                )
            return state
        if time.monotonic() > deadline:
            raise LocalServerError(
                f"The local PostgreSQL ({layout.binaries.bindir}) was not ready within {timeout:g} s.\n"
                f"Its log ({layout.log}) ends with:\n{_log_tail(layout)}"
            )
        time.sleep(0.003)


def server_status(layout: Optional[Layout] = None) -> Optional[Dict[str, Any]]:
    """The running local server's state (with ``url`` and ``run_dir``), or None."""
    layout = layout or local_layout()
    state = layout.read_state()
    if not _alive(state):
        return None
    assert state is not None
    return dict(state, url=_url(state).render_as_string(hide_password=True), run_dir=str(layout.run_dir),
                keep=layout.keep.exists(), clients=locks.live_leases(layout.leases))


def keep_local_server(timeout: float = 60) -> URL:
    """Start the local server and keep it running after this process exits (``server start``)."""
    url = ensure_local_server(timeout)
    layout: Layout = _CACHED["layout"]
    layout.keep.touch(mode=0o600)
    return url


def other_clients(layout: Optional[Layout] = None) -> List[Tuple[int, str]]:
    """(pid, command line) of the other processes using the running local server."""
    layout = layout or local_layout()
    return [(pid, locks.cmdline(pid)) for pid in locks.lease_holders(layout.leases) if pid != os.getpid()]


def stop_when_unused(layout: Optional[Layout] = None) -> None:
    """Let the server stop on its own once its last client ends (undo ``server start``)."""
    (layout or local_layout()).keep.unlink(missing_ok=True)


def stop_local_server(timeout: float = 30, layout: Optional[Layout] = None) -> bool:
    """Stop the local server now (``server stop``); True if one was running."""
    layout = layout or local_layout()
    layout.keep.unlink(missing_ok=True)
    state = layout.read_state()
    if not _alive(state):
        return False
    assert state is not None
    supervisor = int(state["supervisor_pid"])
    started, now = state.get("supervisor_start"), process_start(supervisor)
    if started is None or now is None:
        raise LocalServerError(
            f"Not stopping pid {supervisor}: {layout.state} names it as the local server's supervisor, but its "
            f"start time cannot be matched ({'the state file has none' if started is None else 'no /proc here'}), "
            f"and a pid alone may name another process. Nothing was signalled; the server stops on its own when "
            f"its last client ends, or check `ps -p {supervisor} -o pid,user,lstart,args` and stop it by hand."
        )
    if now != str(started):
        raise LocalServerError(
            f"Not stopping pid {supervisor}: {layout.state} names it as the local server's supervisor, but that "
            f"process started at another time (the supervisor is gone and its number was reused). Nothing was "
            f"signalled; the server stops on its own when its last client ends."
        )
    lease = locks.Lease._held.get(str(layout.leases))
    if lease is not None:
        lease.release()
    os.kill(supervisor, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while locks.pid_alive(int(state["postgres_pid"])) and time.monotonic() < deadline:
        time.sleep(0.01)
    _CACHED.clear()
    return True
