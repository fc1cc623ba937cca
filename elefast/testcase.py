"""``unittest`` mixins: a fresh, migrated PostgreSQL database for every test.

::

    class UserTests(PostgresTestCase, unittest.TestCase):
        schema = MetadataMigrator(Base.metadata)

        def test_signup(self):
            self.session.add(User(name="ada"))
            self.session.commit()

The server and its template are shared by every class of the process that uses
the same server and the same ``schema`` object. With ``isolation = "database"``
(the default) each test gets its own clone, taken from a pool that a background
thread fills ahead and drains behind. With ``isolation = "transaction"`` the
class gets one clone and each test runs inside a transaction rolled back after
it. Everything a test gets is registered with ``addCleanup`` the moment it
exists, so a failing ``setUp``, a test that leaves connections or transactions
open, or a subclass that forgets ``super().setUp()`` leaks nothing.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Dict, Iterator, Optional, Tuple, Union

from sqlalchemy import URL, Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from elefast import _engines, _sql, provision
from elefast.errors import ConfigurationError, ElefastError, ServerLostError
from elefast.sync import Database, DatabaseServer, Migrator

if TYPE_CHECKING:  # imported when an async test case runs: sync suites skip sqlalchemy.ext.asyncio
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

    from elefast.asyncio import AsyncDatabase, AsyncDatabaseServer, AsyncMigrator

__all__ = ["AsyncPostgresTestCase", "PostgresTestCase"]

ISOLATION_MODES = ("database", "transaction")
ENCODING = "utf8"


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


@dataclass
class _ClassState:
    """What one test class shares between its tests, in one process."""

    server: Any
    template: Optional[str]
    pid: int
    clone: Optional[str] = None  # transaction mode: the class's database
    clone_database: Any = None


def _forget(cls: Any) -> None:
    if "_elefast_class_state" in cls.__dict__:
        delattr(cls, "_elefast_class_state")


def _check_isolation(cls: Any) -> str:
    if cls.isolation not in ISOLATION_MODES:
        raise ConfigurationError(
            f"{cls.__name__}.isolation = {cls.isolation!r}: use 'database' (a fresh database per test) "
            "or 'transaction' (one database per class, each test rolled back)."
        )
    return str(cls.isolation)


def _overrides_set_up_test_data(cls: Any, base: Any) -> bool:
    return getattr(cls.setUpTestData, "__func__", None) is not getattr(base.setUpTestData, "__func__", None)


class _Settings:
    """The class attributes both mixins read; documented on the mixins."""

    schema: ClassVar[Any] = None
    database_url: ClassVar[Optional[Union[str, URL]]] = None
    isolation: ClassVar[str] = "database"
    database_prefix: ClassVar[str] = _sql.DEFAULT_PREFIX
    connect_timeout: ClassVar[float] = 10.0
    sessionmaker_factory: ClassVar[Optional[Callable[..., Any]]] = None

    @classmethod
    def _elefast_state(cls) -> Optional[_ClassState]:
        state = cls.__dict__.get("_elefast_class_state")
        return state if state is not None and state.pid == os.getpid() else None

    @classmethod
    def _elefast_class_template(cls, server: Any, template: Optional[str], base: type) -> Optional[str]:
        """The class's own template when it overrides ``setUpTestData`` (dropped after the class)."""
        if not _overrides_set_up_test_data(cls, base):
            return template
        own = server._class_template(template, cls.database_prefix, ENCODING, cls.setUpTestData)  # type: ignore[attr-defined]
        cls.addClassCleanup(server._retire_class_template, own)  # type: ignore[attr-defined]
        return str(own)

    @classmethod
    def _elefast_remember(cls, state: _ClassState) -> None:
        """Keep ``state`` for the class's tests; forgotten by the class cleanup (a rerun starts anew)."""
        cls._elefast_class_state = state  # type: ignore[attr-defined]
        cls.addClassCleanup(_forget, cls)  # type: ignore[attr-defined]


