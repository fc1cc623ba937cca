"""What each test does with the app's engines (``app_engines``; resolved by :mod:`elefast._testing.app_engines`).

- database mode: :func:`steer_to_database` (and its async twin) points every engine's new
  connections at the test's database and empties the engine's pool before and after;
- transaction mode: :func:`share_connection` swaps each engine's pool for a sandbox whose
  connections all share the test's one connection, inside its transaction;
- either mode: engines a Flask-SQLAlchemy extension makes during the test are handled as they
  are made (:func:`watch_new_engines`).
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, Dict, List

from sqlalchemy import URL, Engine

from elefast import queries
from elefast._engines.steering import Steering, steering
from elefast._engines.urls import safe_url
from elefast._testing.app_engines import (
    _STAND_INS,
    STAND_IN_URL,
    AppEngine,
    AppEngineSpec,
    FlaskExtension,
    current,
)
from elefast.errors import ConfigurationError

__all__ = ["set_url_variable", "share_connection", "share_connection_async", "steer_to_database",
           "steer_to_database_async", "watch_new_engines"]


def watch_new_engines(test: Any, specs: List[AppEngineSpec], adopt: Callable[[AppEngine], None]) -> None:
    """During the test, each engine a Flask-SQLAlchemy extension makes (an app created in ``setUp``
    or in the test) is handed to ``adopt`` as it is made; one on another database (``sqlite://``)
    is made a PostgreSQL engine."""
    for spec in specs:
        if not isinstance(spec, FlaskExtension):
            continue
        extension = spec.extension
        make = getattr(extension, "_make_engine", None)
        if make is None:
            continue
        own = extension.__dict__.get("_make_engine")

        def made(bind_key: Any, options: Dict[str, Any], app: Any, _make: Any = make,
                 _label: str = spec.label, _extension: Any = extension) -> Engine:
            from sqlalchemy import create_engine
            from sqlalchemy.engine import make_url

            url = make_url(options["url"])
            if url.get_backend_name() == "postgresql":
                engine: Engine = _make(bind_key, options, app)
            else:  # the test config's sqlite://: a PostgreSQL engine for the test, the app's own after it
                own_engine: Engine = _make(bind_key, options, app)  # made, never connected by elefast
                kept = {key: value for key, value in options.items() if key in PORTABLE_OPTIONS}
                engine = _STAND_INS[own_engine] = create_engine(STAND_IN_URL, **kept)
                test.addCleanup(_give_back, _extension, app, bind_key, engine, own_engine)
            adopt(AppEngine(engine, False, f"{_label} (bind {bind_key!r}, {safe_url(url)}, made in the test)",
                            engine))
            queries.engine_made(engine)  # a query assertion running now counts it too
            return engine

        extension._make_engine = made
        test.addCleanup(_put_back_maker, extension, own)


#: Engine options that mean the same on PostgreSQL as on the app's own database (a stand-in keeps them).
PORTABLE_OPTIONS = ("echo", "echo_pool", "isolation_level", "json_serializer", "json_deserializer",
                    "execution_options", "pool_pre_ping", "pool_recycle", "hide_parameters", "logging_name")


def _give_back(extension: Any, app: Any, bind_key: Any, stand_in: Engine, own_engine: Engine) -> None:
    """After the test, an app made during it has its own (``sqlite://``) engine again."""
    binds = extension._app_engines.get(app)
    if binds is not None and binds.get(bind_key) is stand_in:
        binds[bind_key] = own_engine
    stand_in.dispose()


def _put_back_maker(extension: Any, own: Any) -> None:
    if own is None:
        extension.__dict__.pop("_make_engine", None)
    else:
        extension._make_engine = own


def stand_in(test: Any, engines: List[AppEngine]) -> None:
    """Put each stand-in engine in its app's place for the test (Flask-SQLAlchemy binds)."""
    for app_engine in engines:
        if app_engine.stands_in is not None:
            binds, key, original = app_engine.stands_in
            binds[key] = app_engine.engine
            test.addCleanup(binds.__setitem__, key, original)


def steer_to_database(test: Any, specs: List[AppEngineSpec], url: URL, owner: str = "app_engines") -> None:
    """Database mode, sync test: the engines connect to ``url`` until the test's cleanup."""
    engines = current(specs, owner)
    stand_in(test, engines)
    for app_engine in engines:
        _steer_one(test, app_engine, url)
    watch_new_engines(test, specs, lambda made: _steer_one(test, made, url))


def _steer_one(test: Any, app_engine: AppEngine, url: URL) -> None:
    engine, steer = app_engine.engine, steering(app_engine.engine)
    steer.outer = app_engine.outer
    engine.dispose(close=not app_engine.is_async)  # nothing pooled before the test serves it
    steer.point_at(url)
    test.addCleanup(_unsteer, app_engine, steer)


def _unsteer(app_engine: AppEngine, steer: Steering) -> None:
    steer.point_at(None)
    app_engine.engine.dispose(close=not app_engine.is_async)  # its connections go before the database does
    _report_unused(app_engine, steer)


async def steer_to_database_async(test: Any, specs: List[AppEngineSpec], url: URL,
                                  owner: str = "app_engines") -> None:
    """Database mode, async test: as :func:`steer_to_database`; async engines close on the test's loop."""
    engines = current(specs, owner)
    stand_in(test, engines)
    for app_engine in engines:
        steer = steering(app_engine.engine)
        steer.outer = app_engine.outer
        app_engine.engine.dispose(close=not app_engine.is_async)  # an earlier loop's connections: let go
        steer.point_at(url)
        test.addAsyncCleanup(_unsteer_async, app_engine, steer)
    watch_new_engines(test, specs, lambda made: _steer_one(test, made, url))


async def _unsteer_async(app_engine: AppEngine, steer: Steering) -> None:
    steer.point_at(None)
    if app_engine.is_async:
        await app_engine.outer.dispose()  # closed on the loop that opened them
    else:
        app_engine.engine.dispose()
    _report_unused(app_engine, steer)


def _report_unused(app_engine: AppEngine, steer: Steering) -> None:
    if not steer.connected:
        from elefast._base.log import logger

        logger.debug("app engine %s did not connect during the test", app_engine.label)


def share_connection(test: Any, specs: List[AppEngineSpec], connection: Any, url: URL, owner: str,
                     kept: Dict[str, Any]) -> None:
    """Transaction mode, sync test: every engine's connections share the test's, in its transaction.

    ``kept`` is the class's: its sandbox pools and savepoint tracking are made once (the
    class's engine serves every test) and pointed at each test's connection.
    """
    from elefast._testing.sandbox import Savepoints, ThreadTurns

    if "savepoints" not in kept:
        kept.update(turns=ThreadTurns(), savepoints=Savepoints(), pools=weakref.WeakKeyDictionary())
        kept["savepoints"].follow(connection.engine)  # every connection of the class's engine, once
    kept["savepoints"].open.clear()  # a new test, a new transaction
    dbapi_connection = connection.connection.dbapi_connection
    engines = current(specs, owner)
    stand_in(test, engines)
    for app_engine in engines:
        _share_one(test, app_engine, dbapi_connection, url, owner, kept)
    watch_new_engines(test, specs, lambda made: _share_one(test, made, dbapi_connection, url, owner, kept))


def _share_one(test: Any, app_engine: AppEngine, dbapi_connection: Any, url: URL, owner: str,
               kept: Dict[str, Any]) -> None:
    from elefast._testing.sandbox import SandboxPool

    if app_engine.is_async:
        raise ConfigurationError(
            f"{owner}.app_engines: {app_engine.label} is an AsyncEngine; in transaction mode it cannot share a "
            "sync test's connection. Use AsyncPostgresTestCase, or isolation = 'database'."
        )
    if _needs_first_connect(app_engine):  # the dialect learns the server on a real connection of its own
        steer = steering(app_engine.engine)
        steer.point_at(url)
        try:
            with app_engine.engine.connect():
                pass
        finally:
            steer.point_at(None)
            app_engine.engine.dispose()
    pools = kept["pools"]
    pool = pools.get(app_engine.engine)
    if pool is None or pool.like is not app_engine.engine.pool:
        pool = pools[app_engine.engine] = SandboxPool(dbapi_connection, kept["turns"], kept["savepoints"],
                                                      app_engine.engine.pool)
    pool.real = dbapi_connection
    _swap_pool(test.addCleanup, app_engine, pool)


async def share_connection_async(test: Any, specs: List[AppEngineSpec], connection: Any, url: URL,
                                 owner: str) -> None:
    """Transaction mode, async test: the engines' connections share the test's ``AsyncConnection``."""
    from elefast._testing.sandbox import SandboxPool, Savepoints, TaskTurns

    raw = await connection.get_raw_connection()
    turns, savepoints = TaskTurns(), Savepoints()
    savepoints.follow(connection.sync_connection)
    for spec in specs:
        if isinstance(spec, FlaskExtension):
            raise ConfigurationError(
                f"{owner}.app_engines: {spec.label} is a Flask-SQLAlchemy extension (sync engines); in transaction "
                "mode they cannot share an async test's connection. Use PostgresTestCase, or isolation = 'database'."
            )
    for app_engine in current(specs, owner):
        if not app_engine.is_async:
            raise ConfigurationError(
                f"{owner}.app_engines: {app_engine.label} is a sync Engine; in transaction mode it cannot share an "
                "async test's connection. Use PostgresTestCase, or isolation = 'database'."
            )
        if _needs_first_connect(app_engine):
            steer = steering(app_engine.engine)
            steer.point_at(url)
            try:
                async with app_engine.outer.connect():
                    pass
            finally:
                steer.point_at(None)
                await app_engine.outer.dispose()
        _swap_pool(test.addCleanup, app_engine, SandboxPool(raw.dbapi_connection, turns, savepoints,
                                                            app_engine.engine.pool))


def _needs_first_connect(app_engine: AppEngine) -> bool:
    """Whether the engine's dialect has never met a server (it initializes on its first connection)."""
    return getattr(app_engine.engine.dialect, "server_version_info", None) is None


def _swap_pool(add_cleanup: Any, app_engine: AppEngine, sandbox: Any) -> None:
    engine = app_engine.engine
    original = engine.pool
    engine.pool = sandbox

    def put_back() -> None:
        engine.pool = original

    add_cleanup(put_back)  # runs before the test's transaction is rolled back


def set_url_variable(test: Any, name: str, url: URL) -> None:
    """``os.environ[name]`` holds ``url`` (with its password) for the test; restored afterwards."""
    import os

    before = os.environ.get(name)
    os.environ[name] = url.render_as_string(hide_password=False)

    def restore() -> None:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before

    test.addCleanup(restore)
