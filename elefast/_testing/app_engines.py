"""The app's own engines (``app_engines``): steered onto each test's database.

An app that builds its engine at import time (``engine = create_engine(settings.URL)``)
keeps using that object, whatever imported it. elefast never replaces the object; it
changes where the object's connections go, for the length of one test:

- database mode: a ``do_connect`` hook rewrites the connection's host, port, database,
  user and password to the test's database (the app's driver and options stay); the
  engine's pool is emptied before and after the test, so no connection serves two tests;
- transaction mode: the engine's pool is swapped for a :class:`~elefast._testing.sandbox.SandboxPool`
  whose connections all share the test's one connection, inside its transaction.

Outside the class's tests the engine behaves as before. What ``app_engines`` may hold:
``Engine`` and ``AsyncEngine`` objects, Flask-SQLAlchemy extension objects (every engine
of every app and bind), and ``"package.module:attribute"`` import strings naming either.
"""

from __future__ import annotations

import importlib
import weakref
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Union

from sqlalchemy import Engine

from elefast._engines.urls import safe_url
from elefast.errors import ConfigurationError

__all__ = ["STAND_IN_URL", "AppEngine", "AppEngineSpec", "FlaskExtension", "check_spec", "current", "resolve"]

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


def _checked(app_engine: AppEngine, owner: str) -> AppEngine:
    dialect = app_engine.engine.dialect.name
    if dialect != "postgresql":
        raise ConfigurationError(
            f"{owner}.app_engines: {app_engine.label} is a {dialect} engine ({safe_url(app_engine.engine.url)}); "
            "elefast can only steer PostgreSQL engines. Give the app a postgresql:// URL in tests "
            "(any host and database: elefast sends its connections to each test's database)."
        )
    return app_engine
