"""The asynchronous API: the twins of :mod:`elefast.sync` for ``asyncio`` code.

They send the same SQL, follow the same naming and the same rules as the sync
classes (see :mod:`elefast._sql`); only the I/O differs. The default driver is
asyncpg::

    server = AsyncDatabaseServer("postgresql://postgres@127.0.0.1/postgres",
                                 schema=AsyncMetadataMigrator(Base.metadata))
    async with await server.create_database() as database:
        async with database.session() as session:
            ...
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import inspect
import threading
import time
import weakref
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Callable, Dict, Iterable, List, Optional, Type, Union

from sqlalchemy import URL, MetaData, NullPool, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from typing_extensions import Protocol, Self, TypeAlias, runtime_checkable

from elefast import _engines, _messages, _migrators, _sql, ownership
from elefast._logging import logger
from elefast.errors import DatabaseNotReadyError, MigrationError
from elefast.pool import ClonePool, ServerState, TemplateSlot, at_process_exit
from elefast.sync import MetadataMigrator

__all__ = [
    "AsyncDatabase",
    "AsyncDatabaseServer",
    "AsyncMetadataMigrator",
    "AsyncMigrator",
    "CanBeTurnedIntoAsyncEngine",
]


CanBeTurnedIntoAsyncEngine: TypeAlias = Union[AsyncEngine, URL, str]
"""What :class:`AsyncDatabaseServer` accepts: an async engine, a ``URL`` or a URL string."""


@runtime_checkable
class AsyncMigrator(Protocol):
    """Defines how the database schema is created, from async code."""

    async def migrate_async(self, connection: AsyncConnection) -> None:
        """Creates the database schema for the passed connection."""


class AsyncMetadataMigrator:
    """Creates the database schema based on ``sqlalchemy.MetaData``, from async code.

    Runs :class:`elefast.sync.MetadataMigrator` through ``run_sync``.
    """

    def __init__(self, metadata: MetaData) -> None:
        self.metadata = metadata
        self._sync = MetadataMigrator(metadata)

    def __repr__(self) -> str:
        return f"AsyncMetadataMigrator(<MetaData with {len(self.metadata.tables)} tables>)"

    def fingerprint(self) -> str:
        """The compiled PostgreSQL DDL of the metadata (see :meth:`MetadataMigrator.fingerprint`)."""
        return self._sync.fingerprint()

    async def migrate_async(self, connection: AsyncConnection) -> None:
        """Drops and creates all tables specified in the metadata object passed via the constructor."""
        await connection.run_sync(self._sync.migrate)


class AsyncDatabase(AbstractAsyncContextManager):  # type: ignore[type-arg]
    """A Postgres database, for async code.

    Usually obtained from :meth:`AsyncDatabaseServer.create_database`.

    Args:
        engine: the async engine holding the connections to the specific database.
        server: a reference to the database server that created the database.
        sessionmaker_factory: allows you to set custom options for
            :meth:`AsyncDatabase.session`.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        server: AsyncDatabaseServer,
        sessionmaker_factory: Callable[[AsyncEngine], Callable[[], AsyncSession]] = async_sessionmaker,
    ) -> None:
        self.engine = engine
        self.server = server
        self.sessionmaker = sessionmaker_factory(engine)
        name = engine.url.database
        if not name:
            raise ValueError("The engine's URL names no database.")
        self.name: str = name
        """The name of the database."""
        self._dropped = False
        self._checkouts = _engines.CheckoutTracker(engine.sync_engine)
        self._on_drop: Optional[Callable[[str], None]] = None  # set for pooled databases

    def __repr__(self) -> str:
        return f"AsyncDatabase(name={self.name!r}, url={_engines.safe_url(self.url)!r})"

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.drop()

    @property
    def url(self) -> URL:
        """The engine URL, allowing you to create your own engines with custom options."""
        return self.engine.url

    async def drop(self) -> None:
        """Disposes the engine and drops the database (a second call does nothing)."""
        if self._dropped:
            return
        self._dropped = True
        self._checkouts.invalidate_all()
        await self.engine.dispose()
        if self._on_drop is not None:
            self._on_drop(self.name)
        else:
            await self.server.drop_database(self.name)

    def session(self) -> AsyncSession:
        """Creates a new async ORM session (customise with ``sessionmaker_factory``)."""
        return self.sessionmaker()  # type: ignore[return-value]


