"""The app's own engines (``app_engines``): steered onto each test's database.

An app that builds its engine at import time (``engine = create_engine(settings.URL)``)
keeps using that object, whatever imported it. elefast never replaces the object; it
changes where the object's connections go, for the length of one test:

- database mode: a ``do_connect`` hook rewrites the connection's host, port, database,
  user and password to the test's database (the app's driver and options stay); the
  engine's pool is emptied before and after the test, so no connection serves two tests;
- transaction mode: the engine's pool is swapped for a :class:`~elefast._sandbox.SandboxPool`
  whose connections all share the test's one connection, inside its transaction.

Outside the class's tests the engine behaves as before. What ``app_engines`` may hold:
``Engine`` and ``AsyncEngine`` objects, Flask-SQLAlchemy extension objects (every engine
of every app and bind), and ``"package.module:attribute"`` import strings naming either.
"""

from __future__ import annotations

import importlib
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Union

from sqlalchemy import URL, Engine, event

from elefast._engines import safe_url
from elefast.errors import ConfigurationError

__all__ = ["AppEngine", "AppEngineSpec", "FlaskExtension", "check_spec", "current", "resolve", "steering"]

#: The keys of a driver's connect parameters that say where a connection goes.
IDENTITY_KEYS = ("host", "hostaddr", "port", "dbname", "database", "user", "password", "service", "dsn")


@dataclass(frozen=True)
class AppEngine:
    """One of the app's engines: its sync ``Engine`` (an ``AsyncEngine``'s ``sync_engine``)."""

    engine: Engine
    is_async: bool
    label: str
    outer: Any  # what the test steps call: the Engine or the AsyncEngine
    stands_in: Any = None  # (binds dict, key, the app's own engine): swapped in for each test


@dataclass(frozen=True)
class FlaskExtension:
    """A Flask-SQLAlchemy ``db``: its engines are looked up at each test (apps made in ``setUp``
    or ``setUpClass`` included), and those it makes during a test are steered as they are made."""

    extension: Any
    label: str


#: What a class's resolved ``app_engines`` holds.
AppEngineSpec = Union[AppEngine, FlaskExtension]


