"""Dropping behind a process that ends: what is left at exit goes to a detached dropper.

On a server with ``fsync = on`` every ``DROP DATABASE`` waits for a checkpoint (a few hundred
ms on a disk), so a process that dropped its last clones itself kept the developer waiting
seconds after the last test. At exit (not at an explicit ``close()``, which still drops before
it returns) a process hands the names it still owns to a dropper that outlives it and ends at
once. The dropper (``python -m elefast._server.dropper``, in a session of its own, its output
going nowhere) gets the server's URL and the names through its environment (never its command
line, which other users see), and for each name, within :data:`DROPPER_SECONDS`:

- waits until no living process owns it (the ownership lock is free: its process has ended),
  and for a clone whose ``CREATE DATABASE`` was still running to appear (briefly);
- drops it only if it is marked as elefast's (a template is unmarked first); a name not marked
  within :data:`APPEAR_SECONDS` is left alone.

If the dropper is killed, or cannot connect, the databases are orphans like any other: the
next sweep drops them. ``ELEFAST_DROP_AT_EXIT=here`` makes a process drop them itself before it
ends; the default (``behind``) hands them over. On elefast's throwaway local server the dropper
holds a lease of its own, so the server's supervisor stops the server only once the dropper is
done. A process short of connections (a small server: lean mode) drops them itself over the
connection it holds, rather than have the dropper need another. A server object collected
without ``close()`` while its process goes on hands its databases over the same way: nobody
waits for those drops. The dropper drops over :data:`DROP_LANES` connections at once.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, List, NamedTuple, Optional, Sequence, Tuple

from elefast._base.process import background_thread, exiting

if TYPE_CHECKING:
    from elefast._server.ownership import Ledger

__all__ = ["DROPPER_SECONDS", "ENV_DROP_AT_EXIT", "behind_wanted", "final_cleanup", "hand_over", "main"]

#: The environment variable choosing who drops what is left at exit: ``here``, ``behind``, or unset.
ENV_DROP_AT_EXIT = "ELEFAST_DROP_AT_EXIT"
#: Variables the dropper reads (set only in its own environment).
URL_VARIABLE = "ELEFAST_DROP_URL"
NAMES_VARIABLE = "ELEFAST_DROP_NAMES"
SWEEP_VARIABLE = "ELEFAST_DROP_SWEEP_BEFORE"
#: How long the dropper works at most before it leaves the rest to the next sweep.
DROPPER_SECONDS = 30.0
#: How long a name the dropper cannot see yet, or not yet marked (a clone still being created:
#: its mark follows its ``CREATE DATABASE``), is waited for.
APPEAR_SECONDS = 10.0


def behind_wanted() -> bool:
    """Whether a process ending now (or a server collected unclosed) should hand what it owns to a
    dropper (see the module docstring): yes, unless ``ELEFAST_DROP_AT_EXIT=here``."""
    return os.environ.get(ENV_DROP_AT_EXIT, "").strip().lower() != "here"


def hand_over(url: str, names: Sequence[str], leases: Optional[Path] = None,
              sweep_before: Optional[str] = None) -> bool:
    """Start a detached dropper for ``names`` on the server at ``url`` (password included); False if
    it could not start (the caller then drops them itself). ``sweep_before``: also drop the
    orphans marked before that time (a sweep the ending process owed and did not finish).

    ``leases``: the local server's lease directory. The dropper then holds a lease of its own
    (taken here, before it starts, and handed to it as an open descriptor), so the server's
    supervisor keeps the server up until the dropper is done.
    """
    if not names and not sweep_before:
        return True
    env = dict(os.environ, **{URL_VARIABLE: url, NAMES_VARIABLE: ",".join(names)})
    if sweep_before:
        env[SWEEP_VARIABLE] = sweep_before
    home = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # where elefast is
    env["PYTHONPATH"] = os.pathsep.join(part for part in (home, env.get("PYTHONPATH", "")) if part)
    lease = _lease_for_dropper(leases) if leases is not None else None
    if leases is not None and lease is None:
        return False  # no lease: the server could stop under the dropper, so drop here
    child = None
    try:
        child = subprocess.Popen([sys.executable, "-m", "elefast._server.dropper"], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                                 start_new_session=True, close_fds=True,
                                 pass_fds=() if lease is None else (lease[0],))
    except (OSError, RuntimeError, ValueError, subprocess.SubprocessError):
        return False
    finally:
        if lease is not None:
            fd, path = lease
            if child is None:
                _give_up(fd, path)
            else:
                try:  # named after its holder, as every lease is (``server status`` lists them by pid)
                    os.rename(path, path.with_name(f"{child.pid}-{path.name.split('-')[1]}"))
                except OSError:
                    pass
                os.close(fd)  # the dropper's copy of the descriptor holds the lock now
    _reap(child)
    return True


#: Droppers started while the process cannot start a thread (its end): kept, never collected running.
_STARTED: List[subprocess.Popen[bytes]] = []


def _reap(child: subprocess.Popen[bytes]) -> None:
    """Wait for the dropper in a daemon thread, so a process that goes on leaves no zombie (nor a
    ResourceWarning for a child collected while it runs)."""
    try:
        background_thread(child.wait, "elefast-dropper-reaper").start()  # SIGTERM and SIGINT blocked
    except RuntimeError:  # the interpreter is shutting down: the dropper outlives us anyway
        _STARTED.append(child)


def _lease_for_dropper(leases: Path) -> Optional[Tuple[int, Path]]:
    """A new lease file in ``leases``, locked, its descriptor inheritable; None if it cannot be made."""
    import fcntl

    stamp = f"{os.getpid()}-{time.monotonic_ns()}"
    making = leases.parent / f".dropper-lease-{stamp}"  # locked before the supervisor can see it:
    path = leases / f"{stamp}-dropper"  # an unlocked file in leases/ is a dead client's, removed
    try:
        fd = os.open(making, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(making, path)
    except OSError:
        _give_up(fd, making)
        return None
    return fd, path


def _give_up(fd: int, path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
    os.close(fd)


class Behind(NamedTuple):
    """What a detached dropper is handed: the admin ``url`` (password included), the local
    server's ``leases`` directory (None elsewhere), and, when the ending process's sweep of what
    killed runs left had not finished, the time it started: the dropper then drops the orphans
    marked before it (see :func:`~elefast._server.ownership.orphans_created_before`)."""

    url: str
    leases: Optional[Path] = None
    sweep_before: Optional[str] = None


def final_cleanup(ledger: Ledger, stop_pool: Callable[[bool], List[str]], close_connections: Callable[[], None],
                  drop_names: Callable[[List[str]], None], drop_behind: Callable[[], Optional[Behind]]) -> None:
    """A server's final cleanup (its core's finalizer): ``close()`` drops here; the server
    collected, or the process exiting, hands what is left to a detached dropper (the process goes
    on, or ends, without waiting)."""
    behind = drop_behind()
    ending = exiting()
    stop_pool(behind is not None and ending)  # at exit the pool's threads are not waited for
    names = ledger.take_owned(close=behind is not None)  # the pool's threads may still be running
    if behind is None or not hand_over(behind.url, names, behind.leases, behind.sweep_before):
        close_connections()
        drop_names(names)
    elif not ending:
        close_connections()  # the pool's threads have stopped: nothing runs on them any more
    # else: the admin connections are left to the process's end, which closes their sockets; closing
    # them here would wait for the statements the pool's threads still run on them
    ledger.owner.close()  # its ownership locks go with it: the dropper may drop now


def _state(connection: object, names: Sequence[str]) -> Dict[str, Optional[bool]]:
    """For each name on the server: whether it is a template, if it is still marked as elefast's."""
    from sqlalchemy import text

    from elefast._base import sql as _sql

    rows = connection.execute(text(_sql.MARKS_OF), {"names": list(names)}).all()  # type: ignore[attr-defined]
    marks = (_sql.OWNED_MARK, _sql.TEMPLATE_MARK)
    return {str(name): bool(template) if str(note or "").startswith(marks) else None
            for name, note, template in rows}


