"""Bookkeeping shared by the sync and async servers: templates and owned databases.

A server object owns every database it creates (templates and clones) until
it drops them; it drops only those. Template builds are serialised by one
lock per server, which threads take directly and coroutines poll, so the same
lock works for many event loops (each ``IsolatedAsyncioTestCase`` test has
its own).
"""

from __future__ import annotations

import asyncio
import collections
import os
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional, Set, Tuple

from elefast._logging import logger


@dataclass
class TemplateSlot:
    """The template database built for one encoding, or why building it failed."""

    name: str
    error: Optional[BaseException] = None
    message: str = ""
    reused: bool = False


@dataclass
class ServerState:
    """What one server object knows: its lock, templates and owned database names."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    templates: Dict[str, TemplateSlot] = field(default_factory=dict)
    owned: Set[str] = field(default_factory=set)
    created: Set[str] = field(default_factory=set)
    owned_lock: threading.Lock = field(default_factory=threading.Lock)
    pool: Optional[ClonePool] = None
    strategy: Optional[str] = None  # "" once asked: the server's default
    sync_server: Any = None  # the async server's psycopg twin, for the pool's thread
    local: threading.local = field(default_factory=threading.local)  # the workers' admin connections
    connections: List[Any] = field(default_factory=list)  # every one of those, closed at the end
    owner: Any = None  # elefast.ownership.Owner: the control connection holding ownership locks

    def __post_init__(self) -> None:
        _STATES.add(self)

    def __hash__(self) -> int:
        return id(self)

    def _after_fork_in_child(self) -> None:
        """A forked child owns nothing of its parent's and must not inherit a held lock."""
        self.lock = threading.Lock()
        self.owned_lock = threading.Lock()
        self.owned.clear()
        self.pool = None
        self.sync_server = None
        self.local = threading.local()
        self.connections = []  # the parent's: its sockets are not ours to close

    def close_connections(self) -> None:
        """Close every thread's admin connection (the final cleanup, after the pool stopped)."""
        with self.owned_lock:
            connections, self.connections = self.connections, []
        for connection in connections:
            try:
                connection.close()
            except Exception:
                pass

    def own(self, name: str) -> None:
        """Claim ``name`` (its ownership lock, before it exists) and record it as ours to drop."""
        if self.owner is not None:
            self.owner.claim(name)
        with self.owned_lock:
            self.owned.add(name)
            self.created.add(name)

    def disown(self, name: str) -> None:
        """Forget ``name`` after it was dropped (or kept, or handed over as a shared template)."""
        with self.owned_lock:
            was_ours = name in self.owned
            self.owned.discard(name)
        if was_ours and self.owner is not None:
            self.owner.release(name)

    def remember_template(self, encoding: str, slot: TemplateSlot, schema: Any = None,
                          fingerprint: Optional[str] = None, seconds: float = 0.0) -> None:
        """Record the template for ``encoding`` and log it; a shared one gets this process's in-use lock."""
        log_template(slot, schema, fingerprint, seconds)
        if slot.error is None and self.owner is not None and not self.owns(slot.name):
            try:
                self.owner.use_template(slot.name)
            except Exception as error:  # not fatal: only an old-template sweep could race us
                logger.warning("elefast could not mark the template %s as in use: %s", slot.name, error)
        self.templates[encoding] = slot

    def check_droppable(self, name: str, server: object) -> bool:
        """True if ``name`` should be dropped now, False if it was dropped already.

        Raises ``ValueError`` for a name this server never created: elefast
        never drops what it does not own.
        """
        with self.owned_lock:
            if name not in self.created:
                raise ValueError(
                    f"elefast only drops databases it created; {name!r} was not created by {server!r}."
                )
            return name in self.owned

    def owns(self, name: str) -> bool:
        """Whether this server created ``name`` and has not dropped it yet."""
        with self.owned_lock:
            return name in self.owned

    def snapshot(self) -> Set[str]:
        """A copy of the owned names, for cleanup."""
        with self.owned_lock:
            return set(self.owned)

    def take_owned(self) -> List[str]:
        """Forget and return every owned name, clones before templates (for the final cleanup)."""
        with self.owned_lock:
            names = sorted(self.owned, key=lambda n: "_tpl_" in n or "_cls_" in n)
            self.owned.clear()
        return names

    async def acquire_async(self, poll: float = 0.002) -> None:
        """Take :attr:`lock` from a coroutine without blocking the event loop."""
        while not self.lock.acquire(blocking=False):
            await asyncio.sleep(poll)


