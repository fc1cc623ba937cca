"""The transaction-mode sandbox: an app's engine shares the test's one connection.

While a test runs, :class:`SandboxPool` stands in for the app engine's pool. Every
connection the engine gives out is a :class:`SharedConnection` over the test's own DBAPI
connection, which sits inside the test's transaction:

- the app's work runs in a savepoint of its own, begun at its first statement;
- the app's ``commit()`` releases that savepoint (its rows stay in the test's
  transaction, visible to the test), its ``rollback()`` rolls back to it;
- closing (returning to the pool) rolls back whatever it left open, unless the test
  opened a savepoint of its own after the app's began (:class:`Savepoints`): then the
  app's savepoint stays open until the test's transaction is rolled back;
- isolation-level and autocommit changes are ignored: the test's transaction decides.

One connection serves every thread, so a checkout holds a lock until it is returned:
threads take turns (a thread may nest checkouts). A checkout that cannot get its turn
within :data:`TURN_TIMEOUT` seconds fails, naming the likely cause, instead of hanging.
With an async engine, turns are per task, on the test's event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from typing import Any, List, Optional

from sqlalchemy.pool import NullPool

from elefast.errors import SandboxBusyError

__all__ = ["TURN_TIMEOUT", "SandboxPool", "SharedConnection", "TaskTurns", "ThreadTurns"]

#: Seconds a checkout waits for its turn on the test's connection before failing.
TURN_TIMEOUT = 30.0

_IGNORED = frozenset({"autocommit", "isolation_level", "read_only", "readonly", "deferrable"})
_names = itertools.count(1)


class ThreadTurns:
    """Turns on the shared connection between threads (re-entrant per thread)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()

    def take(self) -> None:
        """Wait for this thread's turn; fail after :data:`TURN_TIMEOUT` seconds."""
        if not self._lock.acquire(timeout=TURN_TIMEOUT):
            raise SandboxBusyError(_busy_message("thread"))

    def give_back(self) -> None:
        """End this thread's turn (one level of nesting)."""
        self._lock.release()


class TaskTurns:
    """Turns on the shared connection between asyncio tasks (re-entrant per task).

    Taken from inside SQLAlchemy's greenlet bridge, so it may wait on the event loop.
    """

    def __init__(self) -> None:
        self._owner: Optional[Any] = None
        self._depth = 0
        self._free = asyncio.Event()
        self._free.set()

    def take(self) -> None:
        """Wait for this task's turn; fail after :data:`TURN_TIMEOUT` seconds."""
        from sqlalchemy.util import await_only

        task = asyncio.current_task()
        while self._owner is not None and self._owner is not task:
            try:
                await_only(asyncio.wait_for(self._free.wait(), TURN_TIMEOUT))
            except asyncio.TimeoutError:
                raise SandboxBusyError(_busy_message("task")) from None
        self._owner, self._depth = task, self._depth + 1
        self._free.clear()

    def give_back(self) -> None:
        """End this task's turn (one level of nesting)."""
        self._depth -= 1
        if self._depth <= 0:
            self._owner, self._depth = None, 0
            self._free.set()


def _busy_message(who: str) -> str:
    return (f"An app engine waited {TURN_TIMEOUT:g} s for its turn on the test's connection (transaction "
            f"mode shares one connection, one {who} at a time). Another {who} holds a connection it has not "
            "returned: close sessions and connections when done, or use isolation = 'database', where "
            "each connection is its own.")


