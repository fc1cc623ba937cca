"""``unittest`` mixins: a fresh, migrated PostgreSQL database for every test.

::

    class UserTests(PostgresTestCase, unittest.TestCase):
        schema = MetadataMigrator(Base.metadata)

        def test_signup(self):
            self.session.add(User(name="ada"))
            self.session.commit()

The server and its template are shared by every class of the process that uses
the same server and the same schema (migrator objects of one type with the same
fingerprint count as one). With ``isolation = "database"`` (the default) each test
gets its own clone, taken from a pool that a background thread fills ahead and
drains behind. With ``isolation = "transaction"`` the class gets one clone and each
test runs inside a transaction rolled back after it (:mod:`elefast._testing.isolation`).
Everything a test gets is registered with ``addCleanup`` the moment it exists, so a
failing ``setUp``, a test that leaves connections or transactions open, or a
subclass that forgets ``super().setUp()`` leaks nothing.

Class attributes are checked when the class is created: a misspelt isolation mode
or a ``MetaData`` where a migrator belongs fails the import with the fix.
"""

from __future__ import annotations

import os
import sys
import unittest
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Dict, List, Optional, Tuple, Union, cast

from sqlalchemy import URL, Connection, Engine
from sqlalchemy.orm import Session

from elefast import provision
from elefast._base import sql as _sql
from elefast._engines import options as _options
from elefast._engines import urls as _urls
from elefast._testing import app_engines as _app_engines
from elefast._testing import extra_databases as _extra_databases
from elefast._testing import matrix as _matrix
from elefast._testing import outcome as _outcome
from elefast._testing.class_config import ClassConfig
from elefast._testing.isolation import ENCODING, ClassState
from elefast._testing.provider import SHARED, AsyncProvider, SyncProvider
from elefast.provision import versions
from elefast.queries import NumQueries, QueryCapture
from elefast.sync import Database, DatabaseServer

if TYPE_CHECKING:  # imported when an async test case runs: sync suites skip sqlalchemy.ext.asyncio
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

    from elefast.asyncio import AsyncDatabase, AsyncDatabaseServer

    _TestCase = unittest.TestCase
    _AsyncTestCase = unittest.IsolatedAsyncioTestCase
else:
    _TestCase = _AsyncTestCase = object

__all__ = ["AsyncPostgresTestCase", "PostgresTestCase"]


