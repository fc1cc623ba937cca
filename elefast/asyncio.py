"""The asynchronous API: the twins of :mod:`elefast.sync` for ``asyncio`` code.

Every server-side step runs in the same admin core as the sync API
(:mod:`elefast._server.core`), called from a worker thread so the event loop never waits on
it; only readiness, the engines of the databases and ``migrate_async`` are natively
async. The default driver is asyncpg::

    server = AsyncDatabaseServer("postgresql://postgres@127.0.0.1/postgres",
                                 schema=AsyncMetadataMigrator(Base.metadata))
    async with await server.create_database() as database:
        async with database.session() as session:
            ...
"""

from __future__ import annotations

import asyncio
import inspect
from contextlib import AbstractAsyncContextManager
from typing import Any, Callable, List, Optional, Union

from sqlalchemy import URL, NullPool, create_engine, text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from typing_extensions import Self, TypeAlias

from elefast import snapshots as _snapshots
from elefast._base import sql as _sql
from elefast._engines import aio as _aio
from elefast._engines import options as _options
from elefast._engines import urls as _urls
from elefast._engines.budget import not_waiting
from elefast._engines.kinds import ASYNC
from elefast._server.facade import DatabaseBase, ServerBase
from elefast._server.readiness import Attempts
from elefast.migrators import AsyncMetadataMigrator, AsyncMigrator
from elefast.snapshots import Snapshot

__all__ = [
    "AsyncDatabase",
    "AsyncDatabaseServer",
    "AsyncMetadataMigrator",
    "AsyncMigrator",
    "CanBeTurnedIntoAsyncEngine",
]


CanBeTurnedIntoAsyncEngine: TypeAlias = Union[AsyncEngine, URL, str]
"""What :class:`AsyncDatabaseServer` accepts: an async engine, a ``URL`` or a URL string."""