class AsyncDatabaseServer:
    """A PostgreSQL server on which elefast creates and drops test databases, from async code.

    The twin of :class:`elefast.sync.DatabaseServer`: a ``str`` or ``URL``
    becomes an async engine with AUTOCOMMIT and ``NullPool`` (bare
    ``postgresql://`` uses asyncpg); your own ``AsyncEngine`` works too and its
    options carry over to the engines of the databases created on it.
    The server may be used from several event loops, one after another or at
    once (each ``IsolatedAsyncioTestCase`` test has its own loop).

    Args:
        engine: where the server is: an async engine, a ``URL`` or a URL string.
        schema: an :class:`AsyncMigrator` (a sync :class:`~elefast.sync.Migrator`
            also works, through ``run_sync``), or None for empty databases.
        sessionmaker_factory: passed on to each :class:`AsyncDatabase` (keyword only).
    """

    def __init__(
        self,
        engine: CanBeTurnedIntoAsyncEngine,
        schema: Optional[AsyncMigrator] = None,
        *,
        sessionmaker_factory: Callable[[AsyncEngine], Callable[[], AsyncSession]] = async_sessionmaker,
    ) -> None:
        if isinstance(engine, AsyncEngine):
            _engines.check_driver(engine.url, is_async=True)
            self._engine = engine
        else:
            url = _engines.parse_url(engine, is_async=True)
            self._engine = create_async_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
            _engines.mark_admin(self._engine.sync_engine)
        sync_engine = self._engine.sync_engine
        self._connect_args = (
            {} if _engines.is_admin(sync_engine) else _engines.remember_connect_args(sync_engine)
        )
        self.schema: Optional[AsyncMigrator] = _migrators.check_schema(schema, is_async=True)
        self.sessionmaker_factory = sessionmaker_factory
        self._state = ServerState()
        self._state.owner = ownership.Owner(_sync_admin_connector(self.url))
        self._finalizer = weakref.finalize(self, _drop_leftovers, self.url, self._connect_args, self._state)
        at_process_exit(self._finalizer)

    def __repr__(self) -> str:
        return f"AsyncDatabaseServer(url={_engines.safe_url(self.url)!r}, schema={self.schema!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    @property
    def url(self) -> URL:
        """The server engine's URL (render it with ``hide_password=True`` to show it)."""
        return self._engine.url

    @property
    def engine(self) -> AsyncEngine:
        """The engine elefast uses to create and drop databases."""
        return self._engine

    async def ensure_is_ready(self, timeout: float = 30, interval: float = 0.5) -> Self:
        """Wait until the server answers ``SELECT 1``; see :meth:`DatabaseServer.ensure_is_ready`.

        Each attempt is bounded by the time left, so the call returns or raises
        within about ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        attempts = 0
        while True:
            attempts += 1
            remaining = max(deadline - time.monotonic(), 0.5)
            try:
                await asyncio.wait_for(self._probe(), remaining)
                return self
            except Exception as error:
                _messages.raise_if_fatal(error, self.url)
                if time.monotonic() + interval >= deadline:
                    raise DatabaseNotReadyError(
                        _messages.not_ready(self.url, timeout, attempts, error)
                    ) from error
                await asyncio.sleep(interval)

    async def _probe(self) -> None:
        async with self._engine.connect() as connection:
            await connection.execute(text(_sql.SELECT_ONE))

    async def create_database(self, prefix: str = "elefast", encoding: str = "utf8") -> AsyncDatabase:
        """Create a fresh database with the schema applied; see :meth:`DatabaseServer.create_database`."""
        return await self._create_database(prefix, encoding, self.sessionmaker_factory)

    async def _create_database(
        self,
        prefix: str,
        encoding: str,
        sessionmaker_factory: Callable[[AsyncEngine], Callable[[], AsyncSession]],
    ) -> AsyncDatabase:
        _sql.validate_prefix(prefix)
        _sql.validate_encoding(encoding)
        template = await self._template(prefix, encoding)
        name = _sql.database_name(prefix)
        await self._create(name, template, encoding)
        return AsyncDatabase(self._database_engine(name), self, sessionmaker_factory)

    async def drop_database(self, name: str) -> None:
        """Drop a database this server created, ending any connection still open to it."""
        if not self._state.check_droppable(name, self):
            return
        async with self._admin() as connection:
            await _drop(connection, name)
        self._state.disown(name)

    async def close(self) -> None:
        """Drop every template and database this server created and still owns."""
        self._finalizer.detach()
        if self._state.pool is not None:
            await _to_thread(self._state.pool.close)
        self._state.close_connections()
        await _drop_names(self._admin, self._state.take_owned())
        if self._state.owner is not None:  # its locks (ownership, templates in use) go with it
            self._state.owner.close()

    # -- internals ------------------------------------------------------------

    def _admin(self) -> _AdminConnection:
        return _AdminConnection(self._engine)

    async def _create(self, name: str, template: Optional[str], encoding: str) -> None:
        statement = _sql.create_database(name, template, encoding)
        try:
            self._state.own(name)
            async with self._admin() as connection:
                await connection.execute(text(statement))
                for mark in ownership.mark_owned(name):
                    await connection.execute(text(mark))
        except DBAPIError as error:
            self._state.disown(name)
            _messages.raise_if_fatal(error, self.url, action=f"create the database {name!r}")
            raise

    def _database_engine(self, name: str, pooled: bool = True) -> AsyncEngine:
        options: Dict[str, Any] = _engines.engine_options(self._engine.sync_engine, self._connect_args)
        if not pooled:
            options = _engines.without_pool_sizes(options)
            options["poolclass"] = NullPool
        return create_async_engine(self.url.set(database=name), **options)

    async def _template(self, prefix: str, encoding: str) -> Optional[str]:
        if self.schema is None:
            return None
        slot = self._state.templates.get(encoding)
        if slot is None:
            await self._state.acquire_async()
            try:
                slot = self._state.templates.get(encoding) or await self._prepare_template(prefix, encoding)
            finally:
                self._state.lock.release()
        if slot.error is not None:
            raise MigrationError(slot.message) from slot.error
        return slot.name

    async def _prepare_template(self, prefix: str, encoding: str) -> TemplateSlot:
        """The async twin of :meth:`DatabaseServer._prepare_template` (same SQL, same names)."""
        started = time.monotonic()
        fingerprint = _migrators.fingerprint(self.schema)
        if fingerprint is None:
            slot = await self._build_template(_sql.template_name(prefix), encoding, None)
        else:
            async with self._admin() as connection:
                digest = _sql.template_hash(fingerprint, connection.dialect.server_version_info, encoding)
                name = _sql.template_name(prefix, digest)
                if await _template_ready(connection, name):
                    slot = TemplateSlot(name, reused=True)
                else:
                    key = _sql.advisory_key(name)
                    await connection.execute(text(_sql.ADVISORY_LOCK), {"key": key})
                    try:
                        if await _template_ready(connection, name):
                            slot = TemplateSlot(name, reused=True)
                        else:
                            await _drop(connection, name)
                            slot = await self._build_template(name, encoding, fingerprint)
                            if slot.error is None:  # the same pruning as the sync server, same SQL
                                await _to_thread(self._sync_admin()._prune_templates, prefix, name)
                    finally:
                        await connection.execute(text(_sql.ADVISORY_UNLOCK), {"key": key})
        self._state.remember_template(encoding, slot, self.schema, fingerprint, time.monotonic() - started)
        return slot

    async def _build_template(self, name: str, encoding: str, fingerprint: Optional[str]) -> TemplateSlot:
        await self._create(name, None, encoding)
        slot = TemplateSlot(name)
        try:
            engine = self._database_engine(name, pooled=False)
            try:
                async with engine.begin() as connection:
                    await _migrate(self.schema, connection)
            finally:
                await engine.dispose()
            if fingerprint is not None:
                async with self._admin() as connection:
                    for statement in _sql.mark_template_ready(name, _now(), fingerprint):
                        await connection.execute(text(statement))
                self._state.disown(name)
        except BaseException as error:
            await _drop_names(self._admin, [name])
            self._state.disown(name)
            if not isinstance(error, Exception):
                raise
            slot.error, slot.message = error, _messages.migration_failed(self.schema, name, error)
        return slot

    # -- the clone pool (used by the test case mixin), run with a sync admin engine ----

    def _sync_admin(self) -> Any:
        """A psycopg DatabaseServer on the same server, for the pool's thread (no event loop there)."""
        sync = self._state.sync_server
        if sync is None:
            from elefast.sync import DatabaseServer

            with self._state.owned_lock:
                sync = self._state.sync_server
                if sync is None:
                    sync = DatabaseServer(_engines.sync_url(self.url))
                    sync._state = self._state  # one bookkeeping: names, templates, pool
                    sync._finalizer.detach()
                    self._state.sync_server = sync
        return sync

    def _pool(self) -> ClonePool:
        pool = self._state.pool
        if pool is None:
            sync = self._sync_admin()
            with self._state.owned_lock:
                pool = self._state.pool
                if pool is None:
                    pool = self._state.pool = ClonePool(sync._create_clone, sync._drop_clone,
                                                          finish=sync._close_worker_connection,
                                                          sweep=sync.sweep_orphans)
        return pool

    async def _pooled_database(
        self,
        template: Optional[str],
        prefix: str,
        encoding: str,
        sessionmaker_factory: Callable[[AsyncEngine], Callable[[], AsyncSession]],
    ) -> AsyncDatabase:
        """A database from the pool (made in a thread); ``drop()`` hands it back to be dropped behind."""
        pool = self._pool()
        name, _ = await _to_thread(pool.take, template, prefix, encoding)
        database = AsyncDatabase(self._database_engine(name), self, sessionmaker_factory)
        database._on_drop = pool.release
        return database

    def _class_template(self, template: Optional[str], prefix: str, encoding: str, fill: Any) -> str:
        """A per-class template with ``fill``'s rows; ``fill`` may be sync or a coroutine function."""
        sync = self._sync_admin()
        if not inspect.iscoroutinefunction(fill):
            return str(sync._class_template(template, prefix, encoding, fill))

        async def fill_async(name: str) -> None:
            engine = self._database_engine(name, pooled=False)
            try:
                async with engine.begin() as connection:
                    await fill(connection)
            finally:
                await engine.dispose()

        return str(sync._class_template(template, prefix, encoding, None, lambda name: _run(fill_async(name))))

    def _retire_class_template(self, name: str) -> None:
        self._pool().retire(name, then_drop=name)