def _connect(engine: Any, until: float) -> Any:
    """A connection, tried again while the server is full (its last clients are still ending)."""
    from elefast._base import sql as _sql

    while True:
        try:
            return engine.connect()
        except Exception as error:
            if not _sql.is_server_full(error) or time.monotonic() > until:
                raise
            time.sleep(0.2)


class _Names:
    """The names still to drop, shared by the lanes: each name is with one lane at a time."""

    def __init__(self, names: Sequence[str], started: float, seconds: float) -> None:
        self._lock = threading.Lock()
        self._waiting: Deque[str] = collections.deque(dict.fromkeys(names))
        self.started, self.until = started, started + seconds
        self.dropped: List[str] = []

    def next(self) -> Optional[str]:
        """A name for this lane, or None when none is left or the time is up."""
        with self._lock:
            if not self._waiting or time.monotonic() > self.until:
                return None
            return self._waiting.popleft()

    def later(self, name: str) -> None:
        """``name`` is not ready yet (its owner lives, its create has not committed): try it again."""
        with self._lock:
            self._waiting.append(name)

    def count(self) -> int:
        """How many names wait."""
        with self._lock:
            return len(self._waiting)

    def done(self, name: str) -> None:
        with self._lock:
            self.dropped.append(name)


def _lane(engine: Any, names: _Names) -> None:
    """Drop names one at a time over one connection, until none is left (see the module docstring)."""
    from sqlalchemy import text

    from elefast._base import sql as _sql
    from elefast._server import ownership

    try:
        connection = _connect(engine, names.started + DROPPER_SECONDS / 3)
    except Exception:
        return  # another lane may have one; else the next sweep gets them
    with connection:
        misses = 0  # names put back in a row: a whole round of them, and the lane rests a moment
        while True:
            name = names.next()
            if name is None:
                return
            if misses > names.count():
                time.sleep(0.05)
                misses = 0
            # Locks first, the mark read under them: its owner's (free once its process ended) and
            # the template's (a living process building or using a template of that name holds it)
            held: List[int] = []
            try:
                for key in (ownership.owner_key(name), _sql.advisory_key(name)):
                    if not connection.execute(text(_sql.ADVISORY_TRY_LOCK), {"key": key}).scalar():
                        break
                    held.append(key)
                state = _state(connection, [name]) if len(held) == 2 else {}
                if len(held) < 2 or state.get(name) is None:  # owned by the living, or not there (yet) or unmarked
                    if len(held) < 2 or time.monotonic() - names.started <= APPEAR_SECONDS:
                        names.later(name)  # a create or a mark not committed yet, or a process not ended yet
                        misses += 1
                    continue  # else: never dropped unmarked, nor waited for any longer
                misses = 0
                try:
                    if state[name]:
                        connection.execute(text(_sql.unmark_template(name)))
                    ownership.drop(connection, name)
                    names.done(name)
                except Exception:
                    pass  # the next sweep gets it
            finally:
                for key in held:
                    connection.execute(text(_sql.ADVISORY_UNLOCK), {"key": key})


