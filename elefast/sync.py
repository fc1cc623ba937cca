"""The synchronous API: a server, the databases cloned on it, and migrators.

Typical use::

    server = DatabaseServer("postgresql://postgres@127.0.0.1/postgres",
                            schema=MetadataMigrator(Base.metadata))
    with server.create_database() as database:
        with database.session() as session:
            ...
"""

from __future__ import annotations

import datetime
import math
import time
import weakref
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, Callable, Dict, Iterable, List, Optional, Type, Union

from sqlalchemy import URL, Connection, Engine, MetaData, NullPool, create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.schema import CreateSchema
from typing_extensions import Protocol, Self, TypeAlias, runtime_checkable

from elefast import _engines, _messages, _migrators, _sql, ownership
from elefast._logging import logger
from elefast.errors import DatabaseNotReadyError, MigrationError
from elefast.pool import ClonePool, ServerState, TemplateSlot, at_process_exit

__all__ = ["CanBeTurnedIntoEngine", "Database", "DatabaseServer", "MetadataMigrator", "Migrator"]


CanBeTurnedIntoEngine: TypeAlias = Union[Engine, URL, str]
"""What :class:`DatabaseServer` accepts: an engine, a ``URL`` or a URL string."""


@runtime_checkable
class Migrator(Protocol):
    """Defines how the database schema is created."""

    def migrate(self, connection: Connection) -> None:
        """Creates the database schema for the passed connection."""


class MetadataMigrator:
    """Creates the database schema based on ``sqlalchemy.MetaData``.

    The non-public schemas that tables name are created first.
    """

    def __init__(self, metadata: MetaData) -> None:
        self.metadata = metadata

    def __repr__(self) -> str:
        return f"MetadataMigrator(<MetaData with {len(self.metadata.tables)} tables>)"

    def fingerprint(self) -> str:
        """The compiled PostgreSQL DDL of the metadata: templates are reused while it is unchanged."""
        return _migrators.metadata_ddl(self.metadata)

    def migrate(self, connection: Connection) -> None:
        """Drops and creates all tables specified in the metadata object passed via the constructor."""
        for schema in _migrators.non_public_schemas(self.metadata):
            connection.execute(CreateSchema(schema, if_not_exists=True))
        self.metadata.drop_all(bind=connection)
        self.metadata.create_all(bind=connection)


class Database(AbstractContextManager):  # type: ignore[type-arg]
    """A Postgres database.

    Note that this is usually obtained from :meth:`DatabaseServer.create_database`
    and you should not need to construct it yourself.

    Args:
        engine: the engine holding the connections to the specific database.
        server: a reference to the database server that created the database.
        sessionmaker_factory: allows you to set custom options for the
            :meth:`Database.session` utility.
    """

    def __init__(
        self,
        engine: Engine,
        server: DatabaseServer,
        sessionmaker_factory: Callable[[Engine], Callable[[], Session]] = sessionmaker,
    ) -> None:
        self.engine = engine
        self.server = server
        self.sessionmaker = sessionmaker_factory(engine)
        name = engine.url.database
        if not name:
            raise ValueError("The engine's URL names no database.")
        self.name: str = name
        """The name of the database."""
        self._dropped = False
        self._checkouts = _engines.CheckoutTracker(engine)
        self._on_drop: Optional[Callable[[str], None]] = None  # set for pooled databases

    def __repr__(self) -> str:
        return f"Database(name={self.name!r}, url={_engines.safe_url(self.url)!r})"

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.drop()

    @property
    def url(self) -> URL:
        """The engine URL, allowing you to create your own engines with custom options."""
        return self.engine.url

    def drop(self) -> None:
        """Disposes the engine and drops the database.

        If you for some reason do not use this class as a context manager, use
        this to clean up when you don't need it anymore. Calling it twice is
        harmless. Connections still open to the database are ended.
        """
        if self._dropped:
            return
        self._dropped = True
        self._checkouts.invalidate_all()
        self.engine.dispose()
        if self._on_drop is not None:
            self._on_drop(self.name)
        else:
            self.server.drop_database(self.name)

    def session(self) -> Session:
        """Creates a new ORM session.

        You can use the ``sessionmaker_factory`` parameter of the constructor to
        customize options.
        """
        return self.sessionmaker()  # type: ignore[return-value]