def _sync_admin_connector(url: URL) -> Callable[[], Any]:
    """Opens AUTOCOMMIT psycopg connections to ``url``'s server (the ownership connection)."""
    holder: List[Any] = []

    def connect() -> Any:
        if not holder:
            from sqlalchemy import create_engine

            holder.append(create_engine(_engines.sync_url(url), isolation_level="AUTOCOMMIT", poolclass=NullPool))
        return holder[0].connect()

    return connect


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def _template_ready(connection: AsyncConnection, name: str) -> bool:
    return bool((await connection.execute(text(_sql.TEMPLATE_STATE), {"name": name})).scalar())


async def _to_thread(func: Callable[..., Any], *args: Any) -> Any:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, functools.partial(func, *args))


def _run_for_result(coroutine: Any) -> Any:
    """Run ``coroutine`` to completion from sync code (in a thread if a loop already runs here)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    outcome: List[Any] = []

    def target() -> None:
        try:
            outcome.append((True, asyncio.run(coroutine)))
        except BaseException as error:  # re-raised in the caller's thread
            outcome.append((False, error))

    thread = threading.Thread(target=target, name="elefast-async")
    thread.start()
    thread.join()
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def _run(coroutine: Any) -> None:
    """:func:`_run_for_result`, ignoring the result."""
    _run_for_result(coroutine)


class _AdminConnection:
    """``async with`` an AUTOCOMMIT connection of ``engine``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._connection: Optional[AsyncConnection] = None

    async def __aenter__(self) -> AsyncConnection:
        connection = await self._engine.connect()
        try:
            self._connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
        except BaseException:
            await connection.close()
            raise
        return self._connection

    async def __aexit__(self, *exc_info: Any) -> None:
        assert self._connection is not None
        await self._connection.close()