class Savepoints:
    """The savepoints open on the shared connection, oldest first: the app's and the test's own.

    Releasing or rolling back to a savepoint also ends every later one, so the app's
    savepoint is only ended while it is the newest: one the test opened a savepoint above
    (its session began meanwhile) is left open for the test's rollback to end.
    """

    def __init__(self) -> None:
        self.open: List[str] = []

    def opened(self, name: str) -> None:
        """Note a new savepoint."""
        self.open.append(name)

    def ended(self, name: str) -> None:
        """Note that ``name`` and every later savepoint are gone."""
        if name in self.open:
            del self.open[self.open.index(name):]

    def newest(self, name: str) -> bool:
        """Whether ``name`` is the newest open savepoint."""
        return bool(self.open) and self.open[-1] == name

    def follow(self, connection: Any) -> None:
        """Track the savepoints ``connection`` (the test's sync ``Connection``, or an ``Engine``: all its
        connections) opens and ends."""
        from sqlalchemy import event

        event.listen(connection, "savepoint", lambda conn, name: self.opened(name))
        event.listen(connection, "release_savepoint", lambda conn, name, context: self.ended(name))
        event.listen(connection, "rollback_savepoint", lambda conn, name, context: self.ended(name))


class SharedConnection:
    """A DBAPI connection for the app that is really the test's, inside a savepoint of its own."""

    def __init__(self, real: Any, turns: Any, savepoints: Savepoints) -> None:
        turns.take()
        object.__setattr__(self, "_savepoints", savepoints)
        object.__setattr__(self, "_real", real)
        object.__setattr__(self, "_turns", turns)
        object.__setattr__(self, "_savepoint", None)
        object.__setattr__(self, "_closed", False)
        object.__setattr__(self, "_one_trip", type(real).__module__.split(".")[0] == "psycopg")

    def _run(self, statement: str) -> None:
        cursor = self._real.cursor()
        try:
            cursor.execute(statement)
        finally:
            cursor.close()

    def _begin(self) -> None:
        if self._savepoint is None:
            name = f"elefast_app_{next(_names)}"
            self._run(f"SAVEPOINT {name}")
            self._savepoints.opened(name)
            object.__setattr__(self, "_savepoint", name)

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        """A cursor of the test's connection; the app's savepoint begins first."""
        self._begin()
        return self._real.cursor(*args, **kwargs)

    def commit(self) -> None:
        """The app's commit: release its savepoint (the rows stay in the test's transaction)."""
        name = self._savepoint
        object.__setattr__(self, "_savepoint", None)
        if name is not None and self._savepoints.newest(name):
            self._savepoints.ended(name)
            self._run(f"RELEASE SAVEPOINT {name}")

    def rollback(self) -> None:
        """The app's rollback: back to its savepoint."""
        name = self._savepoint
        object.__setattr__(self, "_savepoint", None)
        if name is not None and self._savepoints.newest(name):
            self._savepoints.ended(name)
            if self._one_trip:  # psycopg sends both in one round trip (no parameters: simple protocol)
                self._run(f"ROLLBACK TO SAVEPOINT {name}; RELEASE SAVEPOINT {name}")
            else:  # asyncpg's adapter prepares each statement: one at a time
                self._run(f"ROLLBACK TO SAVEPOINT {name}")
                self._run(f"RELEASE SAVEPOINT {name}")

    def close(self) -> None:
        """Back to the pool: undo what was left open and end this turn; the test's connection stays."""
        if self._closed:
            return
        object.__setattr__(self, "_closed", True)
        try:
            self.rollback()
        finally:
            self._turns.give_back()

    def set_isolation_level(self, level: Any) -> None:
        """Ignored: the test's transaction sets the isolation level."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _IGNORED:
            return  # the test's transaction decides
        setattr(self._real, name, value)


class SandboxPool(NullPool):
    """A pool whose every connection is a :class:`SharedConnection` over ``real``."""

    def __init__(self, real: Any, turns: Any, savepoints: Savepoints, like: Any) -> None:
        def creator() -> SharedConnection:
            return SharedConnection(self.real, turns, savepoints)

        super().__init__(creator, reset_on_return="rollback", echo=like.echo, logging_name=like._orig_logging_name,
                         _dispatch=like.dispatch, dialect=like._dialect, pre_ping=False)
        #: The test's DBAPI connection its connections share (set for each test).
        self.real: Any = real
        #: The app engine's own pool this one stands in for.
        self.like: Any = like
