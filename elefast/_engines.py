"""Turning what users pass (a URL string, a ``URL``, an engine) into engines.

Shared by the sync and async halves: URL parsing and defaults, driver checks,
hiding passwords, and carrying a server engine's options over to the engines
of the databases cloned on it.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Union

from sqlalchemy import URL, Engine, event, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from elefast.errors import DriverNotInstalledError, InvalidURLError, NotAURLError, WrongDriverKindError

#: Driver used for a bare ``postgresql://`` URL by the sync classes.
DEFAULT_SYNC_DRIVER = "psycopg"
#: Driver used for a bare ``postgresql://`` URL by the async classes.
DEFAULT_ASYNC_DRIVER = "asyncpg"

#: How to install each driver, for error messages.
_INSTALL_HINTS = {
    "psycopg": "pip install 'psycopg[binary]'",
    "asyncpg": "pip install 'elefast[asyncpg]'",
    "psycopg2": "pip install psycopg2-binary",
    "pg8000": "pip install pg8000",
    "psycopg_async": "pip install 'psycopg[binary]'",
}

_ADMIN_ENGINE_MARK = "_elefast_admin_engine"


def safe_url(url: Union[URL, str]) -> str:
    """Render ``url`` for humans with its password replaced by ``***``."""
    if isinstance(url, str):
        try:
            url = make_url(url)
        except Exception:
            return "<unparseable URL>"
    return url.render_as_string(hide_password=True)


def parse_url(value: Union[URL, str], *, is_async: bool, swap_kind: bool = False) -> URL:
    """Parse ``value`` into a PostgreSQL ``URL`` with an installed driver of the right kind.

    A bare ``postgresql://`` (or ``postgres://``) gets the default driver:
    psycopg for sync, asyncpg for async. Raises :class:`InvalidURLError` for
    anything that is not PostgreSQL or not parseable, and
    :class:`DriverNotInstalledError` with the pip line when the driver is missing.
    With ``swap_kind``, a driver of the wrong kind (asyncpg for sync code, say)
    is replaced by the default one, so one URL serves sync and async tests.
    """
    if isinstance(value, str):
        try:
            url = make_url(value)
        except (ArgumentError, ValueError) as error:  # ValueError: a port that is not a number
            why = "its port is not a number" if isinstance(error, ValueError) else "it is not a URL"
            raise InvalidURLError(
                f"Could not parse the database URL ({why}; the URL is not shown, it may hold a password). "
                "Use the form postgresql://user:password@host:5432/postgres."
            ) from None
    elif isinstance(value, URL):
        url = value
    else:
        raise NotAURLError(
            f"Expected a database URL (str or sqlalchemy.URL) or an engine, got {type(value).__name__}."
        )
    backend, _, driver = url.drivername.partition("+")
    if backend == "postgres":
        backend = "postgresql"
    if backend != "postgresql":
        raise InvalidURLError(
            f"elefast needs a PostgreSQL server, but {safe_url(url)} is for {backend!r}. "
            "Use a URL that starts with postgresql://."
        )
    if not driver:
        driver = DEFAULT_ASYNC_DRIVER if is_async else DEFAULT_SYNC_DRIVER
    url = url.set(drivername=f"postgresql+{driver}")
    try:
        check_driver(url, is_async=is_async)
    except WrongDriverKindError:
        if not swap_kind:
            raise
        default = DEFAULT_ASYNC_DRIVER if is_async else DEFAULT_SYNC_DRIVER
        url = url.set(drivername=f"postgresql+{default}")
        check_driver(url, is_async=is_async)
    return url


def check_driver(url: URL, *, is_async: bool) -> None:
    """Raise a clear error if ``url``'s driver is unknown, missing, or of the wrong kind."""
    driver = url.get_driver_name()
    try:
        dialect_cls = url.get_dialect(_is_async=is_async) if is_async else url.get_dialect()
    except NoSuchModuleError:
        raise InvalidURLError(
            f"Unknown PostgreSQL driver {driver!r} in {safe_url(url)}. "
            f"Use postgresql+{DEFAULT_SYNC_DRIVER}:// (sync) or postgresql+{DEFAULT_ASYNC_DRIVER}:// (async)."
        ) from None
    if bool(getattr(dialect_cls, "is_async", False)) != is_async:
        if is_async:
            raise WrongDriverKindError(
                f"{driver!r} is a sync driver, but the async API (AsyncDatabaseServer) needs an "
                f"async one. Use postgresql+{DEFAULT_ASYNC_DRIVER}://, or DatabaseServer for sync code."
            )
        raise WrongDriverKindError(
            f"{driver!r} is an async driver, but the sync API (DatabaseServer) needs a sync one. "
            f"Use postgresql+{DEFAULT_SYNC_DRIVER}://, or AsyncDatabaseServer for async code."
        )
    try:
        dialect_cls.import_dbapi()
    except ImportError as error:
        hint = _INSTALL_HINTS.get(driver, f"pip install {driver}")
        raise DriverNotInstalledError(
            f"The PostgreSQL driver {driver!r} is not installed ({error}). Install it: {hint}"
        ) from None