#: Clones kept ready per template. Two keeps both cores busy on the machines we measured on
#: (one clone being made while the test runs, one waiting); override with ELEFAST_POOL_SIZE.
DEFAULT_POOL_SIZE = 2

_POOLS: weakref.WeakSet[ClonePool] = weakref.WeakSet()
_STATES: weakref.WeakSet[ServerState] = weakref.WeakSet()


def log_template(slot: TemplateSlot, schema: Any, fingerprint: Optional[str], seconds: float) -> None:
    """Say whether the template was reused or built (with its fingerprint and time), or why it failed."""
    short = fingerprint[:16] if fingerprint else "none: dropped at exit"
    if slot.error is not None:
        logger.info("template %s for %r could not be built: %s", slot.name, schema, slot.message)
    elif slot.reused:
        logger.info("template %s reused for %r (fingerprint %s; found in %.0f ms)",
                    slot.name, schema, short, seconds * 1000)
    else:
        logger.info("template %s built for %r in %.0f ms (fingerprint %s)", slot.name, schema, seconds * 1000, short)


def pool_workers() -> int:
    """Threads making clones (``ELEFAST_POOL_WORKERS``, default 2).

    Measured on 2 cores, 20-table template, tmpfs, FILE_COPY: one thread makes a clone every
    23.5 ms, two every 15 ms, three every 14.4 ms (benchmarks/RESULTS.md).
    """
    try:
        return max(1, int(os.environ.get("ELEFAST_POOL_WORKERS", 2)))
    except ValueError:
        return 2


def pool_size() -> int:
    """The configured pool size (``ELEFAST_POOL_SIZE``, default :data:`DEFAULT_POOL_SIZE`)."""
    try:
        return max(0, int(os.environ.get("ELEFAST_POOL_SIZE", DEFAULT_POOL_SIZE)))
    except ValueError:
        return DEFAULT_POOL_SIZE


PoolKey = Tuple[Optional[str], str, str]  # (template, prefix, encoding)
#: Used clones waiting to be dropped beyond which drops no longer wait for a lull in creating.
MAX_DEFERRED_DROPS = 24


