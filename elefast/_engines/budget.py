"""Connections on a server with few to spare: wait for a free slot, and hold fewer.

Every engine elefast builds (admin engines, the engines of the databases it clones) goes
through :func:`wait_when_full`: a connection refused with ``too many clients already``
(SQLSTATE 53300) is tried again, with a growing pause, for up to :data:`FULL_WAIT`
seconds (``ELEFAST_FULL_WAIT``), because parallel workers give slots back all the time
(a clone's connection closes before each drop). The first such refusal also puts the process in *lean* mode
(:func:`go_lean`): from then on the pool's threads connect for each statement instead
of keeping a connection each, and ready clones wait without an open connection, so a
process holds about two connections (its ownership connection and the test's) instead
of eight. Only when no slot frees up in time does the caller get
:class:`~elefast.errors.ServerFullError`, with the server's numbers and the fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, TypeVar

from sqlalchemy import event

from elefast._base import sql as _sql
from elefast._base.log import logger

__all__ = ["FULL_WAIT", "NORMAL_NEED", "go_lean", "is_lean", "not_waiting", "on_lean", "plan", "wait_when_full"]

#: Seconds a connection waits for a free slot on a full server before the error
#: (``ELEFAST_FULL_WAIT`` overrides it).
FULL_WAIT = 30.0


def full_wait() -> float:
    """Seconds to wait for a free slot: ``ELEFAST_FULL_WAIT``, else :data:`FULL_WAIT`."""
    import os

    try:
        return max(0.0, float(os.environ.get("ELEFAST_FULL_WAIT", FULL_WAIT)))
    except ValueError:
        return FULL_WAIT

E = TypeVar("E")

_lean = threading.Event()
_here = threading.local()  # .impatient: this thread's connects do not wait (readiness probes)
_listeners: List[Callable[[], None]] = []
_listeners_lock = threading.Lock()


def is_lean() -> bool:
    """Whether this process holds connections only while it uses them (the server was full)."""
    return _lean.is_set()


def on_lean(callback: Callable[[], None]) -> None:
    """Call ``callback`` once when the process goes lean (e.g. a pool closing its idle connections)."""
    with _listeners_lock:
        _listeners.append(callback)


#: Connections one process holds at most in the normal mode: its ownership connection, two pool
#: makers and a dropper, two ready clones, and a test's two connections.
NORMAL_NEED = 8


def plan(max_connections: int, reserved: int, others: int, elefast_processes: int) -> None:
    """Size this process's connections from the server's numbers, before it holds any.

    ``others`` are the client connections that are not elefast's admin connections; the
    processes sharing what is left are the elefast processes connected now, or the worker
    count a runner announces (pytest-xdist's ``PYTEST_XDIST_WORKER_COUNT``), whichever is
    larger. When a share is below :data:`NORMAL_NEED`, the process goes lean at once instead
    of after its first refusal: one pool thread, one clone ahead, connections held only
    while used.
    """
    import os

    try:
        announced = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    except ValueError:
        announced = 0
    processes = max(1, elefast_processes, announced)
    free = max_connections - reserved - others
    if free // processes < NORMAL_NEED:
        go_lean(f"{free} connections of max_connections = {max_connections} are free for {processes} test "
                f"processes, fewer than the {NORMAL_NEED} each would hold")


def go_lean(reason: str = "the server is full") -> None:
    """Hold connections only while they are used, from now on in this process."""
    with _listeners_lock:
        if _lean.is_set():
            return
        _lean.set()
        callbacks = list(_listeners)
    logger.info("elefast: %s; this process now holds connections only while it uses them, "
                "with one pool thread and one clone ahead", reason)
    for callback in callbacks:
        try:
            callback()
        except Exception as error:  # a best effort: the retries still wait for slots
            logger.debug("elefast: could not let go of idle connections: %s", error)


@contextlib.contextmanager
def not_waiting(connect_timeout: Optional[float] = None) -> Iterator[None]:
    """Within this block, this thread's connections fail at once on a full server (readiness has
    its own timeout and its own message); with ``connect_timeout``, psycopg connections that set
    none give up after that many seconds (a readiness attempt's share of its timeout)."""
    before = getattr(_here, "impatient", False), getattr(_here, "connect_timeout", None)
    _here.impatient, _here.connect_timeout = True, connect_timeout
    try:
        yield
    finally:
        _here.impatient, _here.connect_timeout = before


def wait_when_full(engine: E) -> E:
    """Make ``engine`` (an ``Engine``, or an ``AsyncEngine``'s ``sync_engine``) wait for a free slot."""
    target: Any = getattr(engine, "sync_engine", engine)
    is_async = bool(getattr(target.dialect, "is_async", False))

    def connect(dialect: Any, record: Any, cargs: List[Any], cparams: Dict[str, Any]) -> Any:
        hooks = list(dialect.dispatch.do_connect)  # the first hook to return a connection ends the chain:
        for hook in hooks[hooks.index(connect) + 1:] if connect in hooks else ():  # hooks added later
            made = hook(dialect, record, cargs, cparams)  # (a test's, to set a password) run first
            if made is not None:
                return made
        bound = getattr(_here, "connect_timeout", None)
        if bound and not is_async and dialect.driver == "psycopg" and "connect_timeout" not in cparams:
            cparams = dict(cparams, connect_timeout=max(1, math.ceil(bound)))
        began = time.monotonic()
        deadline = began + full_wait()
        pause = 0.02
        while True:
            try:
                return dialect.connect(*cargs, **cparams)
            except Exception as error:
                remaining = deadline - time.monotonic()
                if not _sql.is_server_full(error) or remaining <= 0 or getattr(_here, "impatient", False):
                    raise
                go_lean()
                _say_once_if_long(time.monotonic() - began, remaining, cparams)
                _sleep(min(pause, remaining), is_async)
                pause = min(pause * 2, 0.5)

    event.listen(target, "do_connect", connect)
    return engine


#: Seconds of waiting for a slot after which the process says so (once).
LONG_WAIT = 5.0
_said_long: List[bool] = []


def _say_once_if_long(waited: float, remaining: float, cparams: Dict[str, Any]) -> None:
    if waited < LONG_WAIT or _said_long:
        return
    _said_long.append(True)
    where = f"{cparams.get('host') or 'the socket'}:{cparams.get('port') or 5432}"
    logger.warning("elefast has waited %.0f s for a free connection on the server at %s (max_connections is "
                   "reached by all its clients together); it waits up to %.0f s more (ELEFAST_FULL_WAIT). Fewer "
                   "test workers, or a larger max_connections, end the wait.", waited, where, remaining)


def _sleep(seconds: float, is_async: bool) -> None:
    if is_async:  # inside SQLAlchemy's greenlet bridge: wait on the event loop, do not block it
        from sqlalchemy.util import await_only

        await_only(asyncio.sleep(seconds))
    else:
        time.sleep(seconds)
