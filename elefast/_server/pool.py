"""The clone pool: databases cloned ahead and dropped behind by background threads.

The pool does no I/O of its own: the admin core hands it ``create``, ``drop`` and
``prepare`` and it decides when to call them, from which thread.
"""

from __future__ import annotations

import asyncio
import collections
import os
import threading
import time
import weakref
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from elefast._base import sql as _sql
from elefast._base.log import logger
from elefast._base.process import background_thread, leave_to_parent, reset_in_forked_child
from elefast._engines.budget import is_lean
from elefast._server.pool_sizes import depth, pool_size, pool_workers

__all__ = ["ClonePool", "pool_size", "pool_workers"]

PoolKey = Tuple[Optional[str], str, str]  # (template, prefix, encoding)
#: Every pool of this process (one per server object: per schema, per extra database).
_POOLS: weakref.WeakSet[ClonePool] = weakref.WeakSet()


def shed_ready(keep: Optional[str]) -> int:
    """Give up the ready clones of every template but ``keep``, in every pool of this process (the
    disk is short: those clones are dropped, and made again on demand); how many were given up."""
    return sum(pool.shed(keep) for pool in list(_POOLS))


#: Used clones waiting to be dropped beyond which drops no longer wait for a lull in creating.
#: What is still waiting when the process ends is dropped then: with 24, a saturated run of
#: 200 tests took 0.31 s to exit after its last test; with 8, 0.22 s at the same rate
#: (benchmarks/throughput.py, "exit s").
MAX_DEFERRED_DROPS = 8