class ClonePool:
    """Clones made ahead and dropped behind by background threads, for one server.

    ``create(name, template, encoding)`` and ``drop(name)`` do the I/O (synchronously, from
    a worker thread or the caller's); ``prepare(name)`` may warm something up for a ready
    clone (an engine with a connection open); ``finish()`` runs as each worker stops.
    :meth:`take` returns a ready clone, else waits for one already being made, else makes
    one itself. Workers: :func:`pool_workers` makers and one dropper; drops wait for a lull
    in making. After ``fork()`` a child starts with an empty pool of its own (the parent's
    ready clones stay the parent's).
    """

    def __init__(
        self,
        create: Callable[[str, Optional[str], str], None],
        drop: Callable[[str], None],
        prepare: Optional[Callable[[str], Any]] = None,
        size: Optional[int] = None,
        finish: Optional[Callable[[], None]] = None,
        sweep: Optional[Callable[[], Any]] = None,
    ) -> None:
        self._create, self._drop, self._prepare, self._finish = create, drop, prepare, finish
        self._sweep = sweep
        self.size = pool_size() if size is None else size
        self._reset()
        _POOLS.add(self)

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._ready: Dict[PoolKey, Deque[Tuple[str, Any]]] = {}
        self._wanted: Dict[PoolKey, int] = {}
        self._drops: Deque[str] = collections.deque()
        self._busy = 0
        self._threads: List[threading.Thread] = []
        self._making: Dict[PoolKey, int] = {}
        self._stopping = False
        self._pid = os.getpid()
        self.stats = {"taken_ready": 0, "taken_direct": 0, "created": 0, "dropped": 0, "errors": 0}

    def _after_fork_in_child(self) -> None:
        for queue in self._ready.values():
            for _name, prepared in queue:
                dispose = getattr(prepared, "dispose", None)
                if dispose is not None:
                    try:
                        dispose(close=False)  # the parent's sockets: leave them to the parent
                    except Exception:
                        pass
        self._reset()

    def take(self, template: Optional[str], prefix: str, encoding: str, ahead: bool = True) -> Tuple[str, Any]:
        """A fresh clone of ``template`` (name, prepared): a ready one, else one made now.

        ``ahead`` (default) asks the pool to keep clones of this template ready from now on;
        a one-off (a transaction-mode class's database) passes False.
        """
        key: PoolKey = (template, prefix, encoding)
        with self._cond:
            if self.size > 0 and ahead:
                self._wanted.setdefault(key, self.size)
                self._start()
            deadline = time.monotonic() + 30
            while True:
                queue = self._ready.get(key)
                if queue:
                    item = queue.popleft()
                    self.stats["taken_ready"] += 1
                    self._cond.notify_all()
                    return item
                # One is on its way: waiting for it beats starting another that competes with it.
                if not self._making.get(key) or self._stopping or time.monotonic() > deadline:
                    break
                self._cond.wait(0.5)
        self.stats["taken_direct"] += 1
        return self._make(template, prefix, encoding)

    def _make(self, template: Optional[str], prefix: str, encoding: str) -> Tuple[str, Any]:
        from elefast import _sql

        name = _sql.database_name(prefix)
        self._create(name, template, encoding)
        try:
            prepared = self._prepare(name) if self._prepare else None
        except BaseException:
            self.release(name)
            raise
        return name, prepared

    def release(self, name: str) -> None:
        """Drop ``name`` in the background (or now, when there is no thread)."""
        with self._cond:
            if self.size > 0 or self._threads:
                self._drops.append(name)
                self._start()
                self._cond.notify_all()
                return
        self._drop(name)

    def retire(self, template: Optional[str], then_drop: Optional[str] = None) -> None:
        """Stop keeping clones of ``template``; drop its ready ones, then ``then_drop``."""
        with self._cond:
            for key in [k for k in self._wanted if k[0] == template]:
                del self._wanted[key]
            for key in [k for k in self._ready if k[0] == template]:
                for name, prepared in self._ready.pop(key):
                    _dispose(prepared)
                    self._drops.append(name)
            if then_drop is not None:
                self._drops.append(then_drop)
            self._start()
            self._cond.notify_all()

    def drain(self, timeout: float = 60) -> None:
        """Stop keeping clones ahead and wait until every pending drop is done (tests, sweeps)."""
        with self._cond:
            for key in list(self._wanted):
                del self._wanted[key]
            for queue in self._ready.values():
                for name, prepared in queue:
                    _dispose(prepared)
                    self._drops.append(name)
            self._ready.clear()
            if self._drops:
                self._start()
            self._cond.notify_all()
            deadline = time.monotonic() + timeout
            while (self._drops or self._busy) and time.monotonic() < deadline and self._threads:
                self._cond.wait(0.05)

    def _start(self) -> None:
        """Start the two workers: one makes clones, one drops them, so makes never queue behind drops."""
        if not self._threads and not self._stopping:
            for role in ["create"] * pool_workers() + ["drop"]:
                thread = threading.Thread(target=self._run, args=(role,), name=f"elefast-pool-{role}", daemon=True)
                self._threads.append(thread)
                thread.start()

    def _next_job(self, role: str) -> Optional[Tuple[str, Any]]:
        """Under the lock: the next job for ``role``, or None when stopping."""
        while not self._stopping:
            if role == "create":
                def have(key: PoolKey) -> int:
                    return len(self._ready.get(key, ())) + self._making.get(key, 0)

                short = [k for k, n in self._wanted.items() if have(k) < n]
                if short:
                    key = min(short, key=have)
                    self._making[key] = self._making.get(key, 0) + 1
                    return ("create", key)
            elif self._drops and (len(self._drops) > MAX_DEFERRED_DROPS or not self._creating()):
                return ("drop", self._drops.popleft())
            self._cond.wait(1.0)
        return None

    def _creating(self) -> bool:
        """Whether clones are being made or wanted: drops (each forces a checkpoint) wait for a lull."""
        if any(self._making.values()):
            return True
        return any(len(self._ready.get(k, ())) < n for k, n in self._wanted.items())

    def _run(self, role: str) -> None:
        try:
            if role == "drop" and self._sweep is not None:
                try:
                    self._sweep()  # what killed runs left behind, once, off the tests' path
                except Exception as error:
                    logger.warning("elefast could not sweep orphaned databases: %s", error)
            self._work(role)
        finally:
            if self._finish is not None:
                try:
                    self._finish()  # e.g. close this thread's own connection
                except Exception:
                    pass

    def _work(self, role: str) -> None:
        while True:
            with self._cond:
                job = self._next_job(role)
                if job is None:
                    return
                self._busy += 1
            kind, what = job
            try:
                if kind == "create":
                    template, prefix, encoding = what
                    name, prepared = self._make(template, prefix, encoding)
                    with self._cond:
                        if what in self._wanted and not self._stopping:
                            self._ready.setdefault(what, collections.deque()).append((name, prepared))
                            self._cond.notify_all()
                        else:
                            _dispose(prepared)
                            self._drops.append(name)
                    self.stats["created"] += 1
                else:
                    self._drop(what)
                    self.stats["dropped"] += 1
            except Exception as error:
                self.stats["errors"] += 1
                logger.warning("elefast's clone pool could not %s %s: %s", kind, what, error)
                with self._cond:
                    if kind == "create":  # stop trying for this key; take() will surface the error
                        self._wanted.pop(what, None)
                    self._cond.wait(0.2)
            finally:
                with self._cond:
                    self._busy -= 1
                    if kind == "create":
                        self._making[what] = self._making.get(what, 1) - 1
                    self._cond.notify_all()

    def close(self, timeout: float = 30) -> List[str]:
        """Stop the thread; return every name still ready or waiting to be dropped (the caller drops them)."""
        if self._pid != os.getpid():
            return []
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            threads = list(self._threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout)
        logger.debug("clone pool at exit: %s", ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in self.stats.items()))
        with self._cond:
            names = list(self._drops)
            self._drops.clear()
            for queue in self._ready.values():
                for name, prepared in queue:
                    _dispose(prepared)
                    names.append(name)
            self._ready.clear()
            self._wanted.clear()
        return names