class _Settings:
    """The class attributes both mixins read; documented on the mixins."""

    schema: ClassVar[Any] = None
    database_url: ClassVar[Optional[Union[str, URL]]] = None
    isolation: ClassVar[str] = "database"
    database_prefix: ClassVar[str] = _sql.DEFAULT_PREFIX
    connect_timeout: ClassVar[float] = 10.0
    sessionmaker_factory: ClassVar[Optional[Callable[..., Any]]] = None
    app_engines: ClassVar[Tuple[Any, ...]] = ()
    extensions: ClassVar[Tuple[str, ...]] = ()
    postgres_versions: ClassVar[Tuple[int, ...]] = ()
    extra_databases: ClassVar[Optional[Dict[str, Any]]] = None
    database_url_env: ClassVar[Optional[str]] = None
    guard: ClassVar[Optional[bool]] = None
    _elefast_is_async: ClassVar[bool] = False
    _elefast_class_state: ClassVar[Optional[ClassState]] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        config = ClassConfig.of(cls, is_async=cls._elefast_is_async)  # a bad attribute fails here, with the fix
        if not issubclass(cls, unittest.TestCase):
            return  # a mixin, not a test class
        asked = versions.requested(getattr(cls, "postgres_versions", ()), cls.__name__)
        if asked:
            _matrix.expand(cls, asked)
        elif config.postgres_version is None and unittest.defaultTestLoader.getTestCaseNames(cls):
            provision.prestart(config.database_url)  # its server may start now, while the suite imports

    @classmethod
    def setUpTestData(cls, connection: Any) -> None:
        """Override to write rows every test of the class starts with (runs once per class)."""

    def assertMigrationsMatch(self, metadata: Any) -> None:
        """Fail, listing every difference, unless this test's migrated database matches ``metadata``.

        Uses Alembic's own comparison (``compare_metadata``, with types) on the clone of the
        class's template: with ``schema = AlembicMigrator(...)``, one test proves the
        migrations build what the models declare. Needs the ``alembic`` extra.
        """
        from elefast.extras.alembic import migration_differences

        database = getattr(self, "database", None)
        if database is None:
            raise AssertionError("assertMigrationsMatch needs self.database: call it from a test method.")
        differences = migration_differences(database.url, metadata)
        if differences:
            listed = "\n  ".join(differences)
            raise AssertionError(f"The migrations do not build what the models declare "
                                 f"({len(differences)} differences):\n  {listed}")

    def captureQueries(self) -> QueryCapture:
        """``with self.captureQueries() as queries:`` records every statement (with its parameters, in
        order, from any thread) that ``self.engine`` and the class's ``app_engines`` send in the block.
        See :mod:`elefast.queries`."""
        return QueryCapture(self._elefast_query_engines(), follow_new=True)

    def assertNumQueries(self, number: int, function: Optional[Callable[..., Any]] = None, *args: Any,
                         **kwargs: Any) -> Any:
        """Fail, listing the statements, unless the block (or ``function(*args, **kwargs)``) sends
        exactly ``number`` statements over ``self.engine`` and the class's ``app_engines``."""
        expecting = NumQueries(self, number, self._elefast_query_engines())
        if function is None:
            return expecting
        with expecting:
            return function(*args, **kwargs)

    def _elefast_query_engines(self) -> List[Any]:
        engine = getattr(self, "engine", None)
        state = type(self).__dict__.get("_elefast_class_state")
        if engine is None or state is None:
            raise AssertionError("captureQueries and assertNumQueries need the test's engine: use them in a test.")
        return [engine, *(app.engine for app in _app_engines.current(state.app_engines, state.owner))]

    @classmethod
    def _elefast_server_url(cls, config: ClassConfig) -> URL:
        """Where the class's server is (see :mod:`elefast.provision`), with a driver of the right kind."""
        is_async = cls._elefast_is_async
        _options.load_dialect(is_async)  # while a prestarted local server comes up, not after it
        found = provision.resolve(config.database_url, is_async=is_async,
                                  timeout=max(config.connect_timeout, provision.START_TIMEOUT),
                                  postgres_version=config.postgres_version)
        return _urls.parse_url(found, is_async=is_async, swap_kind=True)

    @classmethod
    def _elefast_provider(cls, config: ClassConfig) -> Tuple[Union[SyncProvider, AsyncProvider], Callable[..., Any]]:
        """The class's server, as the front ends see it, and its default session factory."""
        raise NotImplementedError

    @classmethod
    def _elefast_provider_for(cls, config: ClassConfig,
                              schema: Any) -> Tuple[Union[SyncProvider, AsyncProvider], Callable[..., Any]]:
        """The same for another schema on the class's server (an extra database)."""
        raise NotImplementedError

    @classmethod
    def _elefast_class_set_up(cls) -> ClassState:
        """Once per class and process: the server, the template (the class's own when it overrides
        ``setUpTestData``), then the isolation mode's class step. Runs in ``setUpClass``."""
        state: Optional[ClassState] = cls.__dict__.get("_elefast_class_state")
        if state is not None and state.pid == os.getpid():
            return state
        config = ClassConfig.of(cls, is_async=cls._elefast_is_async)
        provider, default_factory = cls._elefast_provider(config)
        template = provider.template(config.prefix, ENCODING)
        if _overrides(cls, "setUpTestData"):
            template = provider.class_template(template, config.prefix, ENCODING, cls.setUpTestData)
            cls._elefast_add_class_cleanup(provider.retire, template)
        state = ClassState(provider, template, config.prefix, config.sessionmaker_factory or default_factory,
                           config.isolation, app_engines=_app_engines.resolve(config.app_engines, cls.__name__),
                           url_env=config.database_url_env, guard=config.guard, owner=cls.__name__)
        config.isolation.set_up_class(cls, state)
        if config.extra_databases:
            state.extras = _extra_databases.set_up_class(
                cls, state, config.extra_databases, config.extra_app_engines or {},
                lambda schema: cls._elefast_provider_for(config, schema), config.isolation)
        cls._elefast_class_state = state
        cls._elefast_add_class_cleanup(_forget, cls)  # a rerun of the class starts anew
        return state

    @classmethod
    def _elefast_add_class_cleanup(cls, function: Callable[..., Any], *args: Any) -> None:
        cast(Any, cls).addClassCleanup(function, *args)  # cls is a TestCase: the mixins come before it


