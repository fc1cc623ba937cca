"""A server's long-lived admin connections: the server's, not the calling thread's.

The pool's workers and the public ``drop()`` send one statement at a time; a new connection
each time would cost more than the statement, so they run on a long-lived one. Any thread (an
event loop's executor thread, say, new for every loop) takes an idle one and gives it back:
they number at most the admin work running at once, whatever the threads and event loops, and
more than :func:`idle_limit` idle ones are closed. All of them close at the end, and the idle
ones as soon as the process goes lean (a full server).
"""

from __future__ import annotations

import threading
from typing import Any, Callable, List

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from elefast._base.process import leave_to_parent
from elefast._engines import budget as _budget
from elefast._server.pool_sizes import pool_workers

__all__ = ["AdminConnections", "idle_limit"]


def idle_limit() -> int:
    """Idle long-lived admin connections kept: one per pool worker, and one for ``drop()``."""
    return pool_workers() + 1


class AdminConnections:
    """Long-lived admin connections made by ``connect()``, shared by every thread of the process."""

    def __init__(self, connect: Callable[[], Connection]) -> None:
        self._connect = connect
        self._lock = threading.Lock()
        self._idle: List[Connection] = []  # not in use: taken by any thread
        self._all: List[Connection] = []  # every open one, closed at the end

    def run(self, work: Callable[[Connection], Any]) -> None:
        """``work(connection)`` on an idle connection (a new one if none is idle), then give it back."""
        connection = self._take()
        try:
            work(connection)
        except DBAPIError as error:
            if error.connection_invalidated or connection.invalidated:
                self._discard(connection)
            else:
                self._give_back(connection)
            raise
        except BaseException:
            self._discard(connection)  # interrupted mid-statement: its state is unknown
            raise
        self._give_back(connection)

    def close_idle(self) -> None:
        """Close the idle ones (those in use close when given back, if the process went lean)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            self._discard(connection)

    def close_all(self) -> None:
        """Close every one (the server's end)."""
        with self._lock:
            connections, self._all, self._idle = self._all, [], []
        for connection in connections:
            try:
                connection.close()
            except Exception:
                pass

    def reset_after_fork(self) -> None:
        """A forked child's: none of its parent's (their sockets are the parent's to close)."""
        self._lock = threading.Lock()
        leave_to_parent(self._all)
        self._all, self._idle = [], []

    def _take(self) -> Connection:
        with self._lock:
            while self._idle:
                connection = self._idle.pop()
                if not connection.closed and not connection.invalidated:
                    return connection
        connection = self._connect()
        with self._lock:
            self._all.append(connection)
        return connection

    def _give_back(self, connection: Connection) -> None:
        with self._lock:
            if len(self._idle) < idle_limit() and not _budget.is_lean():
                self._idle.append(connection)
                return
        self._discard(connection)

    def _discard(self, connection: Connection) -> None:
        with self._lock:
            if connection in self._all:
                self._all.remove(connection)
        try:
            connection.close()
        except Exception:
            pass