class AsyncDatabase(DatabaseBase[AsyncEngine, AsyncSession], AbstractAsyncContextManager):  # type: ignore[type-arg]
    """A Postgres database, for async code.

    Usually obtained from :meth:`AsyncDatabaseServer.create_database`.

    Args:
        engine: the async engine holding the connections to the specific database.
        server: a reference to the database server that created the database.
        sessionmaker_factory: allows you to set custom options for
            :meth:`AsyncDatabase.session`.
        on_drop: what :meth:`drop` does with the database once its engine is
            disposed (keyword only; default: ``server.drop_database``).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        server: AsyncDatabaseServer,
        sessionmaker_factory: Callable[[AsyncEngine], Callable[[], AsyncSession]] = async_sessionmaker,
        *,
        on_drop: Optional[Callable[[str], Any]] = None,
    ) -> None:
        super().__init__(engine, server, sessionmaker_factory, on_drop, engine.sync_engine)

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.drop()

    async def drop(self) -> None:
        """Disposes the engine and drops the database (a second call does nothing; after
        :meth:`keep`, only the engine is disposed)."""
        if self._begin_drop():
            await self.engine.dispose()
            outcome = self._hand_back()
            if inspect.isawaitable(outcome):
                await outcome

    async def snapshot(self) -> Snapshot:
        """A copy of the database as it is now, to :meth:`restore` later (see :mod:`elefast.snapshots`).

        The engine's idle connections are closed first; other open sessions (close
        ``self.session`` first) make it fail with :class:`~elefast.errors.SnapshotError`.
        """
        await _snapshots.let_go_async(self)
        return await _aio.to_thread(_snapshots.take, self)

    async def restore(self, snapshot: Snapshot) -> None:
        """Make the database what it was at ``snapshot``, under the same name and URL."""
        await _snapshots.let_go_async(self, "restore")
        await _aio.to_thread(_snapshots.restore, self, snapshot)

    async def keep(self) -> None:
        """Keep the database after the process ends: it is marked kept, never dropped or swept."""
        await _aio.to_thread(self._keep)


class AsyncDatabaseServer(ServerBase[AsyncEngine]):
    """A PostgreSQL server on which elefast creates and drops test databases, from async code.

    The twin of :class:`elefast.sync.DatabaseServer`: a ``str`` or ``URL``
    becomes an async engine with AUTOCOMMIT and ``NullPool`` (bare
    ``postgresql://`` uses asyncpg); your own ``AsyncEngine`` works too and its
    options carry over to the engines of the databases created on it. Admin
    work (creating, dropping, templates) goes over psycopg to the same host,
    port, user and password, in a worker thread. The server may be used from
    several event loops, one after another or at once (each
    ``IsolatedAsyncioTestCase`` test has its own loop).

    Args:
        engine: where the server is: an async engine, a ``URL`` or a URL string.
        schema: an :class:`AsyncMigrator` (a sync :class:`~elefast.sync.Migrator`
            also works, through ``run_sync``), or None for empty databases.
        debug: log every statement elefast sends at INFO on the ``elefast`` logger (keyword
            only, as the reference signature has two parameters).
        sessionmaker_factory: passed on to each :class:`AsyncDatabase` (keyword only).
    """

    schema: Optional[AsyncMigrator]

    def __init__(
        self,
        engine: CanBeTurnedIntoAsyncEngine,
        schema: Optional[AsyncMigrator] = None,
        *,
        debug: bool = False,
        sessionmaker_factory: Callable[[AsyncEngine], Callable[[], AsyncSession]] = async_sessionmaker,
    ) -> None:
        if isinstance(engine, AsyncEngine):
            _urls.check_driver(engine.url, is_async=True)
        else:
            url = _urls.parse_url(engine, is_async=True)
            engine = create_async_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
            _options.mark_admin(engine.sync_engine)
        admin = _options.mark_admin(create_engine(_urls.sync_url(engine.url), poolclass=NullPool))
        super().__init__(engine, schema, debug, sessionmaker_factory, admin, engine.sync_engine, ASYNC)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    async def ensure_is_ready(self, timeout: float = 30, interval: float = 0.5) -> Self:
        """Wait until the server answers ``SELECT 1``; see :meth:`DatabaseServer.ensure_is_ready`.

        Each attempt is bounded by the time left, so the call returns or raises
        within about ``timeout`` seconds.
        """
        attempts = Attempts(self.url, timeout, interval)
        while True:
            try:
                await asyncio.wait_for(self._probe(), attempts.next_budget())
                return self
            except Exception as error:
                await asyncio.sleep(attempts.failed(error))

    async def _probe(self) -> None:
        with not_waiting():  # readiness keeps its own timeout
            async with self._engine.connect() as connection:
                await connection.execute(text(_sql.SELECT_ONE))

    async def create_database(self, prefix: str = "elefast", encoding: str = "utf8", *,
                              keep: bool = False, snapshot: Optional[Snapshot] = None) -> AsyncDatabase:
        """Create a fresh database with the schema applied (or a copy of ``snapshot``); see
        :meth:`DatabaseServer.create_database`."""
        template: Optional[str] = None
        if snapshot is not None:
            name = await _aio.to_thread(_snapshots.clone_of, self, snapshot, prefix)
        else:  # the pool's work stays off the loop
            name, _, template = await _aio.to_thread(self._take, prefix, encoding)
        engine = ASYNC.engine(self._core.database_url(name), self._core.engine_options(), template)
        database = AsyncDatabase(engine, self, self.sessionmaker_factory, on_drop=self._core.release)
        if keep:
            await database.keep()
        return database

    async def drop_database(self, name: str) -> None:
        """Drop a database this server created, ending any connection still open to it."""
        await _aio.to_thread(self._core.drop_soon, name)

    async def close(self) -> None:
        """Drop every template and database this server created and still owns."""
        await _aio.to_thread(self._core.close)

    async def sweep_orphans(self, dry_run: bool = False) -> List[str]:
        """Drop the databases elefast made for processes that are gone; return their names."""
        return await _aio.to_thread(self._core.sweep, dry_run)