def _overrides(cls: type, name: str) -> bool:
    """Whether ``cls`` defines its own ``name`` (not the mixin's do-nothing one)."""
    mixin = next(base for base in cls.__mro__ if base in (PostgresTestCase, AsyncPostgresTestCase))
    return getattr(getattr(cls, name), "__func__", None) is not getattr(getattr(mixin, name), "__func__", None)


def _forget(cls: type) -> None:
    if "_elefast_class_state" in cls.__dict__:
        delattr(cls, "_elefast_class_state")


class PostgresTestCase(_Settings, _TestCase):
    """Mixin for ``unittest.TestCase``: each test gets its own database.

    Put it before ``unittest.TestCase`` in the bases. Configure it with class
    attributes:

    - ``schema``: a :class:`~elefast.sync.Migrator` applied once to a template
      (``MetadataMigrator(Base.metadata)``, ``AlembicMigrator("alembic.ini")``),
      or None for empty databases.
    - ``database_url``: the server (default None: ``ELEFAST_DATABASE_URL``, else
      a throwaway local server, else Docker; see :mod:`elefast.provision`).
    - ``isolation``: ``"database"`` (default: a fresh clone per test) or
      ``"transaction"`` (one clone per class; each test runs in a transaction
      rolled back after it, ``self.session`` joins it with savepoints so code
      under test may ``commit()``; ``self.connection`` is that connection).
    - ``database_prefix``: the start of each database's name (default ``"elefast"``).
    - ``connect_timeout``: seconds to wait for the server in ``setUpClass`` (default 10).
    - ``sessionmaker_factory``: builds ``self.session``'s factory from the engine
      (default ``sqlalchemy.orm.sessionmaker``).
    - ``app_engines``: the app's own engines, steered onto each test's database
      (a tuple of ``Engine`` / ``AsyncEngine`` objects, Flask-SQLAlchemy ``db``
      objects, or ``"package.module:attribute"`` strings); in transaction mode they
      share the test's connection and transaction. See :mod:`elefast._testing.app_engines`.
    - ``extensions``: PostgreSQL extensions created in the template before ``schema``
      runs, e.g. ``("vector", "pg_trgm")``. See :mod:`elefast.extensions`.
    - ``extra_databases``: more databases per test, for apps with more than one:
      ``{"reports": AlembicMigrator("reports/alembic.ini")}`` gives each test
      ``self.databases["reports"]`` and ``self.sessions["reports"]`` (and, in transaction
      mode, ``self.connections["reports"]``), each with its own template, in the class's
      isolation mode; ``app_engines`` names an app engine of one as ``("reports", engine)``.
      See :mod:`elefast._testing.extra_databases`.
    - ``postgres_versions``: run the class once per PostgreSQL major version, each on
      a throwaway server of that version, e.g. ``(15, 18)`` (default:
      ``ELEFAST_POSTGRES_VERSIONS``, else none). See :mod:`elefast.provision.versions`.
    - ``database_url_env``: an environment variable (e.g. ``"DATABASE_URL"``) that
      holds the test database's URL, password included, during each test.
    - ``guard``: True to fail any connection a test makes to a database other than
      its own (default: ``ELEFAST_GUARD=1`` in the environment).

    Override the ``setUpTestData(cls, connection)`` classmethod to write rows once
    per class: they go into a per-class template, so every test starts with them.

    Each test has ``self.database`` (a :class:`~elefast.sync.Database`),
    ``self.engine`` and ``self.session`` (closed after the test).
    """

    database: Database
    engine: Engine
    session: Session
    connection: Connection

    @classmethod
    def setUpClass(cls) -> None:
        """Find the server and build the template(s) once, so problems show up early."""
        super().setUpClass()
        cls._elefast_class_set_up()

    @classmethod
    def setUpTestData(cls, connection: Connection) -> None:
        """Override to write rows every test of the class starts with (runs once per class)."""

    @classmethod
    def elefast_server(cls) -> DatabaseServer:
        """The process-wide :class:`DatabaseServer` for this class's URL and schema."""
        config = ClassConfig.of(cls, is_async=False)
        return SHARED.sync_server(cls._elefast_server_url(config), config.schema, config.connect_timeout)

    @classmethod
    def _elefast_provider(cls, config: ClassConfig) -> Tuple[SyncProvider, Callable[..., Any]]:
        server = cls.elefast_server()
        return SyncProvider(server), server.sessionmaker_factory

    @classmethod
    def _elefast_provider_for(cls, config: ClassConfig, schema: Any) -> Tuple[SyncProvider, Callable[..., Any]]:
        server = SHARED.sync_server(cls._elefast_server_url(config), schema, config.connect_timeout)
        return SyncProvider(server), server.sessionmaker_factory

    def _callSetUp(self) -> None:
        self._elefast_set_up()
        super()._callSetUp()  # type: ignore[misc]

    def _elefast_set_up(self) -> None:
        state = type(self)._elefast_class_set_up()
        self.addCleanup(_outcome.say_if_server_lost, self, state.provider.url)
        with _outcome.explaining_loss(state.provider.url):
            state.isolation.set_up_test(self, state)
            if state.extras:
                _extra_databases.set_up_test(self, state, state.extras)


