"""The front ends' one way in: what the mixins and the pytest plugin ask of a server.

A front end never touches a server's attributes. It gets a server from :data:`SHARED`
(one per kind, server URL and schema, whatever number of migrator objects name that
schema), wraps it in a :class:`SyncProvider` or :class:`AsyncProvider`, and asks for
templates, per-class templates and databases from the clone pool. Each database it
gets knows from birth what its ``drop()`` does: hand it back to the pool.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, Hashable, Optional, Tuple

from sqlalchemy import URL

from elefast._engines import aio as _aio
from elefast._engines.kinds import ASYNC, SYNC
from elefast._server.core import ServerCore, core_of
from elefast.migrators import schema_key

if TYPE_CHECKING:
    from elefast.asyncio import AsyncDatabase, AsyncDatabaseServer
    from elefast.sync import Database, DatabaseServer

__all__ = ["SHARED", "AsyncProvider", "SyncProvider"]


class _Provider:
    """What both kinds offer: templates, per-class templates, class clones."""

    def __init__(self, core: ServerCore) -> None:
        self.core = core

    @property
    def url(self) -> URL:
        """The server's URL."""
        return self.core.url

    def template(self, prefix: str, encoding: str) -> Optional[str]:
        """The schema's template (built or found on first use), or None without a schema."""
        return self.core.templates.get(prefix, encoding)

    def class_template(self, template: Optional[str], prefix: str, encoding: str, fill: Callable[[Any], Any]) -> str:
        """A clone of ``template`` holding ``fill``'s rows; give it back with :meth:`retire`."""
        return self.core.templates.for_class(template, prefix, encoding, fill)

    def retire(self, template: str) -> None:
        """Drop a per-class template and the clones the pool keeps of it."""
        self.core.retire(template)

    def clone(self, template: Optional[str], prefix: str, encoding: str) -> str:
        """One clone of ``template`` not kept ahead (a transaction-mode class's); :meth:`release` it."""
        name, prepared = self.core.take(template, prefix, encoding, ahead=False)
        dispose = getattr(prepared, "dispose", None)
        if dispose is not None:
            dispose()
        return name

    def release(self, name: str) -> None:
        """Hand a clone back to the pool, to be dropped in the background."""
        self.core.release(name)


def _keep_database(name: str) -> None:
    """``on_drop`` of an engine opened on a class's clone: the clone outlives the engine."""


class SyncProvider(_Provider):
    """The front ends' view of a :class:`~elefast.sync.DatabaseServer`."""

    def __init__(self, server: DatabaseServer) -> None:
        super().__init__(core_of(server))
        self.server = server

    def database(self, template: Optional[str], prefix: str, encoding: str,
                 sessionmaker_factory: Callable[..., Any]) -> Database:
        """A fresh clone of ``template`` from the pool (kept ahead from now on), with a warm engine."""
        from elefast.sync import Database

        _name, engine = self.core.take(template, prefix, encoding)
        return Database(engine, self.server, sessionmaker_factory, on_drop=self.core.release)

    def database_on(self, name: str, sessionmaker_factory: Callable[..., Any]) -> Database:
        """A ``Database`` on an existing clone whose ``drop()`` only disposes its engine."""
        from elefast.sync import Database

        engine = SYNC.engine(self.core.database_url(name), self.core.engine_options())
        return Database(engine, self.server, sessionmaker_factory, on_drop=_keep_database)


class AsyncProvider(_Provider):
    """The front ends' view of an :class:`~elefast.asyncio.AsyncDatabaseServer`."""

    def __init__(self, server: AsyncDatabaseServer) -> None:
        super().__init__(core_of(server))
        self.server = server

    async def database(self, template: Optional[str], prefix: str, encoding: str,
                       sessionmaker_factory: Callable[..., Any]) -> AsyncDatabase:
        """A fresh clone from the pool (taken in a thread: the loop never waits on it)."""
        name, _ = await _aio.to_thread(self.core.take, template, prefix, encoding)
        return self._on(name, sessionmaker_factory, self.core.release, template)

    def database_on(self, name: str, sessionmaker_factory: Callable[..., Any]) -> AsyncDatabase:
        """An ``AsyncDatabase`` on an existing clone whose ``drop()`` only disposes its engine."""
        return self._on(name, sessionmaker_factory, _keep_database)

    def _on(self, name: str, sessionmaker_factory: Callable[..., Any], on_drop: Callable[[str], None],
            template: Optional[str] = None) -> AsyncDatabase:
        from elefast.asyncio import AsyncDatabase

        engine = ASYNC.engine(self.core.database_url(name), self.core.engine_options(), template)
        return AsyncDatabase(engine, self.server, sessionmaker_factory, on_drop=on_drop)


class Shared:
    """Process-wide servers, one per (kind, URL, schema), each checked for readiness once.

    The first failure to make or reach a server is remembered and raised again for every
    class that asks, so a missing server fails each class quickly.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._servers: Dict[Tuple[Hashable, ...], Any] = {}
        self._failures: Dict[Tuple[Hashable, ...], BaseException] = {}
        self._keys: Dict[int, Tuple[Any, Hashable]] = {}  # id(schema) -> (schema, its key)

    def _schema_key(self, schema: Any) -> Hashable:
        known = self._keys.get(id(schema))
        if known is None or known[0] is not schema:
            known = self._keys[id(schema)] = (schema, schema_key(schema))
        return known[1]

    def sync_server(self, url: URL, schema: Any, timeout: float) -> DatabaseServer:
        """The process's ready ``DatabaseServer`` for ``url`` and ``schema``."""
        from elefast.sync import DatabaseServer

        def make() -> DatabaseServer:
            return DatabaseServer(url, schema=schema).ensure_is_ready(timeout=timeout)

        server: DatabaseServer = self._get(("sync", url, schema), make)
        return server

    def async_server(self, url: URL, schema: Any, timeout: float) -> AsyncDatabaseServer:
        """The process's ready ``AsyncDatabaseServer`` (readiness checked on a loop of its own)."""
        from elefast.asyncio import AsyncDatabaseServer

        def make() -> AsyncDatabaseServer:
            return _aio.run(AsyncDatabaseServer(url, schema=schema).ensure_is_ready(timeout=timeout))

        server: AsyncDatabaseServer = self._get(("async", url, schema), make)
        return server

    def _get(self, what: Tuple[str, URL, Any], make: Callable[[], Any]) -> Any:
        kind, url, schema = what
        with self._lock:
            key = (kind, url.render_as_string(hide_password=False), self._schema_key(schema))
            if key in self._failures:
                raise self._failures[key]
            if key not in self._servers:
                try:
                    self._servers[key] = make()
                except Exception as error:
                    self._failures[key] = error
                    raise
            return self._servers[key]

    def servers(self) -> list[Any]:
        """Every server made so far (tests drain their pools)."""
        with self._lock:
            return list(self._servers.values())


#: The servers of this process's test classes and fixtures.
SHARED = Shared()
