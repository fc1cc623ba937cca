"""What the sync and async public classes share: written once, inherited by both.

:class:`DatabaseBase` is the state of a ``Database`` / ``AsyncDatabase`` (engine, server,
name, session factory, what ``drop()`` does); :class:`ServerBase` the state of a
``DatabaseServer`` / ``AsyncDatabaseServer`` (the engine, the checked schema, the admin
core). The public classes add only what differs: ``with`` or ``async with``, and
methods that return values or coroutines.
"""

from __future__ import annotations

from typing import Any, Callable, Generic, Optional, Tuple, TypeVar

from sqlalchemy import URL, Engine

from elefast._base import sql as _sql
from elefast._engines import options as _options
from elefast._engines import urls as _urls
from elefast._engines.kinds import EngineKind
from elefast._server.core import ServerCore, core_of
from elefast.migrators import check_schema

__all__ = ["DatabaseBase", "ServerBase"]

E = TypeVar("E")  # Engine or AsyncEngine
S = TypeVar("S")  # Session or AsyncSession


class DatabaseBase(Generic[E, S]):
    """The state of a database elefast created, for either kind of engine."""

    def __init__(self, engine: E, server: Any, sessionmaker_factory: Callable[[E], Callable[[], S]],
                 on_drop: Optional[Callable[[str], Any]], sync_engine: Engine) -> None:
        self.engine = engine
        self.server = server
        self.sessionmaker = sessionmaker_factory(engine)
        name = sync_engine.url.database
        if not name:
            raise ValueError("The engine's URL names no database.")
        self.name: str = name
        """The name of the database."""
        self._dropped = False
        self._kept = False
        self._sync_engine = sync_engine
        self._checkouts = _options.CheckoutTracker(sync_engine)
        self._on_drop = on_drop or server.drop_database

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, url={_urls.safe_url(self.url)!r})"

    @property
    def url(self) -> URL:
        """The engine URL, allowing you to create your own engines with custom options."""
        return self._sync_engine.url

    def session(self) -> S:
        """Creates a new ORM session.

        You can use the ``sessionmaker_factory`` parameter of the constructor to
        customize options.
        """
        return self.sessionmaker()

    def _keep(self) -> None:
        """Mark the database kept (once; never after it was dropped)."""
        if not self._kept and not self._dropped:
            core_of(self.server).keep(self.name)
            self._kept = True

    def _hand_back(self) -> Any:
        """What ``drop()`` does once the engine is disposed: ``on_drop(name)``, unless kept."""
        return None if self._kept else self._on_drop(self.name)

    def _begin_drop(self) -> bool:
        """Mark the database dropped and end the connections still checked out; False if done already."""
        if self._dropped:
            return False
        self._dropped = True
        self._checkouts.invalidate_all()
        return True


class ServerBase(Generic[E]):
    """The state of a server object, for either kind of engine."""

    def __init__(self, engine: E, schema: Any, debug: bool, sessionmaker_factory: Callable[..., Any],
                 admin: Engine, user_engine: Engine, kind: EngineKind) -> None:
        self._engine = engine
        self._url: URL = user_engine.url
        self.schema = check_schema(schema, is_async=kind.is_async)
        self.debug = debug
        self.sessionmaker_factory = sessionmaker_factory
        self._core = ServerCore(self, admin, user_engine, kind, self.schema, debug)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={_urls.safe_url(self.url)!r}, schema={self.schema!r})"

    @property
    def url(self) -> URL:
        """The server engine's URL (render it with ``hide_password=True`` to show it)."""
        return self._url

    @property
    def engine(self) -> E:
        """The engine elefast uses to create and drop databases."""
        return self._engine

    def _take(self, prefix: str, encoding: str) -> Tuple[str, Any, Optional[str]]:
        """A clone of the schema's template (built first if need be) from the clone pool:
        (its name, the warm engine the pool made for it or None, the template's name)."""
        prefix = _sql.safe_prefix(prefix)
        _sql.validate_encoding(encoding)
        template = self._core.templates.get(prefix, encoding)
        return (*self._core.take_for_caller(template, prefix, encoding), template)
