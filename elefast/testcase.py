"""``unittest`` mixins: a fresh, migrated PostgreSQL database for every test.

::

    class UserTests(PostgresTestCase, unittest.TestCase):
        schema = MetadataMigrator(Base.metadata)

        def test_signup(self):
            self.session.add(User(name="ada"))
            self.session.commit()

The server and its template are shared by every class of the process that
uses the same server and the same ``schema`` object; each test gets its own
clone of the template. Everything a test gets is registered with
``addCleanup`` the moment it exists, so a failing ``setUp``, a test that leaves
connections or transactions open, or a subclass that forgets
``super().setUp()`` leaks nothing.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Dict, Optional, Tuple, Union

from sqlalchemy import URL, Engine
from sqlalchemy.orm import Session

from elefast import _engines, _sql, provision
from elefast.sync import Database, DatabaseServer, Migrator

if TYPE_CHECKING:  # imported when an async test case runs: sync suites skip sqlalchemy.ext.asyncio
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

    from elefast.asyncio import AsyncDatabase, AsyncDatabaseServer, AsyncMigrator

__all__ = ["AsyncPostgresTestCase", "PostgresTestCase"]


class _Shared:
    """Process-wide server objects, one per (kind, URL, schema), and their first failure."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.servers: Dict[Tuple[Any, ...], Any] = {}
        self.failures: Dict[Tuple[Any, ...], BaseException] = {}

    def get(self, key: Tuple[Any, ...], make: Callable[[], Any]) -> Any:
        with self.lock:
            if key in self.failures:
                raise self.failures[key]
            if key not in self.servers:
                try:
                    self.servers[key] = make()
                except Exception as error:
                    self.failures[key] = error
                    raise
            return self.servers[key]


_SHARED = _Shared()


def _server_url(cls: Any, *, is_async: bool) -> URL:
    """Where ``cls``'s server is (see :mod:`elefast.provision`), with a driver of the right kind."""
    found = provision.resolve(cls.database_url, is_async=is_async, timeout=max(cls.connect_timeout, 30))
    return _engines.parse_url(found, is_async=is_async, swap_kind=True)


def _key(kind: str, url: URL, schema: Any) -> Tuple[Any, ...]:
    return (kind, url.render_as_string(hide_password=False), id(schema), schema)


class _Settings:
    """The class attributes both mixins read; documented on the mixins."""

    schema: ClassVar[Any] = None
    database_url: ClassVar[Optional[Union[str, URL]]] = None
    database_prefix: ClassVar[str] = _sql.DEFAULT_PREFIX
    connect_timeout: ClassVar[float] = 10.0
    sessionmaker_factory: ClassVar[Optional[Callable[..., Any]]] = None


class PostgresTestCase(_Settings):
    """Mixin for ``unittest.TestCase``: each test gets its own database.

    Put it before ``unittest.TestCase`` in the bases. Configure it with class
    attributes:

    - ``schema``: a :class:`~elefast.sync.Migrator` applied once to a template
      (``MetadataMigrator(Base.metadata)``, ``AlembicMigrator("alembic.ini")``),
      or None for empty databases.
    - ``database_url``: the server (default None: ``ELEFAST_DATABASE_URL``).
    - ``database_prefix``: the start of each database's name (default ``"elefast"``).
    - ``connect_timeout``: seconds to wait for the server in ``setUpClass`` (default 10).
    - ``sessionmaker_factory``: builds ``self.session``'s factory from the engine
      (default ``sqlalchemy.orm.sessionmaker``).

    Each test has ``self.database`` (a :class:`~elefast.sync.Database`),
    ``self.engine`` and ``self.session`` (closed after the test); the database
    is dropped after the test, whatever happened in it.
    """

    database: Database
    engine: Engine
    session: Session

    @classmethod
    def setUpClass(cls) -> None:
        """Find the server and build the template once, so problems show up early."""
        super().setUpClass()  # type: ignore[misc]
        cls.elefast_server()

    @classmethod
    def elefast_server(cls) -> DatabaseServer:
        """The process-wide :class:`DatabaseServer` for this class's URL and schema."""
        url = _server_url(cls, is_async=False)
        schema: Optional[Migrator] = cls.schema

        def make() -> DatabaseServer:
            server = DatabaseServer(url, schema=schema).ensure_is_ready(timeout=cls.connect_timeout)
            server._template(cls.database_prefix, "utf8")
            return server

        server: DatabaseServer = _SHARED.get(_key("sync", url, schema), make)
        server._template(cls.database_prefix, "utf8")  # re-raises a failed migration
        return server

    def _callSetUp(self) -> None:
        self._elefast_set_up()
        super()._callSetUp()  # type: ignore[misc]

    def _elefast_set_up(self) -> None:
        server = self.elefast_server()
        database = server._create_database(
            self.database_prefix, "utf8", self.sessionmaker_factory or server.sessionmaker_factory
        )
        self.addCleanup(database.drop)  # type: ignore[attr-defined]
        self.database = database
        self.engine = database.engine
        self.session = database.session()
        self.addCleanup(self.session.close)  # type: ignore[attr-defined]