def remember_connect_args(engine: Engine) -> Dict[str, Any]:
    """Record the extra ``connect_args`` a user's engine connects with.

    SQLAlchemy keeps ``create_engine(connect_args=...)`` inside the closure of the
    pool's connect function: they are read from there when it has the shape SQLAlchemy 2
    gives it, and the ``do_connect`` event updates them at every connect. Returns a dict
    of the keys that do not come from the URL itself.
    """
    base_keys = set(engine.dialect.create_connect_args(engine.url)[1])
    seen: Dict[str, Any] = {k: v for k, v in _creator_params(engine).items() if k not in base_keys}

    def record(dialect: Any, conn_rec: Any, cargs: Any, cparams: Dict[str, Any]) -> None:
        seen.clear()
        seen.update({k: v for k, v in cparams.items() if k not in base_keys})

    event.listen(engine, "do_connect", record)
    return seen


def _creator_params(engine: Engine) -> Dict[str, Any]:
    """The keyword arguments the engine's pool connects with, when SQLAlchemy's own creator is in use."""
    creator = getattr(engine.pool, "_creator", None)
    code, closure = getattr(creator, "__code__", None), getattr(creator, "__closure__", None)
    if code is None or not closure or "cparams" not in code.co_freevars:
        return {}  # a custom creator: only the do_connect event can tell
    params = closure[code.co_freevars.index("cparams")].cell_contents
    return dict(params) if isinstance(params, dict) else {}


def mark_admin(engine: Engine) -> Engine:
    """Flag an engine elefast built itself (AUTOCOMMIT, NullPool) for admin work."""
    from elefast._budget import wait_when_full
    from elefast._guard import trust

    setattr(engine, _ADMIN_ENGINE_MARK, True)
    trust(engine.dialect)  # the guard lets its connections through
    if engine.dialect.driver == "psycopg":
        event.listen(engine, "do_connect", _name_admin_connection)
    wait_when_full(engine)  # a full server: wait for a slot (parallel workers free them all the time)
    return engine


def _name_admin_connection(dialect: Any, record: Any, cargs: Any, cparams: Dict[str, Any]) -> None:
    """``application_name = 'elefast:<pid>'`` unless the URL names one: other processes count
    elefast's processes by it to size their share of a small server's connections."""
    cparams.setdefault("application_name", f"elefast:{os.getpid()}")


def is_admin(engine: Engine) -> bool:
    """Whether elefast built ``engine`` for admin work (so its options are not the user's)."""
    return bool(getattr(engine, _ADMIN_ENGINE_MARK, False))