class AsyncPostgresTestCase(_Settings, _AsyncTestCase):
    """Mixin for ``unittest.IsolatedAsyncioTestCase``: each test gets its own database.

    The same class attributes as :class:`PostgresTestCase` (``schema`` may be
    an :class:`~elefast.asyncio.AsyncMigrator` or a sync migrator). Each test
    has ``self.database`` (an :class:`~elefast.asyncio.AsyncDatabase`),
    ``self.engine`` (an ``AsyncEngine``, one per test since each test runs its
    own event loop) and ``self.session`` (an ``AsyncSession``, closed after the
    test); in transaction mode also ``self.connection`` (an ``AsyncConnection``).
    ``setUpTestData(cls, connection)`` may be a plain classmethod (a sync
    ``Connection``) or an ``async`` one (an ``AsyncConnection``).
    """

    database: AsyncDatabase
    engine: AsyncEngine
    session: AsyncSession
    connection: AsyncConnection
    _elefast_is_async = True

    @classmethod
    def setUpClass(cls) -> None:
        """Find the server and build the template(s) once, so problems show up early."""
        super().setUpClass()
        cls._elefast_class_set_up()

    @classmethod
    def setUpTestData(cls, connection: Any) -> None:
        """Override (sync or ``async``) to write rows every test of the class starts with."""

    @classmethod
    async def elefast_server(cls) -> AsyncDatabaseServer:
        """The process-wide :class:`AsyncDatabaseServer` for this class's URL and schema."""
        from elefast._engines import aio as _aio

        return await _aio.to_thread(cls._elefast_shared_server, ClassConfig.of(cls, is_async=True))

    @classmethod
    def _elefast_shared_server(cls, config: ClassConfig) -> AsyncDatabaseServer:
        # setUpClass has no event loop: readiness is checked on a loop of its own
        return SHARED.async_server(cls._elefast_server_url(config), config.schema, config.connect_timeout)

    @classmethod
    def _elefast_provider(cls, config: ClassConfig) -> Tuple[AsyncProvider, Callable[..., Any]]:
        server = cls._elefast_shared_server(config)
        return AsyncProvider(server), server.sessionmaker_factory

    @classmethod
    def _elefast_provider_for(cls, config: ClassConfig, schema: Any) -> Tuple[AsyncProvider, Callable[..., Any]]:
        server = SHARED.async_server(cls._elefast_server_url(config), schema, config.connect_timeout)
        return AsyncProvider(server), server.sessionmaker_factory

    def __getstate__(self) -> Dict[str, Any]:
        """Picklable (unittest-parallel sends tests to its workers): without the asyncio context."""
        state = dict(self.__dict__)
        state.pop("_asyncioTestContext", None)
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        if sys.version_info >= (3, 11):
            import contextvars

            self._asyncioTestContext = contextvars.copy_context()

    def _callSetUp(self) -> None:
        self._callAsync(self._elefast_set_up)  # type: ignore[attr-defined]
        super()._callSetUp()  # type: ignore[misc]

    async def _elefast_set_up(self) -> None:
        state = type(self)._elefast_class_set_up()
        self.addCleanup(_outcome.say_if_server_lost, self, state.provider.url)
        with _outcome.explaining_loss(state.provider.url):
            await state.isolation.set_up_test_async(self, state)
            if state.extras:
                await _extra_databases.set_up_test_async(self, state, state.extras)