class AsyncPostgresTestCase(_Settings):
    """Mixin for ``unittest.IsolatedAsyncioTestCase``: each test gets its own database.

    The same class attributes as :class:`PostgresTestCase` (``schema`` may be
    an :class:`~elefast.asyncio.AsyncMigrator` or a sync migrator). Each test
    has ``self.database`` (an :class:`~elefast.asyncio.AsyncDatabase`),
    ``self.engine`` (an ``AsyncEngine``, one per test since each test runs its
    own event loop) and ``self.session`` (an ``AsyncSession``, closed after the
    test).
    """

    database: AsyncDatabase
    engine: AsyncEngine
    session: AsyncSession

    @classmethod
    def setUpClass(cls) -> None:
        """Find the server and build the template once, so problems show up early."""
        super().setUpClass()  # type: ignore[misc]
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(cls.elefast_server())

    @classmethod
    async def elefast_server(cls) -> AsyncDatabaseServer:
        """The process-wide :class:`AsyncDatabaseServer` for this class's URL and schema."""
        from elefast.asyncio import AsyncDatabaseServer

        url = _server_url(cls, is_async=True)
        schema: Optional[AsyncMigrator] = cls.schema
        server: AsyncDatabaseServer = _SHARED.get(
            _key("async", url, schema), lambda: AsyncDatabaseServer(url, schema=schema)
        )
        await _SHARED_READY.ensure(server, cls.connect_timeout)
        await server._template(cls.database_prefix, "utf8")
        return server

    def _callSetUp(self) -> None:
        self._callAsync(self._elefast_set_up)  # type: ignore[attr-defined]
        super()._callSetUp()  # type: ignore[misc]

    async def _elefast_set_up(self) -> None:
        server = await self.elefast_server()
        database = await server._create_database(
            self.database_prefix, "utf8", self.sessionmaker_factory or server.sessionmaker_factory
        )
        self.addAsyncCleanup(database.drop)  # type: ignore[attr-defined]
        self.database = database
        self.engine = database.engine
        self.session = database.session()
        self.addAsyncCleanup(self.session.close)  # type: ignore[attr-defined]


class _Readiness:
    """Checks each async server once per process; remembers a failure."""

    def __init__(self) -> None:
        self.done: Dict[int, Optional[BaseException]] = {}

    async def ensure(self, server: AsyncDatabaseServer, timeout: float) -> None:
        state = self.done.get(id(server), False)
        if state is None:
            return
        if isinstance(state, BaseException):
            raise state
        try:
            await server.ensure_is_ready(timeout=timeout)
        except Exception as error:
            self.done[id(server)] = error
            raise
        self.done[id(server)] = None


_SHARED_READY = _Readiness()
