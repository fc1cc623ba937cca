"""elefast's pytest plugin: a fresh PostgreSQL database per test as fixtures.

Installed with elefast and registered through the ``pytest11`` entry point, so the
fixtures exist in every pytest run; nothing happens until a test asks for one. The
``PostgresTestCase`` mixins need none of this: pytest runs them as they are.

Fixtures (sync):

- ``elefast_schema`` (session): the migrator (or ``None``); override it in ``conftest.py``.
- ``elefast_server`` (session): a :class:`~elefast.sync.DatabaseServer` on the server
  :func:`elefast.provision.resolve` finds (``ELEFAST_DATABASE_URL``, else a throwaway local
  server, else Docker), with the schema's template.
- ``elefast_database``: a fresh :class:`~elefast.sync.Database` cloned from the template,
  dropped after the test.
- ``elefast_session``: a ``Session`` on it, closed after the test.
- ``elefast_app_engines`` (session): the app's own engines, ``()`` by default; override it to
  return what a class's ``app_engines`` would hold (engines, a Flask-SQLAlchemy ``db``,
  ``"package.module:attribute"`` strings), and during each test that asks for
  ``elefast_database`` (or the async one) their connections go to the test's database.

Async (need ``pytest-asyncio``; mark the tests ``@pytest.mark.asyncio``):
``elefast_async_server``, ``elefast_async_database``, ``elefast_async_session``.

With ``ELEFAST_LOG`` set, elefast's log lines of the run are printed in a section of pytest's
summary (pytest's own handlers show them only beside a failing test), unless pytest prints
them live (``--log-cli-level=INFO``).

::

    # conftest.py
    import pytest
    from elefast import MetadataMigrator
    from myapp.models import Base

    @pytest.fixture(scope="session")
    def elefast_schema():
        return MetadataMigrator(Base.metadata)

    # test_users.py
    def test_sign_up(elefast_session):
        elefast_session.add(User(email="ada@example.com"))
        elefast_session.commit()
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Iterator, List, Tuple

import pytest

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

    from elefast.asyncio import AsyncDatabase, AsyncDatabaseServer
    from elefast.sync import Database, DatabaseServer

__all__ = [
    "elefast_app_engines",
    "elefast_async_database",
    "elefast_async_server",
    "elefast_async_session",
    "elefast_database",
    "elefast_schema",
    "elefast_server",
    "elefast_session",
]

PREFIX = "elefast"
ENCODING = "utf8"
#: Seconds to wait for the server to answer.
CONNECT_TIMEOUT = 30.0


def _url(is_async: bool) -> Any:
    from elefast import provision
    from elefast._engines import urls as _urls

    return _urls.parse_url(provision.resolve(is_async=is_async, timeout=60), is_async=is_async, swap_kind=True)


@pytest.fixture(scope="session")
def elefast_schema() -> Any:
    """The schema every database starts with: ``None`` (empty). Override it in ``conftest.py``."""
    return None


@pytest.fixture(scope="session")
def elefast_server(elefast_schema: Any) -> Iterator[DatabaseServer]:
    """The session's :class:`~elefast.sync.DatabaseServer`, closed (templates dropped as usual) at the end."""
    from elefast.sync import DatabaseServer

    server = DatabaseServer(_url(is_async=False), schema=elefast_schema).ensure_is_ready(timeout=CONNECT_TIMEOUT)
    yield server
    server.close()


def _guard_if_wanted(cleanups: _Cleanups, database: str) -> None:
    """``ELEFAST_GUARD=1``: the test's connections anywhere but its database fail (as the mixins' guard)."""
    from elefast._testing import guard as _guard

    if _guard.guard_wanted(None):
        _guard.guard_test(cleanups, database, owner="elefast_database", fix=_guard.PYTEST_FIX)


class _Cleanups:
    """``addCleanup`` / ``addAsyncCleanup`` for a fixture, run last-in first-out at its teardown."""

    def __init__(self) -> None:
        self.steps: List[Tuple[Callable[..., Any], Tuple[Any, ...]]] = []

    def addCleanup(self, function: Callable[..., Any], *args: Any) -> None:
        self.steps.append((function, args))

    addAsyncCleanup = addCleanup

    def run(self) -> None:
        while self.steps:
            function, args = self.steps.pop()
            function(*args)

    async def run_async(self) -> None:
        import inspect

        while self.steps:
            function, args = self.steps.pop()
            result = function(*args)
            if inspect.isawaitable(result):
                await result


@pytest.fixture(scope="session")
def elefast_app_engines() -> Any:
    """The app's own engines, steered onto each test's database: ``()``. Override it in ``conftest.py``."""
    return ()