def _orphans(engine: Any, cutoff: str, until: float) -> List[str]:
    """The orphans marked before ``cutoff``; [] if the server cannot say (the next sweep gets them)."""
    from elefast._server import ownership

    try:
        with _connect(engine, until) as connection:
            return ownership.orphans_created_before(connection, cutoff)
    except Exception:
        return []


#: Connections the dropper drops over at once: on a server with ``fsync = on`` each ``DROP
#: DATABASE`` waits for a checkpoint, and drops waiting at the same time share one.
DROP_LANES = 4


def drop_behind(url: str, names: Sequence[str], seconds: float = DROPPER_SECONDS,
                lanes: int = DROP_LANES, sweep_before: Optional[str] = None) -> List[str]:
    """Drop ``names`` once nobody owns them (see the module docstring), and with ``sweep_before``
    the orphans marked before that time, over up to ``lanes`` connections at once; return those
    dropped."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT",
                           connect_args={"connect_timeout": CONNECT_SECONDS})
    started = time.monotonic()
    if sweep_before:
        names = [*names, *_orphans(engine, sweep_before, started + seconds / 3)]
    work = _Names(names, started, seconds)
    helpers = [threading.Thread(target=_lane, args=(engine, work), daemon=True)
               for _ in range(min(lanes, len(set(names))) - 1)]
    try:
        for helper in helpers:
            helper.start()
        _lane(engine, work)
        for helper in helpers:
            helper.join()
    finally:
        engine.dispose()
    return work.dropped


#: Seconds a connection of the dropper may take to open.
CONNECT_SECONDS = 10
#: Seconds after which the dropper ends whatever it is waiting for (a drop that hangs on a lock):
#: it must never hold the local server's lease, nor run, for ever.
DEADLINE_SECONDS = DROPPER_SECONDS + 15


def main() -> int:
    """The detached dropper's entry point: its URL and names come from its environment."""
    watchdog = threading.Timer(DEADLINE_SECONDS, os._exit, (3,))
    watchdog.daemon = True
    watchdog.start()
    url = os.environ.pop(URL_VARIABLE, "")
    names = [name for name in os.environ.pop(NAMES_VARIABLE, "").split(",") if name]
    sweep_before = os.environ.pop(SWEEP_VARIABLE, "") or None
    if not url or not (names or sweep_before):
        return 2
    try:
        drop_behind(url, names, sweep_before=sweep_before)
    except Exception:
        return 1  # unreachable server and the like: the next sweep drops them
    return 0


if __name__ == "__main__":
    sys.exit(main())
