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
import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional, Set, Tuple


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

    def own(self, name: str) -> None:
        """Record that this server created ``name`` and may drop it."""
        with self.owned_lock:
            self.owned.add(name)
            self.created.add(name)

    def disown(self, name: str) -> None:
        """Forget ``name`` after it was dropped."""
        with self.owned_lock:
            self.owned.discard(name)

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
logger = logging.getLogger("elefast")


def pool_size() -> int:
    """The configured pool size (``ELEFAST_POOL_SIZE``, default :data:`DEFAULT_POOL_SIZE`)."""
    try:
        return max(0, int(os.environ.get("ELEFAST_POOL_SIZE", DEFAULT_POOL_SIZE)))
    except ValueError:
        return DEFAULT_POOL_SIZE


PoolKey = Tuple[Optional[str], str, str]  # (template, prefix, encoding)


class ClonePool:
    """Clones made ahead and dropped behind by one background thread, for one server.

    ``create(name, template, encoding)`` and ``drop(name)`` do the I/O (synchronously, from
    the pool's thread or the caller's); ``prepare(name)`` may warm something up for a ready
    clone (an engine with a connection open). :meth:`take` never waits for the thread: when
    no clone is ready it makes one itself. After ``fork()`` a child starts with an empty pool
    of its own (the parent's ready clones stay the parent's).
    """

    def __init__(
        self,
        create: Callable[[str, Optional[str], str], None],
        drop: Callable[[str], None],
        prepare: Optional[Callable[[str], Any]] = None,
        size: Optional[int] = None,
    ) -> None:
        self._create, self._drop, self._prepare = create, drop, prepare
        self.size = pool_size() if size is None else size
        self._reset()
        _POOLS.add(self)

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._ready: Dict[PoolKey, Deque[Tuple[str, Any]]] = {}
        self._wanted: Dict[PoolKey, int] = {}
        self._drops: Deque[str] = collections.deque()
        self._busy = 0
        self._thread: Optional[threading.Thread] = None
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

    def take(self, template: Optional[str], prefix: str, encoding: str) -> Tuple[str, Any]:
        """A fresh clone of ``template`` (name, prepared): a ready one, else one made now."""
        key: PoolKey = (template, prefix, encoding)
        with self._cond:
            if self.size > 0:
                self._wanted.setdefault(key, self.size)
                self._start()
            queue = self._ready.get(key)
            if queue:
                item = queue.popleft()
                self.stats["taken_ready"] += 1
                self._cond.notify_all()
                return item
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
            if self.size > 0 or self._thread is not None:
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
            while (self._drops or self._busy) and time.monotonic() < deadline and self._thread is not None:
                self._cond.wait(0.05)

    def _start(self) -> None:
        if self._thread is None and not self._stopping:
            self._thread = threading.Thread(target=self._run, name="elefast-pool", daemon=True)
            self._thread.start()

    def _next_job(self) -> Optional[Tuple[str, Any]]:
        """Under the lock: the next job, or None when stopping. Creates go before drops."""
        while not self._stopping:
            short = [k for k, n in self._wanted.items() if len(self._ready.get(k, ())) < n]
            if short:
                key = min(short, key=lambda k: len(self._ready.get(k, ())))
                return ("create", key)
            if self._drops:
                return ("drop", self._drops.popleft())
            self._cond.wait(1.0)
        return None

    def _run(self) -> None:
        while True:
            with self._cond:
                job = self._next_job()
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
                    self._cond.notify_all()

    def close(self, timeout: float = 30) -> List[str]:
        """Stop the thread; return every name still ready or waiting to be dropped (the caller drops them)."""
        if self._pid != os.getpid():
            return []
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
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


def _after_fork_in_child() -> None:
    for pool in list(_POOLS):
        pool._after_fork_in_child()
    for state in list(_STATES):
        state._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
