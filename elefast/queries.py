"""Query assertions: what SQL a block of code sent, over one or more engines.

The mixins' ``assertNumQueries`` and ``captureQueries`` use this over the test's engine and the
class's ``app_engines``; with the pytest plugin or a server of your own, call
:func:`capture_queries` with the engines yourself::

    with capture_queries(elefast_database.engine) as queries:
        checkout(cart_id=1)
    assert len(queries) == 2, queries.listing()

Every statement sent through the engines' cursors while the block runs is recorded, from any
thread, in order, with its parameters (``executemany`` counts once). The savepoints that
isolate a test in transaction mode (``SAVEPOINT``, ``RELEASE SAVEPOINT``, ``ROLLBACK TO
SAVEPOINT``) are not recorded, so a count is the same in both isolation modes; ``BEGIN`` and
``COMMIT`` are not statements of a cursor and are never counted.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Iterator, List, Optional, Sequence, Type

from sqlalchemy import Engine, event

__all__ = ["CapturedQuery", "QueryCapture", "capture_queries", "engine_made"]

_SAVEPOINT = re.compile(r"^\s*(SAVEPOINT|RELEASE\s+SAVEPOINT|ROLLBACK\s+TO\s+SAVEPOINT)\b", re.IGNORECASE)


@dataclass(frozen=True)
class CapturedQuery:
    """One statement as the driver received it: its SQL text and its parameters."""

    statement: str
    parameters: Any

    def __str__(self) -> str:
        return f"{self.statement}  -- {self.parameters!r}" if self.parameters else self.statement


class QueryCapture(Sequence[CapturedQuery]):
    """The statements sent while the ``with`` block ran (a sequence of :class:`CapturedQuery`)."""

    def __init__(self, engines: Sequence[Any], follow_new: bool = False) -> None:
        self._engines = _sync_engines(engines)
        self._queries: List[CapturedQuery] = []
        self._lock = threading.Lock()
        self._follow_new = follow_new  # the mixins': app engines made inside the block count too

    def __enter__(self) -> QueryCapture:
        for engine in self._engines:
            event.listen(engine, "before_cursor_execute", self._record)
        if self._follow_new:
            _FOLLOWING.append(self)
        return self

    def __exit__(self, kind: Optional[Type[BaseException]], error: Optional[BaseException],
                 traceback: Optional[TracebackType]) -> None:
        if self in _FOLLOWING:
            _FOLLOWING.remove(self)
        for engine in self._engines:
            event.remove(engine, "before_cursor_execute", self._record)

    def _add(self, engine: Engine) -> None:
        if all(engine is not known for known in self._engines):
            self._engines.append(engine)
            event.listen(engine, "before_cursor_execute", self._record)

    def _record(self, connection: Any, cursor: Any, statement: str, parameters: Any, context: Any,
                executemany: bool) -> None:
        if _SAVEPOINT.match(statement):
            return
        with self._lock:
            self._queries.append(CapturedQuery(statement, parameters))

    def __getitem__(self, index: Any) -> Any:
        return self._queries[index]

    def __len__(self) -> int:
        return len(self._queries)

    def __iter__(self) -> Iterator[CapturedQuery]:
        return iter(list(self._queries))

    @property
    def statements(self) -> List[str]:
        """The SQL text of each statement, in order."""
        return [query.statement for query in self._queries]

    def listing(self) -> str:
        """The statements numbered one per line (what a failed assertion shows)."""
        return "\n".join(f"{number}. {query}" for number, query in enumerate(self._queries, 1)) or "(none)"


#: Captures (the mixins') that also follow the app engines made while they run.
_FOLLOWING: List[QueryCapture] = []


def engine_made(engine: Engine) -> None:
    """An app engine was made during a test (a Flask app created in the block): captures count it."""
    for capture in list(_FOLLOWING):
        capture._add(engine)


def capture_queries(*engines: Any) -> QueryCapture:
    """A context manager recording the statements ``engines`` (``Engine`` or ``AsyncEngine``) send."""
    return QueryCapture(engines)


class NumQueries:
    """``with``: fail on exit, listing the statements, unless exactly ``expected`` were sent."""

    def __init__(self, test: Any, expected: int, engines: Sequence[Any]) -> None:
        self.test, self.expected, self.capture = test, expected, QueryCapture(engines, follow_new=True)

    def __enter__(self) -> QueryCapture:
        return self.capture.__enter__()

    def __exit__(self, kind: Optional[Type[BaseException]], error: Optional[BaseException],
                 traceback: Optional[TracebackType]) -> None:
        self.capture.__exit__(kind, error, traceback)
        if kind is None and len(self.capture) != self.expected:
            self.test.fail(f"{len(self.capture)} queries ran, {self.expected} expected:\n{self.capture.listing()}")


def _sync_engines(engines: Sequence[Any]) -> List[Engine]:
    found: List[Engine] = []
    for engine in engines:
        sync = getattr(engine, "sync_engine", engine)  # an AsyncEngine's events live on its sync engine
        if not isinstance(sync, Engine):
            raise TypeError(f"capture_queries takes engines (Engine or AsyncEngine), not {type(engine).__name__}")
        if all(sync is not known for known in found):
            found.append(sync)
    return found
