"""The two isolation modes as two strategies, used by both mixins.

- :class:`DatabaseIsolation` (``"database"``): every test gets a fresh clone of the
  class's template from the pool; it goes back to be dropped after the test.
- :class:`TransactionIsolation` (``"transaction"``): the class gets one clone; each test
  runs inside a transaction on ``self.connection`` that is rolled back after it, and
  ``self.session`` joins it with savepoints, so code under test may ``commit()``.

A strategy sets up the class once (:meth:`Isolation.set_up_class`) and each test
(:meth:`Isolation.set_up_test`, or :meth:`Isolation.set_up_test_async` for
``IsolatedAsyncioTestCase``), registering every cleanup the moment its resource exists.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Union

from elefast._testing import app_steps as _app_steps
from elefast._testing import guard as _guard
from elefast._testing import outcome as _outcome
from elefast._testing.provider import AsyncProvider, SyncProvider
from elefast.errors import ConfigurationError

__all__ = ["MODES", "ClassState", "DatabaseIsolation", "Isolation", "TransactionIsolation", "isolation_named"]

ENCODING = "utf8"


@dataclass
class ClassState:
    """What one test class shares between its tests, in one process."""

    provider: Union[SyncProvider, AsyncProvider]
    template: Optional[str]
    prefix: str
    sessionmaker_factory: Callable[..., Any]
    isolation: Isolation
    pid: int = 0
    clone: Optional[str] = None  # transaction mode: the class's database
    clone_database: Any = None  # transaction mode, sync: its Database (the engine outlives the tests)
    app_engines: List[Any] = field(default_factory=list)  # resolved _app_engines.AppEngine objects
    url_env: Optional[str] = None
    guard: bool = False
    owner: str = ""
    sandbox: Dict[str, Any] = field(default_factory=dict)  # transaction mode, sync: the app engines' sandbox
    extras: List[Any] = field(default_factory=list)  # the class's extra databases (_extra_databases.Extra)

    def __post_init__(self) -> None:
        self.pid = os.getpid()


class Isolation:
    """How the tests of a class are kept apart."""

    name = ""

    def set_up_class(self, cls: Any, state: ClassState) -> None:
        """Once per class, in ``setUpClass`` (no event loop runs there)."""

    def set_up_test(self, test: Any, state: ClassState) -> None:
        """Give a ``unittest.TestCase`` test its ``database``, ``engine`` and ``session``."""
        raise NotImplementedError

    async def set_up_test_async(self, test: Any, state: ClassState) -> None:
        """Give an ``IsolatedAsyncioTestCase`` test its ``database``, ``engine`` and ``session``."""
        raise NotImplementedError


class DatabaseIsolation(Isolation):
    """A fresh clone per test."""

    name = "database"

    def set_up_test(self, test: Any, state: ClassState) -> None:
        provider = state.provider
        assert isinstance(provider, SyncProvider)
        database = provider.database(state.template, state.prefix, ENCODING, state.sessionmaker_factory)
        test.addCleanup(_outcome.finish, test, database)
        test.database, test.engine = database, database.engine
        test.session = database.session()
        test.addCleanup(test.session.close)
        _app_steps.steer_to_database(test, state.app_engines, database.url, state.owner)
        _around_test(test, state, database.url)

    async def set_up_test_async(self, test: Any, state: ClassState) -> None:
        provider = state.provider
        assert isinstance(provider, AsyncProvider)
        database = await provider.database(state.template, state.prefix, ENCODING, state.sessionmaker_factory)
        test.addAsyncCleanup(_outcome.finish_async, test, database)
        test.database, test.engine = database, database.engine
        test.session = database.session()
        test.addAsyncCleanup(test.session.close)
        await _app_steps.steer_to_database_async(test, state.app_engines, database.url, state.owner)
        _around_test(test, state, database.url)


class TransactionIsolation(Isolation):
    """One clone per class; each test in a transaction rolled back after it."""

    name = "transaction"

    def set_up_class(self, cls: Any, state: ClassState) -> None:
        state.clone = state.provider.clone(state.template, state.prefix, ENCODING)
        cls.addClassCleanup(state.provider.release, state.clone)
        if isinstance(state.provider, SyncProvider):  # one engine for the class: its pool serves every test
            state.clone_database = state.provider.database_on(state.clone, state.sessionmaker_factory)
            cls.addClassCleanup(state.clone_database.drop)  # runs first: the engine goes before the clone

    def set_up_test(self, test: Any, state: ClassState) -> None:
        database = state.clone_database
        assert database is not None
        test.database, test.engine = database, database.engine
        test.connection = database.engine.connect()
        test.addCleanup(test.connection.close)
        transaction = test.connection.begin()
        test.addCleanup(_rollback, transaction)
        test.session = _joined_session(database.sessionmaker, test.connection)  # the class's maker: made once
        test.addCleanup(test.session.close)
        if state.app_engines:
            _app_steps.share_connection(test, state.app_engines, test.connection, database.url, state.owner,
                                          state.sandbox)
        _around_test(test, state, database.url)

    async def set_up_test_async(self, test: Any, state: ClassState) -> None:
        provider = state.provider
        assert isinstance(provider, AsyncProvider) and state.clone is not None
        database = provider.database_on(state.clone, state.sessionmaker_factory)  # an engine per test: per loop
        test.addAsyncCleanup(database.drop)
        test.database, test.engine = database, database.engine
        test.connection = await database.engine.connect()
        test.addAsyncCleanup(test.connection.close)
        transaction = await test.connection.begin()
        test.addAsyncCleanup(_rollback_async, transaction)
        test.session = _joined_session(database.sessionmaker, test.connection, is_async=True)
        test.addAsyncCleanup(test.session.close)
        if state.app_engines:
            await _app_steps.share_connection_async(test, state.app_engines, test.connection, database.url,
                                                      state.owner)
        _around_test(test, state, database.url)


def _around_test(test: Any, state: ClassState, url: Any) -> None:
    """The last steps of a test's set-up: its URL in the class's variable, the guard."""
    if state.url_env:
        _app_steps.set_url_variable(test, state.url_env, url)
    if state.guard:
        _guard.guard_test(test, url.database)


def _rollback(transaction: Any) -> None:
    if transaction.is_active:
        transaction.rollback()


async def _rollback_async(transaction: Any) -> None:
    if transaction.is_active:
        await transaction.rollback()


def _joined_session(maker: Any, connection: Any, is_async: bool = False) -> Any:
    """A session on ``connection`` that turns its commits into savepoints of the test's transaction.

    ``maker`` is the database's (``sessionmaker_factory(engine)``, made once with the engine,
    not per test: each ``sessionmaker`` makes a class). A ``sessionmaker`` (or
    ``async_sessionmaker``) keeps its options; any other factory's result cannot be rebound,
    so a plain session is made instead.
    """
    if hasattr(maker, "class_") and hasattr(maker, "kw"):
        return maker(bind=connection, join_transaction_mode="create_savepoint")
    if is_async:
        from sqlalchemy.ext.asyncio import AsyncSession

        return AsyncSession(bind=connection, join_transaction_mode="create_savepoint")
    from sqlalchemy.orm import Session

    return Session(bind=connection, join_transaction_mode="create_savepoint")


#: The isolation modes by name.
MODES: Dict[str, Isolation] = {mode.name: mode for mode in (DatabaseIsolation(), TransactionIsolation())}


def isolation_named(value: Any, owner: str) -> Isolation:
    """The mode called ``value``, or a :class:`ConfigurationError` naming the choices (and the near miss)."""
    mode = MODES.get(value) if isinstance(value, str) else None
    if mode is not None:
        return mode
    close = difflib.get_close_matches(str(value), list(MODES), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigurationError(
        f"{owner}.isolation = {value!r}: use 'database' (a fresh database per test) "
        f"or 'transaction' (one database per class, each test rolled back).{hint}"
    )