def load_dialect(is_async: bool) -> None:
    """Import SQLAlchemy's PostgreSQL dialect for the default driver (~20 ms, paid once per process)."""
    try:
        if is_async:
            import sqlalchemy.dialects.postgresql.asyncpg
        else:
            import sqlalchemy.dialects.postgresql.psycopg  # noqa: F401
    except ImportError:  # a missing driver is reported with its fix where the engine is made
        pass


def engine_options(engine: Engine, connect_args: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """``create_engine`` keyword arguments reproducing a user's engine's options.

    For an engine elefast built from a URL, nothing is copied: its AUTOCOMMIT
    and NullPool are for creating databases, and the engines of cloned
    databases use SQLAlchemy's defaults. For a user's own engine, the pool
    class and sizes, pre-ping, recycle, echo, isolation level, execution
    options, JSON (de)serializers and ``connect_args`` are carried over.
    """
    if is_admin(engine):
        return {}
    pool = engine.pool
    options: Dict[str, Any] = {
        "poolclass": type(pool),
        "echo": engine.echo,
        "echo_pool": pool.echo,
        "hide_parameters": engine.hide_parameters,
        "pool_pre_ping": getattr(pool, "_pre_ping", False),
        "pool_recycle": getattr(pool, "_recycle", -1),
        "pool_reset_on_return": getattr(pool, "_reset_on_return", "rollback"),
    }
    size = getattr(pool, "size", None)
    if hasattr(pool, "_max_overflow") and callable(size):
        options.update(pool_size=size(), max_overflow=pool._max_overflow, pool_timeout=pool.timeout())  # type: ignore[attr-defined]
    execution_options = dict(engine.get_execution_options())
    if execution_options:
        options["execution_options"] = execution_options
    isolation = getattr(engine.dialect, "_on_connect_isolation_level", None)
    if isolation is not None:
        options["isolation_level"] = isolation
    for name in ("json_serializer", "json_deserializer"):
        value = getattr(engine.dialect, f"_{name}", None)
        if value is not None:
            options[name] = value
    if getattr(engine.dialect, "use_native_hstore", True) is False:
        options["use_native_hstore"] = False
    if connect_args:
        options["connect_args"] = dict(connect_args)
    return options


_POOL_SIZE_OPTIONS = ("pool_size", "max_overflow", "pool_timeout", "poolclass")


def without_pool_sizes(options: Dict[str, Any]) -> Dict[str, Any]:
    """``options`` minus the pool class and sizes, for a NullPool engine."""
    return {k: v for k, v in options.items() if k not in _POOL_SIZE_OPTIONS}



class CheckoutTracker:
    """Remembers which pooled connections of an engine are checked out right now.

    When a test leaves a connection open, dropping its database ends the
    server session; :meth:`invalidate_all` then closes those connections on
    our side too, so they do not complain later when garbage-collected.
    """

    def __init__(self, engine: Engine) -> None:
        self._records: Dict[int, Any] = {}
        event.listen(engine, "checkout", self._checkout)
        event.listen(engine, "checkin", self._checkin)

    def _checkout(self, dbapi_connection: Any, record: Any, proxy: Any) -> None:
        self._records[id(record)] = record

    def _checkin(self, dbapi_connection: Any, record: Any) -> None:
        self._records.pop(id(record), None)

    @property
    def checked_out(self) -> int:
        """How many of the engine's connections are in use now."""
        return len(self._records)

    def invalidate_all(self) -> int:
        """Invalidate every connection still checked out; return how many there were."""
        records = list(self._records.values())
        self._records.clear()
        for record in records:
            try:
                record.invalidate()
            except Exception:  # already broken: nothing more to do
                pass
        return len(records)


_PORTABLE_QUERY = ("host", "port", "sslmode", "sslrootcert", "sslcert", "sslkey", "application_name", "options")


def sync_url(url: URL) -> URL:
    """``url`` with the default sync driver, keeping only query options every driver understands."""
    query = {k: v for k, v in url.query.items() if k in _PORTABLE_QUERY}
    return url.set(drivername=f"postgresql+{DEFAULT_SYNC_DRIVER}", query=query)
