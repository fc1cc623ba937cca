"""The two kinds of engines the admin core runs work with: sync ones and async ones.

A server step that opens an engine on a database elefast created (to run a migration
or ``setUpTestData`` there, or to warm a clone the pool keeps) asks an
:class:`EngineKind`; everything else in the core is the same for both APIs.
:data:`SYNC` serves :class:`~elefast.sync.DatabaseServer`, :data:`ASYNC`
:class:`~elefast.asyncio.AsyncDatabaseServer`.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Optional

from sqlalchemy import URL, Engine, create_engine
from typing_extensions import Protocol

from elefast._engines import aio as _aio
from elefast._engines.budget import is_lean, wait_when_full
from elefast._engines.shared_dialect import EngineMaker
from elefast.errors import ConfigurationError

__all__ = ["ASYNC", "SYNC", "EngineKind", "Work"]

#: Work to run inside a database: ``work(connection)``, sync or a coroutine function.
Work = Callable[[Any], Any]


class EngineKind(Protocol):
    """The part of a server step that depends on sync or async engines."""

    is_async: bool

    def run_in(self, url: URL, options: Dict[str, Any], work: Work) -> None:
        """Run ``work`` in one transaction on a connection to ``url`` (a fresh NullPool engine)."""

    def prepare(self, url: URL, options: Dict[str, Any], template: Optional[str], warm: bool = True) -> Any:
        """What to make ready beside a clone of ``template`` the pool keeps (an engine, with a connection
        open if ``warm``), or None."""

    def current(self, prepared: Any, remake: Callable[[], Any]) -> Any:
        """``prepared`` as a caller takes it from the pool, or ``remake()`` if it went stale meanwhile."""


class _SyncEngines:
    """Plain engines and sync migrators; the pool keeps a warm engine beside each clone."""

    is_async = False

    def __init__(self) -> None:
        self._maker = EngineMaker(lambda url, options: wait_when_full(create_engine(url, **options)))

    def engine(self, url: URL, options: Dict[str, Any], template: Optional[str] = None) -> Engine:
        """A test's engine on ``url``, a clone of ``template``: from the second clone of a template on
        (``template`` given), one sharing the first one's dialect and statement cache, unless
        ``ELEFAST_SHARE_DIALECT=0`` (then each engine is ``create_engine``'s own, as before)."""
        return self._maker.engine(url, options, template)

    def run_in(self, url: URL, options: Dict[str, Any], work: Work) -> None:
        if inspect.iscoroutinefunction(work):
            raise ConfigurationError(
                f"{getattr(work, '__qualname__', work)!r} is a coroutine function, but this is a sync server. "
                "Use AsyncPostgresTestCase (or AsyncDatabaseServer) for async code, or make it a plain function."
            )
        engine = wait_when_full(create_engine(url, **options))
        try:
            with engine.connect() as connection:  # one transaction, committed at the end (work may commit
                work(connection)  # earlier: a ChainMigrator step before an env.py with a connection of its own)
                connection.commit()
        finally:
            engine.dispose()

    def current(self, prepared: Any, remake: Callable[[], Any]) -> Any:
        return self._maker.current(prepared, remake) if isinstance(prepared, Engine) else prepared

    def prepare(self, url: URL, options: Dict[str, Any], template: Optional[str], warm: bool = True) -> Engine:
        engine = self.engine(url, options, template)
        if warm and not is_lean():  # on a full server a ready clone waits without a connection of its own
            with engine.connect() as connection:  # one connection made ahead, left idle in the engine's pool,
                connection.exec_driver_sql("SELECT 1")  # its backend past its first query (not the test's time)
        return engine


class _AsyncEngines:
    """Async engines; ``migrate_async`` (or a sync migrator, through ``run_sync``) on a loop of its own."""

    is_async = True

    def __init__(self) -> None:
        self._maker = EngineMaker(_new_async)

    def engine(self, url: URL, options: Dict[str, Any], template: Optional[str] = None) -> Any:
        """A test's ``AsyncEngine`` on ``url``, a clone of ``template``: as :meth:`_SyncEngines.engine`."""
        from sqlalchemy.ext.asyncio import AsyncEngine

        return AsyncEngine(self._maker.engine(url, options, template))

    def run_in(self, url: URL, options: Dict[str, Any], work: Work) -> None:
        from sqlalchemy.ext.asyncio import create_async_engine  # only async users pay for the import

        async def run() -> None:
            engine = wait_when_full(create_async_engine(url, **options))
            try:
                async with engine.connect() as connection:  # one transaction, committed at the end
                    if inspect.iscoroutinefunction(work):
                        await work(connection)
                    else:
                        await connection.run_sync(work)
                    await connection.commit()
            finally:
                await engine.dispose()

        _aio.run(run())

    def current(self, prepared: Any, remake: Callable[[], Any]) -> Any:
        return prepared

    def prepare(self, url: URL, options: Dict[str, Any], template: Optional[str], warm: bool = True) -> None:
        return None  # an async engine belongs to one event loop: each test makes its own


def _new_async(url: URL, options: Dict[str, Any]) -> Engine:
    """The ``sync_engine`` of a new ``create_async_engine`` engine that waits on a full server."""
    from sqlalchemy.ext.asyncio import create_async_engine

    return wait_when_full(create_async_engine(url, **options)).sync_engine


SYNC = _SyncEngines()
"""Engines for :class:`~elefast.sync.DatabaseServer`."""

ASYNC = _AsyncEngines()
"""Engines for :class:`~elefast.asyncio.AsyncDatabaseServer`."""