def _dispose(prepared: Any) -> None:
    dispose = getattr(prepared, "dispose", None)
    if dispose is not None:
        try:
            result = dispose()
            if asyncio.iscoroutine(result):
                result.close()
        except Exception:
            pass


def at_process_exit(finalizer: Callable[[], Any]) -> None:
    """Also run ``finalizer`` when a multiprocessing worker exits (it skips atexit: ``os._exit``).

    unittest-parallel and stestr-like runners run tests in such workers; without this their
    databases would wait for the next run's sweep.
    """
    import sys

    if "multiprocessing" in sys.modules:
        from multiprocessing import util

        def run_at_exit() -> None:
            _CLEANING_UP.set()  # from now on a SIGTERM must not cut the cleanup short
            finalizer()

        util.Finalize(None, run_at_exit, exitpriority=10)
        _exit_cleanly_on_sigterm()


#: Set once a multiprocessing worker runs elefast's exit cleanup (it is leaving anyway).
_CLEANING_UP = threading.Event()


def _exit_cleanly_on_sigterm() -> None:
    """In a multiprocessing worker, let SIGTERM end the process through its exit handlers.

    ``Pool.terminate()`` (how unittest-parallel ends its workers) sends SIGTERM, which by
    default kills the worker before any cleanup: its clones would wait for the next run's
    sweep. Only a worker's default handler is replaced, and only from its main thread; the
    handler raises ``SystemExit``, so the worker's finalizers (ours among them) run. A worker
    already in that cleanup (it got its stop sentinel first) ignores the signal and finishes.
    """
    import multiprocessing
    import signal

    if multiprocessing.parent_process() is None or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def exit_now(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # on the way out already: let the cleanup finish
        if not _CLEANING_UP.is_set():  # a worker that ended on its own is in its cleanup: let it be
            raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, exit_now)


def _after_fork_in_child() -> None:
    for pool in list(_POOLS):
        pool._after_fork_in_child()
    for state in list(_STATES):
        state._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