async def _migrate(schema: Any, connection: AsyncConnection) -> None:
    if hasattr(schema, "migrate_async"):
        await schema.migrate_async(connection)
    else:
        await connection.run_sync(schema.migrate)


async def _drop(connection: AsyncConnection, name: str) -> None:
    force = _sql.supports_drop_force(connection.dialect.server_version_info)
    if not force:
        await connection.execute(text(_sql.TERMINATE_BACKENDS), {"name": name})
    await connection.execute(text(_sql.drop_database(name, force)))


async def _drop_names(admin: Callable[[], _AdminConnection], names: Iterable[str]) -> None:
    names = list(names)
    if not names:
        return
    try:
        async with admin() as connection:
            for name in names:
                try:
                    await _drop(connection, name)
                except Exception as error:
                    logger.warning("elefast could not drop %s: %s", name, error)
    except Exception as error:
        logger.warning("elefast could not connect to drop %d databases: %s", len(names), error)


def _drop_leftovers(url: URL, connect_args: Dict[str, Any], state: ServerState) -> None:
    """The finalizer: stop the pool, then drop what is still owned, on a fresh loop and engine."""
    if state.pool is not None:
        state.pool.close()
    state.close_connections()
    names = state.take_owned()
    if not names:
        if state.owner is not None:
            state.owner.close()
        return

    async def run() -> None:
        engine = create_async_engine(
            url, poolclass=NullPool, isolation_level="AUTOCOMMIT", connect_args=dict(connect_args)
        )
        try:
            await _drop_names(lambda: _AdminConnection(engine), names)
        finally:
            await engine.dispose()

    _run(run())
    if state.owner is not None:
        state.owner.close()