class PostgresTestCase(_Settings):
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
        super().setUpClass()  # type: ignore[misc]
        cls._elefast_class_set_up()

    @classmethod
    def setUpTestData(cls, connection: Connection) -> None:
        """Override to write rows every test of the class starts with (runs once per class)."""

    @classmethod
    def elefast_server(cls) -> DatabaseServer:
        """The process-wide :class:`DatabaseServer` for this class's URL and schema."""
        url = _server_url(cls, is_async=False)
        schema: Optional[Migrator] = cls.schema

        def make() -> DatabaseServer:
            return DatabaseServer(url, schema=schema).ensure_is_ready(timeout=cls.connect_timeout)

        server: DatabaseServer = _SHARED.get(_key("sync", url, schema), make)
        return server

    @classmethod
    def _elefast_class_set_up(cls) -> _ClassState:
        state = cls._elefast_state()
        if state is not None:
            return state
        isolation = _check_isolation(cls)
        server = cls.elefast_server()
        template = server._template(cls.database_prefix, ENCODING)
        template = cls._elefast_class_template(server, template, PostgresTestCase)
        state = _ClassState(server, template, os.getpid())
        if isolation == "transaction":
            database = server._pooled_database(template, cls.database_prefix, ENCODING,
                                               cls._elefast_sessionmaker(server), ahead=False)
            cls.addClassCleanup(database.drop)  # type: ignore[attr-defined]
            state.clone_database = database
        cls._elefast_remember(state)
        return state

    @classmethod
    def _elefast_sessionmaker(cls, server: Any) -> Callable[..., Any]:
        return cls.sessionmaker_factory or server.sessionmaker_factory  # type: ignore[no-any-return]

    def _callSetUp(self) -> None:
        self._elefast_set_up()
        super()._callSetUp()  # type: ignore[misc]

    def _elefast_set_up(self) -> None:
        state = type(self)._elefast_class_set_up()
        self.addCleanup(_say_if_server_lost, self, state.server.url)  # type: ignore[attr-defined]
        with _explaining_loss(state.server.url):
            self._elefast_give_database(state)

    def _elefast_give_database(self, state: _ClassState) -> None:
        factory = self._elefast_sessionmaker(state.server)
        if state.clone_database is None:
            database = state.server._pooled_database(state.template, self.database_prefix, ENCODING, factory)
            self.addCleanup(_finish, self, database, state.server._keep)  # type: ignore[attr-defined]
            self.database, self.engine = database, database.engine
            self.session = database.session()
            self.addCleanup(self.session.close)  # type: ignore[attr-defined]
            return
        database = state.clone_database
        self.database, self.engine = database, database.engine
        self.connection = database.engine.connect()
        self.addCleanup(self.connection.close)  # type: ignore[attr-defined]
        transaction = self.connection.begin()
        self.addCleanup(_rollback, transaction)  # type: ignore[attr-defined]
        self.session = _joined_session(factory, database.engine, self.connection)
        self.addCleanup(self.session.close)  # type: ignore[attr-defined]


#: Set to 1 to keep the database of every failing test (database mode) for inspection.
ENV_KEEP_FAILED = "ELEFAST_KEEP_FAILED"


def _keep_failed(test: Any) -> bool:
    """Whether ``test`` failed and ``ELEFAST_KEEP_FAILED`` asks to keep its database."""
    if os.environ.get(ENV_KEEP_FAILED, "").strip().lower() not in ("1", "true", "yes", "on"):
        return False
    return _failed(test)


def _failed(test: Any) -> bool:
    """Whether the running ``test`` has failed so far (asked from one of its cleanups)."""
    outcome = getattr(test, "_outcome", None)  # unittest's record of the running test
    if outcome is None:
        return False
    errors = getattr(outcome, "errors", None)  # Python < 3.11: reported after the cleanups
    if errors is not None:
        return any(exc_info is not None for _, exc_info in errors)
    result = getattr(outcome, "result", None)  # Python >= 3.11: reported at once
    failures, errors = getattr(result, "failures", None), getattr(result, "errors", None)
    if not isinstance(failures, list) or not isinstance(errors, list):  # pytest, stestr: their own results
        return not getattr(outcome, "success", True)
    return any(failed is test for failed, _ in failures + errors)


@contextlib.contextmanager
def _explaining_loss(url: URL) -> Iterator[None]:
    """Turn a failure caused by the server going away into a :class:`ServerLostError` saying so."""
    try:
        yield
    except ElefastError:
        raise
    except Exception as error:
        from elefast.provision.lost import explain_lost

        message = explain_lost(url)
        if message is not None:
            raise ServerLostError(message) from error
        raise


def _say_if_server_lost(test: Any, url: URL) -> None:
    """A test's last cleanup: when it failed because the server went away, add an error saying so."""
    if _failed(test):
        from elefast.provision.lost import explain_lost

        message = explain_lost(url)
        if message is not None:
            raise ServerLostError(message)


def _report_kept(test: Any, database: Any) -> None:
    url = database.url.set(drivername="postgresql").render_as_string(hide_password=True)
    print(f"\nelefast kept the database of the failing test {test.id()}: {database.name}\n"
          f"    psql '{url}'\n"
          f"  (drop it when done: DROP DATABASE \"{database.name}\"; the sweeper never touches it)",
          file=sys.stderr)