@pytest.fixture
def elefast_database(elefast_server: DatabaseServer, elefast_app_engines: Any) -> Iterator[Database]:
    """A fresh database cloned from the template (taken from the clone pool), dropped after the test."""
    from elefast._testing import app_engines as _app_engines
    from elefast._testing import app_steps as _app_steps
    from elefast._testing.provider import SyncProvider

    engines = _app_engines.resolve(elefast_app_engines or (), "elefast_app_engines")
    provider = SyncProvider(elefast_server)
    template = provider.template(PREFIX, ENCODING)
    database = provider.database(template, PREFIX, ENCODING, elefast_server.sessionmaker_factory)
    cleanups = _Cleanups()
    try:
        _app_steps.steer_to_database(cleanups, engines, database.url)
        _guard_if_wanted(cleanups, database.name)
        yield database
    finally:
        try:
            cleanups.run()  # the app's connections go before the database does
        finally:
            database.drop()


@pytest.fixture
def elefast_session(elefast_database: Database) -> Iterator[Session]:
    """A ``Session`` on the test's database, closed after the test."""
    session = elefast_database.session()
    try:
        yield session
    finally:
        session.close()


@pytest.fixture(scope="session")
def elefast_async_server(elefast_schema: Any) -> Iterator[AsyncDatabaseServer]:
    """The session's :class:`~elefast.asyncio.AsyncDatabaseServer` (asyncpg by default)."""
    from elefast._engines import aio as _aio
    from elefast.asyncio import AsyncDatabaseServer

    server = AsyncDatabaseServer(_url(is_async=True), schema=elefast_schema)
    _aio.run(server.ensure_is_ready(timeout=CONNECT_TIMEOUT))
    yield server
    _aio.run(server.close())


try:
    import pytest_asyncio

    HAVE_PYTEST_ASYNCIO = True
except ImportError:  # the async fixtures say what to install
    HAVE_PYTEST_ASYNCIO = False


if HAVE_PYTEST_ASYNCIO:

    @pytest_asyncio.fixture
    async def elefast_async_database(elefast_async_server: AsyncDatabaseServer,
                                     elefast_app_engines: Any) -> AsyncIterator[AsyncDatabase]:
        """A fresh database for an async test, dropped after it."""
        from elefast._engines import aio as _aio
        from elefast._testing import app_engines as _app_engines
        from elefast._testing import app_steps as _app_steps
        from elefast._testing.provider import AsyncProvider

        engines = _app_engines.resolve(elefast_app_engines or (), "elefast_app_engines")
        provider = AsyncProvider(elefast_async_server)
        template = await _aio.to_thread(provider.template, PREFIX, ENCODING)
        database = await provider.database(template, PREFIX, ENCODING, elefast_async_server.sessionmaker_factory)
        cleanups = _Cleanups()
        try:
            await _app_steps.steer_to_database_async(cleanups, engines, database.url)
            _guard_if_wanted(cleanups, database.name)
            yield database
        finally:
            try:
                await cleanups.run_async()
            finally:
                await database.drop()

    @pytest_asyncio.fixture
    async def elefast_async_session(elefast_async_database: AsyncDatabase) -> AsyncIterator[AsyncSession]:
        """An ``AsyncSession`` on the test's database, closed after the test."""
        session = elefast_async_database.session()
        try:
            yield session
        finally:
            await session.close()

else:

    @pytest.fixture
    def elefast_async_database() -> Any:
        """Needs pytest-asyncio."""
        pytest.fail("elefast's async fixtures need pytest-asyncio: pip install pytest-asyncio")

    @pytest.fixture
    def elefast_async_session() -> Any:
        """Needs pytest-asyncio."""
        pytest.fail("elefast's async fixtures need pytest-asyncio: pip install pytest-asyncio")


class _LogSection(logging.Handler):
    """elefast's log records of this run, printed in a section of pytest's summary."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


_SECTIONS: List[_LogSection] = []


def _live_logging(config: pytest.Config) -> bool:
    """Whether pytest prints log records as they come (``--log-cli-level``, ``log_cli = true``)."""
    try:
        return bool(config.getoption("log_cli_level", default=None) or config.getini("log_cli"))
    except ValueError:  # pytest's logging plugin is off (-p no:logging)
        return False


def pytest_configure(config: pytest.Config) -> None:
    """With ``ELEFAST_LOG`` set, collect elefast's log for the summary: pytest's handlers take the
    records (elefast's stderr handler stands aside for them) and show them only for failing tests."""
    from elefast._base import log as _log

    if not os.environ.get(_log.ENV_LOG, "").strip() or _live_logging(config) or _SECTIONS:
        return
    _log.configure_from_env()
    section = _LogSection()
    section.setFormatter(logging.Formatter("elefast %(levelname)s: %(message)s"))
    _log.logger.addHandler(section)
    _SECTIONS.append(section)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Print elefast's log of the run (``ELEFAST_LOG``), unless pytest printed it live."""
    from elefast._base import log as _log

    for section in _SECTIONS:
        if section.lines:
            terminalreporter.section(f"elefast log ({_log.ENV_LOG}={os.environ.get(_log.ENV_LOG, '').strip()})")
            for line in section.lines:
                terminalreporter.write_line(line)
