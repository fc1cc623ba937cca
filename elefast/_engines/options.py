"""The engines elefast builds: its admin engines marked, a user's engine's options carried over.

An admin engine (AUTOCOMMIT, NullPool) is marked so that its options are never copied to a
test's engine, its dialect is known as elefast's own (:func:`is_elefasts`: the guard lets it
through), and it waits for a free slot on a full server. The engines of cloned databases get
the user's server engine's options (:func:`engine_options`), and :class:`CheckoutTracker`
knows which of their connections a test left open.
"""

from __future__ import annotations

import os
import weakref
from typing import Any, Dict, Optional

from sqlalchemy import Engine, event

from elefast._engines.budget import wait_when_full

_ADMIN_ENGINE_MARK = "_elefast_admin_engine"

#: The dialects of the admin engines elefast built (weakly held).
_ELEFASTS: weakref.WeakSet[Any] = weakref.WeakSet()

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
    setattr(engine, _ADMIN_ENGINE_MARK, True)
    _ELEFASTS.add(engine.dialect)  # the guard lets its connections through
    if engine.dialect.driver == "psycopg":
        event.listen(engine, "do_connect", _name_admin_connection)
    wait_when_full(engine)  # a full server: wait for a slot (parallel workers free them all the time)
    return engine


def _name_admin_connection(dialect: Any, record: Any, cargs: Any, cparams: Dict[str, Any]) -> None:
    """``application_name = 'elefast:<pid>'`` unless the URL names one: other processes count
    elefast's processes by it to size their share of a small server's connections."""
    cparams.setdefault("application_name", f"elefast:{os.getpid()}")


def is_elefasts(dialect: Any) -> bool:
    """Whether ``dialect`` belongs to an admin engine elefast built (its connections are elefast's own)."""
    return dialect in _ELEFASTS


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