class Steering:
    """Where one engine's new connections go while a test runs (None: where the app said)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.target: Optional[Dict[str, Any]] = None
        self.target_url: Optional[URL] = None
        self.connected = 0  # connections made since the target was set
        event.listen(engine, "do_connect", self._redirect)

    def point_at(self, url: Optional[URL]) -> None:
        """Send new connections to ``url`` (the app's driver kept), or back where the app said."""
        if url is None:
            self.target = self.target_url = None
            return
        url = url.set(drivername=self.engine.url.drivername)
        params = self.engine.dialect.create_connect_args(url)[1]
        self.target = {key: value for key, value in params.items() if key in IDENTITY_KEYS}
        self.target_url, self.connected = url, 0

    def _redirect(self, dialect: Any, record: Any, cargs: List[Any], cparams: Dict[str, Any]) -> None:
        target = self.target
        if target is None:
            return
        for key in IDENTITY_KEYS:
            cparams.pop(key, None)
        cparams.update(target)
        self.connected += 1


_STEERING: weakref.WeakKeyDictionary[Engine, Steering] = weakref.WeakKeyDictionary()


def steering(engine: Engine) -> Steering:
    """The one :class:`Steering` of ``engine`` (made on first use)."""
    found = _STEERING.get(engine)
    if found is None:
        found = _STEERING[engine] = Steering(engine)
    return found


def is_steered(dialect: Any) -> bool:
    """Whether ``dialect`` belongs to an app engine elefast steers."""
    return any(engine.dialect is dialect for engine in list(_STEERING))


def check_spec(specs: Any, owner: str) -> None:
    """At class creation: ``app_engines`` is a tuple of engines, extension objects or import strings."""
    if specs is None:
        return
    if not isinstance(specs, (tuple, list)):
        raise ConfigurationError(f"{owner}.app_engines must be a tuple (engines, a Flask-SQLAlchemy db, or "
                                 f"'package.module:attribute' strings), not {type(specs).__name__}.")
    for spec in specs:
        if isinstance(spec, str) and ":" not in spec:
            raise ConfigurationError(f"{owner}.app_engines: {spec!r} is not an import string: write "
                                     f"'package.module:attribute' (a colon before the attribute).")


def resolve(specs: Iterable[Any], owner: str) -> List[AppEngineSpec]:
    """The engines ``specs`` name (in ``setUpClass``); a clear :class:`ConfigurationError` for bad ones."""
    found: List[AppEngineSpec] = []
    for spec in specs:
        label = spec if isinstance(spec, str) else type(spec).__name__
        value = _imported(spec, owner) if isinstance(spec, str) else spec
        for item in _engines_of(value, label, owner):
            if all(not _same(known, item) for known in found):
                found.append(item)
    return found


def _same(one: AppEngineSpec, other: AppEngineSpec) -> bool:
    if isinstance(one, AppEngine) and isinstance(other, AppEngine):
        return one.engine is other.engine
    if isinstance(one, FlaskExtension) and isinstance(other, FlaskExtension):
        return one.extension is other.extension
    return False


def current(specs: List[AppEngineSpec], owner: str) -> List[AppEngine]:
    """The engines to steer for one test: the class's engines, and every engine its Flask-SQLAlchemy
    extensions hold right now (for every app made so far, and every bind)."""
    engines: List[AppEngine] = []
    for spec in specs:
        found = [spec] if isinstance(spec, AppEngine) else _flask_engines(spec, owner)
        engines.extend(engine for engine in found if all(engine.engine is not known.engine for known in engines))
    return engines


def _imported(spec: str, owner: str) -> Any:
    module_name, _, attribute = spec.partition(":")
    try:
        value: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigurationError(f"{owner}.app_engines: {spec!r}: module {module_name!r} does not import "
                                 f"({error}).") from error
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise ConfigurationError(f"{owner}.app_engines: {spec!r}: {module_name} has no attribute "
                                     f"{attribute!r}.") from None
    return value


def _engines_of(value: Any, label: str, owner: str) -> List[AppEngineSpec]:
    if isinstance(value, Engine):
        return [_checked(AppEngine(value, False, label, value), owner)]
    sync_engine = getattr(value, "sync_engine", None)
    if isinstance(sync_engine, Engine) and type(value).__name__ == "AsyncEngine":
        return [_checked(AppEngine(sync_engine, True, label, value), owner)]
    if _is_flask_extension(value):
        extension = FlaskExtension(value, label)
        return [extension]
    raise ConfigurationError(f"{owner}.app_engines: {label} is a {type(value).__name__}, not an Engine, an "
                             f"AsyncEngine or a Flask-SQLAlchemy extension.")


def _is_flask_extension(value: Any) -> bool:
    return isinstance(getattr(value, "_app_engines", None), weakref.WeakKeyDictionary) and hasattr(value, "session")


def _flask_engines(extension: FlaskExtension, owner: str) -> List[AppEngine]:
    per_app = extension.extension._app_engines  # Flask-SQLAlchemy 3: {app: {bind key: engine}}
    return [_flask_engine(binds, key, extension.label, owner)
            for binds in list(per_app.values()) for key in list(binds)]


#: The PostgreSQL engine that stands in for each of the app's engines on another database.
_STAND_INS: weakref.WeakKeyDictionary[Engine, Engine] = weakref.WeakKeyDictionary()
STAND_IN_URL = "postgresql+psycopg://elefast@stand-in.invalid/stand_in"  # steered, never used as is


def _flask_engine(binds: Dict[Any, Engine], key: Any, label: str, owner: str) -> AppEngine:
    """One bind of a Flask-SQLAlchemy app; one on another database (a test config on ``sqlite://``)
    gets a PostgreSQL engine that stands in for it during each test."""
    from sqlalchemy import create_engine

    engine = binds[key]
    where = f"{label} (bind {key!r}, {safe_url(engine.url)})"
    if engine.dialect.name == "postgresql":
        return _checked(AppEngine(engine, False, where, engine), owner)
    stand_in = _STAND_INS.get(engine)
    if stand_in is None:
        stand_in = _STAND_INS[engine] = create_engine(STAND_IN_URL, echo=engine.echo)
    return AppEngine(stand_in, False, where, stand_in, stands_in=(binds, key, engine))


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
                 _label: str = spec.label) -> Engine:
            from sqlalchemy import create_engine
            from sqlalchemy.engine import make_url

            url = make_url(options["url"])
            if url.get_backend_name() == "postgresql":
                engine: Engine = _make(bind_key, options, app)
            else:  # the test config's sqlite:// (its pool and connect options are SQLite's: not kept)
                engine = create_engine(STAND_IN_URL, echo=options.get("echo", False))
            adopt(AppEngine(engine, False, f"{_label} (bind {bind_key!r}, {safe_url(url)}, made in the test)",
                            engine))
            return engine

        extension._make_engine = made
        test.addCleanup(_put_back_maker, extension, own)


def _put_back_maker(extension: Any, own: Any) -> None:
    if own is None:
        extension.__dict__.pop("_make_engine", None)
    else:
        extension._make_engine = own


def _checked(app_engine: AppEngine, owner: str) -> AppEngine:
    dialect = app_engine.engine.dialect.name
    if dialect != "postgresql":
        raise ConfigurationError(
            f"{owner}.app_engines: {app_engine.label} is a {dialect} engine ({safe_url(app_engine.engine.url)}); "
            "elefast can only steer PostgreSQL engines. Give the app a postgresql:// URL in tests "
            "(any host and database: elefast sends its connections to each test's database)."
        )
    return app_engine


# -- each test ------------------------------------------------------------------------


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
        from elefast._logging import logger

        logger.debug("app engine %s did not connect during the test", app_engine.label)


def share_connection(test: Any, specs: List[AppEngineSpec], connection: Any, url: URL, owner: str,
                     kept: Dict[str, Any]) -> None:
    """Transaction mode, sync test: every engine's connections share the test's, in its transaction.

    ``kept`` is the class's: its sandbox pools and savepoint tracking are made once (the
    class's engine serves every test) and pointed at each test's connection.
    """
    from elefast._sandbox import Savepoints, ThreadTurns

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
    from elefast._sandbox import SandboxPool

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
    from elefast._sandbox import SandboxPool, Savepoints, TaskTurns

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