def _finish(test: Any, database: Database, keep: Callable[[str], None]) -> None:
    """The test's database goes back to the pool to be dropped, or is kept if it failed and asked."""
    if _keep_failed(test):
        database._on_drop = keep
        database.drop()
        _report_kept(test, database)
    else:
        database.drop()


async def _finish_async(test: Any, database: Any, keep: Callable[[str], None]) -> None:
    if _keep_failed(test):
        database._on_drop = keep
        await database.drop()
        _report_kept(test, database)
    else:
        await database.drop()


def _rollback(transaction: Any) -> None:
    if transaction.is_active:
        transaction.rollback()


def _joined_session(factory: Callable[..., Any], engine: Any, connection: Any) -> Any:
    """A session on ``connection`` that turns its commits into savepoints of the test's transaction."""
    maker = factory(engine)
    if isinstance(maker, sessionmaker) or (hasattr(maker, "class_") and hasattr(maker, "kw")):
        return maker(bind=connection, join_transaction_mode="create_savepoint")
    from sqlalchemy.orm import Session as SyncSession

    return SyncSession(bind=connection, join_transaction_mode="create_savepoint")


class AsyncPostgresTestCase(_Settings):
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

    @classmethod
    def setUpClass(cls) -> None:
        """Find the server and build the template(s) once, so problems show up early."""
        super().setUpClass()  # type: ignore[misc]
        cls._elefast_class_set_up()

    @classmethod
    def setUpTestData(cls, connection: Any) -> None:
        """Override (sync or ``async``) to write rows every test of the class starts with."""

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
        return server

    @classmethod
    def _elefast_class_set_up(cls) -> _ClassState:
        """Runs in ``setUpClass`` (no event loop yet): the async parts run on a loop of their own."""
        state = cls._elefast_state()
        if state is not None:
            return state
        isolation = _check_isolation(cls)

        async def prepare() -> Tuple[Any, Optional[str]]:
            server = await cls.elefast_server()
            return server, await server._template(cls.database_prefix, ENCODING)

        from elefast.asyncio import _run_for_result

        server, template = _run_for_result(prepare())
        template = cls._elefast_class_template(server, template, AsyncPostgresTestCase)
        state = _ClassState(server, template, os.getpid())
        if isolation == "transaction":
            pool = server._pool()
            state.clone, _ = pool.take(template, cls.database_prefix, ENCODING, ahead=False)
            cls.addClassCleanup(pool.release, state.clone)  # type: ignore[attr-defined]
        cls._elefast_remember(state)
        return state

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
        self.addCleanup(_say_if_server_lost, self, state.server.url)  # type: ignore[attr-defined]
        with _explaining_loss(state.server.url):
            await self._elefast_give_database(state)

    async def _elefast_give_database(self, state: _ClassState) -> None:
        from sqlalchemy.ext.asyncio import AsyncSession

        from elefast.asyncio import AsyncDatabase

        server = state.server
        factory = self.sessionmaker_factory or server.sessionmaker_factory
        if state.clone is None:
            database = await server._pooled_database(state.template, self.database_prefix, ENCODING, factory)
            self.addAsyncCleanup(_finish_async, self, database, server._sync_admin()._keep)  # type: ignore[attr-defined]
            self.database, self.engine = database, database.engine
            self.session = database.session()
            self.addAsyncCleanup(self.session.close)  # type: ignore[attr-defined]
            return
        database = AsyncDatabase(server._database_engine(state.clone), server, factory)
        database._on_drop = _keep  # the class's clone outlives the test: only the engine goes
        self.addAsyncCleanup(database.drop)  # type: ignore[attr-defined]
        self.database, self.engine = database, database.engine
        self.connection = await database.engine.connect()
        self.addAsyncCleanup(self.connection.close)  # type: ignore[attr-defined]
        transaction = await self.connection.begin()
        self.addAsyncCleanup(_rollback_async, transaction)  # type: ignore[attr-defined]
        maker = factory(database.engine)
        if hasattr(maker, "class_") and hasattr(maker, "kw"):
            self.session = maker(bind=self.connection, join_transaction_mode="create_savepoint")
        else:
            self.session = AsyncSession(bind=self.connection, join_transaction_mode="create_savepoint")
        self.addAsyncCleanup(self.session.close)  # type: ignore[attr-defined]


def _keep(name: str) -> None:
    """``_on_drop`` for a database that must not be dropped with its engine."""


async def _rollback_async(transaction: Any) -> None:
    if transaction.is_active:
        await transaction.rollback()


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