class DatabaseServer:
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

    def __init__(
        self,
        engine: CanBeTurnedIntoEngine,
        schema: Optional[Migrator] = None,
        debug: bool = False,
        *,
        sessionmaker_factory: Callable[[Engine], Callable[[], Session]] = sessionmaker,
    ) -> None:
        if isinstance(engine, Engine):
            _engines.check_driver(engine.url, is_async=False)
            self._engine = engine
        else:
            url = _engines.parse_url(engine, is_async=False)
            self._engine = _engines.mark_admin(
                create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
            )
        self._connect_args = (
            {} if _engines.is_admin(self._engine) else _engines.remember_connect_args(self._engine)
        )
        self.schema: Optional[Migrator] = _migrators.check_schema(schema, is_async=False)
        self.debug = debug
        self.sessionmaker_factory = sessionmaker_factory
        self._state = ServerState()
        admin = self._engine
        self._state.owner = ownership.Owner(
            lambda: admin.connect().execution_options(isolation_level="AUTOCOMMIT")
        )
        self._server_version: Optional[tuple] = None  # type: ignore[type-arg]
        self._finalizer = weakref.finalize(self, _drop_leftovers, self._engine, self._state)
        at_process_exit(self._finalizer)

    def __repr__(self) -> str:
        return f"DatabaseServer(url={_engines.safe_url(self.url)!r}, schema={self.schema!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    @property
    def url(self) -> URL:
        """The server engine's URL (render it with ``hide_password=True`` to show it)."""
        return self._engine.url

    @property
    def engine(self) -> Engine:
        """The engine elefast uses to create and drop databases."""
        return self._engine

    # -- readiness ----------------------------------------------------------

    def ensure_is_ready(self, timeout: float = 30, interval: float = 0.5) -> Self:
        """Wait until the server answers ``SELECT 1``, polling every ``interval`` seconds.

        Only "not reachable yet" is retried. A wrong password, an unknown role
        or database, or a missing permission raise :class:`ServerRejectedError`
        at once. After ``timeout`` seconds :class:`DatabaseNotReadyError` is
        raised, chained to the last error. Returns the server.
        """
        deadline = time.monotonic() + timeout
        attempts = 0
        while True:
            attempts += 1
            remaining = deadline - time.monotonic()
            try:
                self._probe(max(remaining, 0.5))
                return self
            except Exception as error:
                _messages.raise_if_fatal(error, self.url)
                if time.monotonic() + interval >= deadline:
                    raise DatabaseNotReadyError(
                        _messages.not_ready(self.url, timeout, attempts, error)
                    ) from error
                time.sleep(interval)

    def _probe(self, seconds: float) -> None:
        if _engines.is_admin(self._engine) and "connect_timeout" not in self.url.query:
            probe = create_engine(
                self.url, poolclass=NullPool, connect_args={"connect_timeout": max(1, math.ceil(seconds))}
            )
        else:
            probe = self._engine
        try:
            with probe.connect() as connection:
                connection.execute(text(_sql.SELECT_ONE))
                self._server_version = connection.dialect.server_version_info
        finally:
            if probe is not self._engine:
                probe.dispose()

    # -- creating and dropping ------------------------------------------------

    def create_database(self, prefix: str = "elefast", encoding: str = "utf8") -> Database:
        """Create a fresh database with the schema applied and return it.

        The name is ``<prefix>_<random>``, shortened to fit PostgreSQL's 63
        bytes with the random part intact. Use the result as a context manager
        (or call :meth:`Database.drop`) to drop it.
        """
        return self._create_database(prefix, encoding, self.sessionmaker_factory)

    def _create_database(
        self,
        prefix: str,
        encoding: str,
        sessionmaker_factory: Callable[[Engine], Callable[[], Session]],
    ) -> Database:
        _sql.validate_prefix(prefix)
        _sql.validate_encoding(encoding)
        template = self._template(prefix, encoding)
        name = _sql.database_name(prefix)
        self._create(name, template, encoding)
        return Database(self._database_engine(name), self, sessionmaker_factory)

    def drop_database(self, name: str) -> None:
        """Drop a database this server created, ending any connection still open to it.

        Uses ``DROP DATABASE ... WITH (FORCE)`` on PostgreSQL 13 and newer, and
        ends the other sessions first on older servers. Names this server did
        not create are refused: elefast never drops what it does not own.
        """
        if not self._state.check_droppable(name, self):
            return
        with self._admin() as connection:
            _drop(connection, name, self._log)
        self._state.disown(name)

    def close(self) -> None:
        """Drop every template and database this server created and still owns."""
        self._finalizer()

    def sweep_orphans(self, dry_run: bool = False) -> List[str]:
        """Drop the databases elefast made for processes that are gone; return their names.

        Only databases marked as elefast's whose ownership lock no living process holds
        (see :mod:`elefast.ownership`); never one kept for inspection, never a template.
        """
        with self._admin() as connection:
            dropped, failed = ownership.sweep(connection, dry_run=dry_run)
        for name, error in failed:
            logger.warning("elefast could not sweep %s: %s", name, error)
        if dropped and not dry_run:
            logger.info("elefast swept %d orphaned databases", len(dropped))
        return dropped

    def _keep(self, name: str) -> None:
        """Keep ``name`` for inspection: mark it, give up ownership, never drop or sweep it."""
        with self._admin() as connection:
            for mark in ownership.mark_kept(name):
                connection.execute(text(mark))
        self._state.disown(name)

    # -- internals ------------------------------------------------------------

    def _log(self, statement: str) -> None:
        if self.debug:
            logger.info("%s", statement)

    def _admin(self) -> Connection:
        connection = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        if self._server_version is None:
            self._server_version = connection.dialect.server_version_info
        return connection

    def _create(self, name: str, template: Optional[str], encoding: str, strategy: Optional[str] = None) -> None:
        statement = _sql.create_database(name, template, encoding, strategy)
        try:
            self._state.own(name)
            with self._admin() as connection:
                self._log(statement)
                ownership.create_marked(connection, statement, name)
        except DBAPIError as error:
            self._state.disown(name)
            _messages.raise_if_fatal(error, self.url, action=f"create the database {name!r}")
            raise

    def _database_engine(self, name: str, pooled: bool = True) -> Engine:
        options: Dict[str, Any] = _engines.engine_options(self._engine, self._connect_args)
        if not pooled:
            options = _engines.without_pool_sizes(options)
            options["poolclass"] = NullPool
        return create_engine(self.url.set(database=name), **options)

    def _template(self, prefix: str, encoding: str) -> Optional[str]:
        if self.schema is None:
            return None
        slot = self._state.templates.get(encoding)
        if slot is None:
            with self._state.lock:
                slot = self._state.templates.get(encoding) or self._prepare_template(prefix, encoding)
        if slot.error is not None:
            raise MigrationError(slot.message) from slot.error
        return slot.name

    def _prepare_template(self, prefix: str, encoding: str) -> TemplateSlot:
        """Reuse the fingerprinted template if a run built it, else build it under an advisory lock."""
        started = time.monotonic()
        fingerprint = _migrators.fingerprint(self.schema)
        if fingerprint is None:  # nothing to recognise it by: a template for this process only
            slot = self._build_template(_sql.template_name(prefix), encoding, None)
        else:
            with self._admin() as connection:
                digest = _sql.template_hash(fingerprint, connection.dialect.server_version_info, encoding)
                name = _sql.template_name(prefix, digest)
                if _template_ready(connection, name):
                    slot = TemplateSlot(name, reused=True)
                else:
                    key = _sql.advisory_key(name)
                    connection.execute(text(_sql.ADVISORY_LOCK), {"key": key})
                    try:
                        if _template_ready(connection, name):  # another process built it meanwhile
                            slot = TemplateSlot(name, reused=True)
                        else:
                            _drop(connection, name, self._log)  # what a crashed builder left, if anything
                            slot = self._build_template(name, encoding, fingerprint)
                            if slot.error is None:
                                _sweep_templates(connection, prefix, name)
                    finally:
                        connection.execute(text(_sql.ADVISORY_UNLOCK), {"key": key})
        self._state.remember_template(encoding, slot, self.schema, fingerprint, time.monotonic() - started)
        return slot

    def _prune_templates(self, prefix: str, current: str) -> None:
        """Drop ``prefix``'s old shared templates beyond the newest few (the async server calls this too)."""
        with self._admin() as connection:
            _sweep_templates(connection, prefix, current)

    def _build_template(self, name: str, encoding: str, fingerprint: Optional[str]) -> TemplateSlot:
        """Create ``name`` from template0 and migrate it; on failure drop it and remember why."""
        self._create(name, None, encoding)
        slot = TemplateSlot(name)
        try:
            engine = self._database_engine(name, pooled=False)
            try:
                with engine.begin() as connection:
                    self.schema.migrate(connection)  # type: ignore[union-attr]
            finally:
                engine.dispose()
            if fingerprint is not None:  # shared from now on: ready, read-only, kept across runs
                with self._admin() as connection:
                    for statement in _sql.mark_template_ready(name, _now(), fingerprint):
                        connection.execute(text(statement))
                self._state.disown(name)
        except BaseException as error:
            _drop_names(self._engine, [name])
            self._state.disown(name)
            if not isinstance(error, Exception):
                raise  # KeyboardInterrupt and friends: nothing cached, nothing left
            slot.error, slot.message = error, _messages.migration_failed(self.schema, name, error)
        return slot

    # -- the clone pool (used by the test case mixins) --------------------------

    def _pool(self) -> ClonePool:
        pool = self._state.pool
        if pool is None:
            with self._state.owned_lock:
                pool = self._state.pool
                if pool is None:
                    pool = self._state.pool = ClonePool(self._create_clone, self._drop_clone, self._warm_engine,
                                                          finish=self._close_worker_connection,
                                                          sweep=self.sweep_orphans)
        return pool

    def _create_clone(self, name: str, template: Optional[str], encoding: str) -> None:
        statement = _sql.create_database(name, template, encoding, self._strategy())
        try:
            self._state.own(name)

            def create(connection: Connection) -> None:
                ownership.create_marked(connection, statement, name)

            self._on_worker_connection(create)
        except DBAPIError as error:
            self._state.disown(name)
            _messages.raise_if_fatal(error, self.url, action=f"create the database {name!r}")
            raise

    def _drop_clone(self, name: str) -> None:
        if self._state.check_droppable(name, self):
            self._on_worker_connection(lambda connection: _drop(connection, name, self._log))
            self._state.disown(name)

    def _close_worker_connection(self) -> None:
        connection = getattr(self._state.local, "connection", None)
        self._state.local.connection = None
        if connection is not None:
            connection.close()

    def _on_worker_connection(self, work: Callable[[Connection], Any]) -> None:
        """Run ``work`` on this thread's own long-lived admin connection (the pool's workers
        send one statement per clone; a new connection each time would cost more than it)."""
        local = self._state.local
        connection = getattr(local, "connection", None)
        if connection is None or connection.closed or connection.invalidated:
            connection = local.connection = self._admin()
            with self._state.owned_lock:
                self._state.connections.append(connection)
        try:
            work(connection)
        except DBAPIError as error:
            if error.connection_invalidated or connection.invalidated:
                local.connection = None
            raise

    def _strategy(self) -> Optional[str]:
        if self._state.strategy is None:
            with self._admin() as connection:
                fsync, version = connection.execute(text(_sql.SERVER_SETTINGS)).one()
            self._state.strategy = _sql.choose_strategy(int(version), str(fsync)) or ""
        return self._state.strategy or None

    def _warm_engine(self, name: str) -> Engine:
        engine = self._database_engine(name)
        with engine.connect():
            pass  # one connection made ahead, left idle in the engine's pool
        return engine

    def _pooled_database(
        self,
        template: Optional[str],
        prefix: str,
        encoding: str,
        sessionmaker_factory: Callable[[Engine], Callable[[], Session]],
        ahead: bool = True,
    ) -> Database:
        """A database from the pool; its ``drop()`` hands it back to be dropped in the background."""
        pool = self._pool()
        _name, engine = pool.take(template, prefix, encoding, ahead)
        database = Database(engine, self, sessionmaker_factory)
        database._on_drop = pool.release
        return database

    def _class_template(self, template: Optional[str], prefix: str, encoding: str,
                        fill: Optional[Callable[[Connection], None]],
                        fill_by_name: Optional[Callable[[str], None]] = None) -> str:
        """A per-class template: a clone of ``template`` with ``fill``'s rows (``setUpTestData``).

        ``fill_by_name`` instead receives the new database's name (the async server's hook
        opens its own async connection with it).
        """
        name = _sql.database_name(prefix, infix="cls_")
        self._create(name, template, encoding, strategy=self._strategy())
        try:
            if fill_by_name is not None:
                fill_by_name(name)
            else:
                engine = self._database_engine(name, pooled=False)
                try:
                    with engine.begin() as connection:
                        fill(connection)  # type: ignore[misc]
                finally:
                    engine.dispose()
        except BaseException:
            self.drop_database(name)
            raise
        return name

    def _retire_class_template(self, name: str) -> None:
        self._pool().retire(name, then_drop=name)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _template_ready(connection: Connection, name: str) -> bool:
    return bool(connection.execute(text(_sql.TEMPLATE_STATE), {"name": name}).scalar())


