"""The synchronous API: a server, the databases cloned on it, and migrators.

Typical use::

    server = DatabaseServer("postgresql://postgres@127.0.0.1/postgres",
                            schema=MetadataMigrator(Base.metadata))
    with server.create_database() as database:
        with database.session() as session:
            ...

Every server-side step runs in the admin core (:mod:`elefast._server.core`); this module is
its public face for sync code.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from typing import Any, Callable, List, Optional, Union

from sqlalchemy import URL, Engine, NullPool, create_engine, text
from sqlalchemy.orm import Session, sessionmaker
from typing_extensions import Self, TypeAlias

from elefast import snapshots as _snapshots
from elefast._base import sql as _sql
from elefast._engines import options as _options
from elefast._engines import urls as _urls
from elefast._engines.budget import not_waiting
from elefast._engines.kinds import SYNC
from elefast._server.facade import DatabaseBase, ServerBase
from elefast._server.readiness import Attempts
from elefast.migrators import MetadataMigrator, Migrator
from elefast.snapshots import Snapshot

__all__ = ["CanBeTurnedIntoEngine", "Database", "DatabaseServer", "MetadataMigrator", "Migrator"]


CanBeTurnedIntoEngine: TypeAlias = Union[Engine, URL, str]
"""What :class:`DatabaseServer` accepts: an engine, a ``URL`` or a URL string."""


class Database(DatabaseBase[Engine, Session], AbstractContextManager):  # type: ignore[type-arg]
    """A Postgres database.

    Note that this is usually obtained from :meth:`DatabaseServer.create_database`
    and you should not need to construct it yourself.

    Args:
        engine: the engine holding the connections to the specific database.
        server: a reference to the database server that created the database.
        sessionmaker_factory: allows you to set custom options for the
            :meth:`Database.session` utility.
        on_drop: what :meth:`drop` does with the database once its engine is
            disposed (keyword only; default: ``server.drop_database``). Databases
            from the clone pool hand themselves back to it.
    """

    def __init__(
        self,
        engine: Engine,
        server: DatabaseServer,
        sessionmaker_factory: Callable[[Engine], Callable[[], Session]] = sessionmaker,
        *,
        on_drop: Optional[Callable[[str], None]] = None,
    ) -> None:
        super().__init__(engine, server, sessionmaker_factory, on_drop, engine)

    def __exit__(self, *exc_info: Any) -> None:
        self.drop()

    def drop(self) -> None:
        """Disposes the engine and drops the database.

        If you for some reason do not use this class as a context manager, use
        this to clean up when you don't need it anymore. Calling it twice is
        harmless. Connections still open to the database are ended. A database
        from :meth:`DatabaseServer.create_database` is dropped behind: this returns
        without waiting for the server. After :meth:`keep`, only the engine is
        disposed: the database stays.
        """
        if self._begin_drop():
            self.engine.dispose()
            self._hand_back()

    def snapshot(self) -> Snapshot:
        """A copy of the database as it is now, to :meth:`restore` later (see :mod:`elefast.snapshots`).

        The engine's idle connections are closed first; other open sessions (close
        ``self.session`` first) make it fail with :class:`~elefast.errors.SnapshotError`.
        """
        _snapshots.let_go(self)
        return _snapshots.take(self)

    def restore(self, snapshot: Snapshot) -> None:
        """Make the database what it was at ``snapshot``, under the same name and URL.

        As for :meth:`snapshot`, close ``self.session`` (and connections you opened) first.
        """
        _snapshots.let_go(self, "restore")
        _snapshots.restore(self, snapshot)

    def keep(self) -> None:
        """Keep the database after the process ends: it is marked kept, never dropped or swept.

        Drop it yourself when done (``DROP DATABASE "<name>"``).
        """
        self._keep()


class DatabaseServer(ServerBase[Engine]):
    """A PostgreSQL server on which elefast creates and drops test databases.

    A ``str`` or ``URL`` becomes an engine with ``isolation_level="AUTOCOMMIT"``
    and ``NullPool``; a bare ``postgresql://`` uses psycopg 3. Your own engine
    works too, whatever its isolation level: elefast switches its own
    connections to autocommit, and the engines of the databases it creates
    keep your engine's options.

    The first :meth:`create_database` builds a template database with
    ``schema`` applied (once, under a lock); every database after that is a
    clone of it. The server drops the templates and databases it created when
    :meth:`close` is called or the process exits, and never any other.

    Args:
        engine: where the server is: an engine, a ``URL`` or a URL string.
        schema: how to build the schema of every database, or None for empty ones.
        debug: log every statement elefast sends at INFO on the ``elefast`` logger.
        sessionmaker_factory: passed on to each :class:`Database` (keyword only).
    """

    schema: Optional[Migrator]

    def __init__(
        self,
        engine: CanBeTurnedIntoEngine,
        schema: Optional[Migrator] = None,
        debug: bool = False,
        *,
        sessionmaker_factory: Callable[[Engine], Callable[[], Session]] = sessionmaker,
    ) -> None:
        if isinstance(engine, Engine):
            _urls.check_driver(engine.url, is_async=False)
            admin = _options.mark_admin(create_engine(  # its own: the user's may say isolation_level="autocommit"
                engine.url, isolation_level="AUTOCOMMIT", poolclass=NullPool,
                connect_args=_options.remember_connect_args(engine)))
        else:
            url = _urls.parse_url(engine, is_async=False)
            engine = admin = _options.mark_admin(create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool))
        super().__init__(engine, schema, debug, sessionmaker_factory, admin, engine, SYNC)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def ensure_is_ready(self, timeout: float = 30, interval: float = 0.5) -> Self:
        """Wait until the server answers ``SELECT 1``, polling every ``interval`` seconds.

        Only "not reachable yet" is retried. A wrong password, an unknown role
        or database, or a missing permission raise :class:`ServerRejectedError`
        at once. After ``timeout`` seconds :class:`DatabaseNotReadyError` is
        raised, chained to the last error. Returns the server.
        """
        attempts = Attempts(self.url, timeout, interval)
        while True:
            try:
                self._probe(attempts.next_budget())
                return self
            except Exception as error:
                time.sleep(attempts.failed(error))

    def _probe(self, seconds: float) -> None:
        # Each attempt bounded by its share of the timeout; on elefast's own engine, so the
        # dialect's first-connect queries run once, not again for the admin work that follows.
        bound = seconds if _options.is_admin(self._engine) and "connect_timeout" not in self.url.query else None
        with not_waiting(connect_timeout=bound), self._engine.connect() as connection:
            connection.execute(text(_sql.SELECT_ONE))

    def create_database(self, prefix: str = "elefast", encoding: str = "utf8", *, keep: bool = False,
                        snapshot: Optional[Snapshot] = None) -> Database:
        """Create a fresh database with the schema applied and return it.

        Clones come from the server's pool: once the same prefix and encoding
        were asked for before, the next ones are made ahead in the background
        (each with a connection already open in its engine), so this returns at
        once. :meth:`Database.drop` returns at once too: the engine is disposed
        and the database dropped behind, in the background (a process killed
        before that leaves it to the next run's sweep). The name is
        ``<prefix>_<random>``, shortened to fit PostgreSQL's 63 bytes with the
        random part intact (other characters than ASCII letters, digits, ``_`` and
        ``-`` in ``prefix`` become ``_``). Use the result as a context manager (or
        call :meth:`Database.drop`) to drop it. With ``keep=True`` (keyword only)
        it outlives the process, as after :meth:`Database.keep`: marked kept, never
        swept, listed by ``python -m elefast sweep --dry-run``. With ``snapshot=``
        (keyword only; from :meth:`Database.snapshot`), the new database is a copy
        of that snapshot instead.
        """
        if snapshot is not None:
            name, engine, template = _snapshots.clone_of(self, snapshot, prefix), None, None
        else:
            name, engine, template = self._take(prefix, encoding)  # from the pool, made ahead in the background
        if engine is None:
            engine = SYNC.engine(self._core.database_url(name), self._core.engine_options(), template)
        # drop() hands it back to the pool, dropped behind as a test case's clone is (no wait)
        database = Database(engine, self, self.sessionmaker_factory, on_drop=self._core.release)
        if keep:
            database.keep()
        return database

    def drop_database(self, name: str) -> None:
        """Drop a database this server created, ending any connection still open to it.

        The name is gone when this returns: the database is renamed (instantly,
        once the sessions on it are gone; a straggler is ended) and dropped in the
        background, or, if sessions stay, dropped here with ``DROP DATABASE ...
        WITH (FORCE)`` (PostgreSQL 13+; older servers: sessions ended first). Names
        this server did not create are refused: elefast never drops what it does not
        own (the error gives the ``DROP DATABASE`` line to run yourself).
        """
        self._core.drop_soon(name)

    def close(self) -> None:
        """Drop every template and database this server created and still owns."""
        self._core.close()

    def sweep_orphans(self, dry_run: bool = False) -> List[str]:
        """Drop the databases elefast made for processes that are gone; return their names.

        Only databases marked as elefast's whose ownership lock no living process holds
        (see :mod:`elefast._server.ownership`); never one kept for inspection, never a template.
        """
        return self._core.sweep(dry_run)