class ClonePool:
    """Clones made ahead and dropped behind by background threads, for one server.

    ``create(name, template, encoding)`` and ``drop(name)`` do the I/O (synchronously, from
    a worker thread or the caller's); ``prepare(name, template, warm)`` may make something ready
    beside a clone (an engine, with a connection open if ``warm``); ``finish()`` runs as each worker stops.
    :meth:`take` returns a ready clone, else waits for one already being made, else makes
    one itself. Workers: :func:`pool_workers` makers and one dropper; drops wait for a lull
    in making. After ``fork()`` a child starts with an empty pool of its own (the parent's
    ready clones stay the parent's). Where clones are slow to make (a template with many rows),
    more are kept ready, up to ``ELEFAST_POOL_MAX_DEPTH``, within the disk's room; those beyond ``size``
    hold no connection, so the connection budget stays as planned.
    """

    def __init__(
        self,
        create: Callable[[str, Optional[str], str], None],
        drop: Callable[[str], None],
        prepare: Optional[Callable[[str, Optional[str], bool], Any]] = None,
        size: Optional[int] = None,
        finish: Optional[Callable[[], None]] = None,
        sweep: Optional[Callable[[], Any]] = None,
        room: Optional[Callable[[Optional[str], int], bool]] = None,
    ) -> None:
        self._create, self._drop, self._prepare, self._finish = create, drop, prepare, finish
        self._sweep = sweep
        self._room = room  # room(template, pending): may one more be made ahead, with `pending` on their way?
        self.size = pool_size() if size is None else size
        self._reset()
        reset_in_forked_child(self)
        _POOLS.add(self)

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._ready: Dict[PoolKey, Deque[Tuple[str, Any]]] = {}
        self._wanted: Dict[PoolKey, int] = {}
        self._drops: Deque[str] = collections.deque()
        self._busy = 0
        self._threads: List[threading.Thread] = []
        self._making: Dict[PoolKey, int] = {}
        self._timing: Dict[PoolKey, Tuple[float, int]] = {}  # ms a clone takes (moving average), of how many
        self._warm_making: Dict[PoolKey, int] = {}  # clones being made that will hold a connection
        self._direct = 0  # clones callers are making themselves: the makers wait, not compete
        self._stopping = False
        self._pid = os.getpid()
        self._swept = False  # the sweep of what killed runs left, done
        self.stats = {"taken_ready": 0, "taken_direct": 0, "created": 0, "dropped": 0, "errors": 0}

    def reset_after_fork(self) -> None:
        """In a forked child: an empty pool of its own (the parent's ready clones stay the parent's)."""
        for queue in self._ready.values():
            for _name, prepared in queue:
                leave_to_parent(prepared)  # its sockets are the parent's
        self._reset()

    def take(self, template: Optional[str], prefix: str, encoding: str, ahead: bool = True) -> Tuple[str, Any]:
        """A fresh clone of ``template`` (name, prepared): a ready one, else one made now.

        ``ahead`` (default) asks the pool to keep clones of this template ready from now on;
        a one-off (a transaction-mode class's database) passes False.
        """
        key: PoolKey = (template, prefix, encoding)
        with self._cond:
            if self.size > 0 and ahead:
                self._wanted.setdefault(key, min(self.size, 1) if is_lean() else self.size)
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
            self._direct += 1  # the first test's clone is made alone, not beside the pool's first two
        try:
            return self._make(template, prefix, encoding)
        finally:
            with self._cond:
                self._direct -= 1
                self._cond.notify_all()

    def _make(self, template: Optional[str], prefix: str, encoding: str, warm: bool = True) -> Tuple[str, Any]:
        name = _sql.database_name(prefix)
        self._create(name, template, encoding)
        try:
            prepared = self._prepare(name, template, warm) if self._prepare else None
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

    def shed(self, keep: Optional[str]) -> int:
        """Stop keeping clones ahead of templates other than ``keep``; drop their ready ones."""
        with self._cond:
            keys = [k for k in set(self._wanted) | set(self._ready) if k[0] != keep]
            shed = 0
            for key in keys:
                self._wanted.pop(key, None)
                for name, prepared in self._ready.pop(key, ()):
                    _dispose(prepared)
                    self._drops.append(name)
                    shed += 1
            if shed:
                self._start()
                self._cond.notify_all()
        return shed

    def let_go_of_idle(self) -> None:
        """Close the connections ready clones keep open (they reconnect when taken): the server is full."""
        with self._cond:
            prepared = [item for queue in self._ready.values() for _name, item in queue]
        for item in prepared:
            dispose = getattr(item, "dispose", None)
            if dispose is not None and not asyncio.iscoroutinefunction(dispose):
                try:
                    dispose()  # an Engine stays usable: its pool starts empty
                except Exception:
                    pass

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

    @property
    def sweep_owed(self) -> bool:
        """Whether this pool started, and with it its sweep of what killed runs left, which has not
        finished (a process ending now leaves that sweep to its detached dropper)."""
        return self._sweep is not None and bool(self._threads) and not self._swept

    def _start(self) -> None:
        """Start the two workers: one makes clones, one drops them, so makes never queue behind drops."""
        if not self._threads and not self._stopping:
            for role in ["create"] * pool_workers() + ["drop"]:
                thread = background_thread(self._run, f"elefast-pool-{role}", (role,))
                self._threads.append(thread)
                thread.start()

    def _next_job(self, role: str) -> Optional[Tuple[str, Any]]:
        """Under the lock: the next job for ``role``, or None when stopping."""
        while not self._stopping:
            if role == "create" and not self._direct:
                def have(key: PoolKey) -> int:
                    return len(self._ready.get(key, ())) + self._making.get(key, 0)

                pending = sum(self._making.values())
                short = [k for k, n in self._wanted.items()
                         if have(k) < self._depth(k, n) and (self._room is None or self._room(k[0], pending))]
                if short:
                    key = min(short, key=have)
                    # As many as the planned size hold a connection; the ones beyond it, none.
                    warm = self._warm_count(key) < self._wanted[key]
                    self._making[key] = self._making.get(key, 0) + 1
                    if warm:
                        self._warm_making[key] = self._warm_making.get(key, 0) + 1
                    return ("create", (key, warm))
            elif self._drops and (len(self._drops) > MAX_DEFERRED_DROPS or not self._creating() or self._tight()):
                return ("drop", self._drops.popleft())
            self._cond.wait(1.0)
        return None

    def _warm_count(self, key: PoolKey) -> int:
        """Under the lock: clones of ``key`` ready or being made that hold a connection."""
        ready = sum(1 for _, prepared in self._ready.get(key, ()) if _holds_connection(prepared))
        return ready + self._warm_making.get(key, 0)

    def _depth(self, key: PoolKey, wanted: int) -> int:
        """How many clones of ``key`` to keep ready (:func:`~elefast._server.pool_sizes.depth`)."""
        average, timed = self._timing.get(key, (None, 0))
        return depth(wanted, average, timed)

    def _tight(self) -> bool:
        """Whether the disk is short of room (used clones then go before new ones are made)."""
        return self._room is not None and not self._room(None, 0)

    def _creating(self) -> bool:
        """Whether clones are being made or wanted: drops (each forces a checkpoint) wait for a lull."""
        if any(self._making.values()):
            return True
        return any(len(self._ready.get(k, ())) < self._depth(k, n) for k, n in self._wanted.items())

    def _run(self, role: str) -> None:
        try:
            if role == "drop" and self._sweep is not None:
                try:
                    self._sweep()  # what killed runs left behind, once, off the tests' path
                    self._swept = True
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
            warm = True
            if kind == "create":
                what, warm = what
            try:
                if kind == "create":
                    template, prefix, encoding = what
                    started = time.monotonic()
                    name, prepared = self._make(template, prefix, encoding, warm)
                    took = (time.monotonic() - started) * 1000
                    with self._cond:
                        average, timed = self._timing.get(what, (took, 0))
                        self._timing[what] = (0.7 * average + 0.3 * took, timed + 1)
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
                # a clone not made is said where a test takes it (take() raises the error), so here
                # it is news only to ELEFAST_LOG=info; a database not dropped is a warning
                say = logger.info if kind == "create" else logger.warning
                say("elefast's clone pool could not %s %s: %s", kind, what, error)
                with self._cond:
                    if kind == "create":  # stop trying for this key; take() will surface the error
                        self._wanted.pop(what, None)
                    self._cond.wait(0.2)
            finally:
                with self._cond:
                    self._busy -= 1
                    if kind == "create":
                        self._making[what] = self._making.get(what, 1) - 1
                        if warm:
                            self._warm_making[what] = self._warm_making.get(what, 1) - 1
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
            if thread is not threading.current_thread() and timeout > 0:  # 0: the process is ending
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
        counts = dict(self.stats, dropped_in_the_background=self.stats["dropped"], dropped_at_close=len(names))
        del counts["dropped"]  # "created 61, dropped 58" read like three clones left behind
        logger.debug("clone pool at exit: %s", ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items()))
        return names


def _holds_connection(prepared: Any) -> bool:
    """Whether what ``prepare`` made keeps a connection open (an engine with one idle in its pool)."""
    checked_in = getattr(getattr(prepared, "pool", None), "checkedin", None)
    return bool(checked_in()) if callable(checked_in) else False


def _dispose(prepared: Any) -> None:
    dispose = getattr(prepared, "dispose", None)
    if dispose is not None:
        try:
            result = dispose()
            if asyncio.iscoroutine(result):
                result.close()
        except Exception:
            pass