def _sweep_templates(connection: Connection, prefix: str, current: str) -> None:
    """Drop this prefix's older fingerprinted templates beyond the newest few (not those in use)."""
    rows = connection.execute(text(_sql.LIST_TEMPLATES), {"pattern": _sql.template_pattern(prefix)}).all()
    for name in _sql.templates_to_sweep([(r[0], r[1]) for r in rows], _sql.TEMPLATES_KEPT, current):
        key = _sql.advisory_key(name)
        if not connection.execute(text(_sql.ADVISORY_TRY_LOCK), {"key": key}).scalar():
            continue  # being built or swept by someone else right now
        try:
            connection.execute(text(_sql.unmark_template(name)))
            _drop(connection, name, lambda _s: None)
        except Exception as error:
            logger.warning("elefast could not sweep the old template %s: %s", name, error)
        finally:
            connection.execute(text(_sql.ADVISORY_UNLOCK), {"key": key})


def _drop(connection: Connection, name: str, log: Callable[[str], None]) -> None:
    """Drop ``name`` over an autocommit ``connection``, ending its other sessions."""
    force = _sql.supports_drop_force(connection.dialect.server_version_info)
    if not force:
        connection.execute(text(_sql.TERMINATE_BACKENDS), {"name": name})
    statement = _sql.drop_database(name, force)
    log(statement)
    connection.execute(text(statement))


def _drop_leftovers(engine: Engine, state: ServerState) -> None:
    """Stop the pool, then drop every database still owned: the finalizer, also run at exit."""
    if state.pool is not None:
        state.pool.close()
    state.close_connections()
    _drop_names(engine, state.take_owned())
    if state.owner is not None:
        state.owner.close()


def _drop_names(engine: Engine, names: Iterable[str]) -> None:
    names = list(names)
    if not names:
        return
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            for name in names:
                try:
                    _drop(connection, name, lambda _s: None)
                except Exception as error:  # keep going: drop what we can
                    logger.warning("elefast could not drop %s: %s", name, error)
    except Exception as error:
        logger.warning("elefast could not connect to drop %d databases: %s", len(names), error)
