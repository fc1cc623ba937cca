"""How a template's schema is built: the migrator protocols, the MetaData migrators, fingerprints.

A migrator is any object with ``migrate(connection)`` (sync) or
``migrate_async(connection)`` (async). elefast runs it once per template, inside one
transaction on a connection to the new template database, and clones the result for
every test. An optional ``fingerprint()`` returning a ``str`` names what the migrator
builds: templates are kept across runs and shared between processes while it is
unchanged. Without one, a template lives for the process only. The template's name
also covers the migrator's type, the code a subclass overrides, the instance's own
configuration and the role that builds it (see :mod:`elefast._schema.fingerprints`).

After every build, before the template is marked ready, elefast calls the migrator's
optional ``verify(connection)`` on a new connection to the template (a sync
``Connection``, also on the async server): it raises
:class:`~elefast.errors.MigrationError` when the template is not what the migrator
should have built (for ``MetadataMigrator``: a table of the metadata is missing), and
nothing is kept.

:mod:`elefast.sync` and :mod:`elefast.asyncio` hand these names on; this module imports
neither.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable, Dict, Hashable, List, Optional, Set

from sqlalchemy import Connection, MetaData
from sqlalchemy.schema import CreateSchema
from typing_extensions import Protocol, runtime_checkable

from elefast._schema import fingerprints as _fingerprints
from elefast.errors import ConfigurationError, MigrationError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["AsyncMetadataMigrator", "AsyncMigrator", "ChainMigrator", "MetadataMigrator", "Migrator"]


@runtime_checkable
class Migrator(Protocol):
    """Defines how the database schema is created."""

    def migrate(self, connection: Connection) -> None:
        """Creates the database schema for the passed connection."""


@runtime_checkable
class AsyncMigrator(Protocol):
    """Defines how the database schema is created, from async code."""

    async def migrate_async(self, connection: AsyncConnection) -> None:
        """Creates the database schema for the passed connection."""


class MetadataMigrator:
    """Creates the database schema based on ``sqlalchemy.MetaData``.

    The non-public schemas that tables name are created first.
    """

    _elefast_fingerprinted = ("metadata",)

    def __init__(self, metadata: MetaData) -> None:
        self.metadata = metadata

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<MetaData with {len(self.metadata.tables)} tables>)"

    def fingerprint(self) -> str:
        """The compiled PostgreSQL DDL of the metadata: templates are reused while it is unchanged."""
        return metadata_ddl(self.metadata)

    def migrate(self, connection: Connection) -> None:
        """Drops and creates all tables specified in the metadata object passed via the constructor."""
        for schema in non_public_schemas(self.metadata):
            connection.execute(CreateSchema(schema, if_not_exists=True))
        self.metadata.drop_all(bind=connection)
        self.metadata.create_all(bind=connection)

    def verify(self, connection: Connection) -> None:
        """Raise :class:`~elefast.errors.MigrationError` unless every table of the metadata exists."""
        missing = missing_tables(self.metadata, connection)
        if missing:
            raise MigrationError(
                f"{self!r} ran, but the template lacks {len(missing)} of the metadata's tables "
                f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}): they went to another "
                "database, or were never made. If migrate() is overridden, it must create them on the "
                "connection it is given, not on an engine of its own:\n\n"
                "    def migrate(self, connection):\n"
                "        super().migrate(connection)   # the tables, on the template being built\n"
                "        connection.execute(...)       # your rows, on the same connection\n"
            )


class AsyncMetadataMigrator:
    """Creates the database schema based on ``sqlalchemy.MetaData``, from async code.

    Runs :class:`MetadataMigrator` through ``run_sync``.
    """

    _elefast_fingerprinted = ("metadata", "_sync")

    def __init__(self, metadata: MetaData) -> None:
        self.metadata = metadata
        self._sync = MetadataMigrator(metadata)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<MetaData with {len(self.metadata.tables)} tables>)"

    def fingerprint(self) -> str:
        """The compiled PostgreSQL DDL of the metadata (see :meth:`MetadataMigrator.fingerprint`)."""
        return self._sync.fingerprint()

    async def migrate_async(self, connection: AsyncConnection) -> None:
        """Drops and creates all tables specified in the metadata object passed via the constructor."""
        await connection.run_sync(self._sync.migrate)

    def verify(self, connection: Connection) -> None:
        """Every table of the metadata exists (see :meth:`MetadataMigrator.verify`)."""
        self._sync.verify(connection)


#: ``connection.info`` key: how many ChainMigrator steps ran before the current one on this connection.
CHAIN_STEP = "elefast_chain_step"


class ChainMigrator:
    """Several migrators, one after the other, for histories that do not build from empty.

    Some projects' migrations start from tables an older release made with ``create_all``
    (mlflow's do)::

        schema = ChainMigrator(MetadataMigrator(InitialBase.metadata), AlembicMigrator("alembic.ini"))

    Every step runs on the same connection, inside the one transaction elefast opens for
    the build, so each sees what the earlier ones made. An Alembic ``env.py`` that opens a
    connection of its own (mlflow's) sees them too: elefast commits the earlier steps before
    its migrations run (a failed build is still dropped whole). The fingerprint combines
    every step's identity (a step that cannot be fingerprinted makes the whole chain a
    template for this process only); the template is verified by the last step that has a
    ``verify``. On the async server each step runs ``migrate_async`` where it has one, else
    ``migrate`` through ``run_sync``.
    """

    _elefast_fingerprinted = ("migrators",)

    def __init__(self, *migrators: Any) -> None:
        if not migrators:
            raise ConfigurationError("ChainMigrator needs at least one migrator.")
        for migrator in migrators:
            check_schema(migrator, is_async=True)
        self.migrators = migrators

    def __repr__(self) -> str:
        return f"ChainMigrator({', '.join(repr(m) for m in self.migrators)})"

    def fingerprint(self) -> Optional[str]:
        """Every step's identity, in order; None when one of them has none."""
        parts = []
        for migrator in self.migrators:
            digest, _ = _fingerprints.identity(migrator)
            if digest is None:
                return None
            parts.append(digest)
        return "chain " + " ".join(parts)

    def migrate(self, connection: Connection) -> None:
        """Run every step's ``migrate`` on ``connection``, in order."""
        for number, migrator in enumerate(self.migrators):
            if not hasattr(migrator, "migrate"):
                raise ConfigurationError(f"{migrator!r} is async only: use the chain on an async server.")
            connection.info[CHAIN_STEP] = number  # how many steps ran before, uncommitted (for error notes)
            try:
                migrator.migrate(connection)
            finally:
                connection.info.pop(CHAIN_STEP, None)

    async def migrate_async(self, connection: AsyncConnection) -> None:
        """Run every step in order: ``migrate_async`` where it has one, else ``migrate`` via ``run_sync``."""
        for number, migrator in enumerate(self.migrators):
            connection.sync_connection.info[CHAIN_STEP] = number  # type: ignore[union-attr]
            try:
                if hasattr(migrator, "migrate_async"):
                    await migrator.migrate_async(connection)
                else:
                    await connection.run_sync(migrator.migrate)
            finally:
                connection.sync_connection.info.pop(CHAIN_STEP, None)  # type: ignore[union-attr]

    def verify(self, connection: Connection) -> None:
        """Verify with the last step that can (the earlier steps' results may since have changed)."""
        for migrator in reversed(self.migrators):
            if callable(getattr(migrator, "verify", None)):
                migrator.verify(connection)
                return


MetadataMigrator.__module__ = Migrator.__module__ = "elefast.sync"
AsyncMetadataMigrator.__module__ = AsyncMigrator.__module__ = "elefast.asyncio"


def migration_step(schema: Any, *, is_async: bool) -> Callable[..., Any]:
    """What builds ``schema`` on a connection: ``migrate_async`` (async servers, when there is
    one), else ``migrate`` (a sync migrator on an async server runs through ``run_sync``)."""
    if is_async and hasattr(schema, "migrate_async"):
        return schema.migrate_async  # type: ignore[no-any-return]
    return schema.migrate  # type: ignore[no-any-return]


def schema_key(schema: Any) -> Hashable:
    """What makes two migrators the same schema, for sharing one server object per process.

    Migrators with the same identity (type, fingerprint, overridden code, configuration:
    see :mod:`elefast._schema.fingerprints`) build the same template, so two test modules each
    writing ``MetadataMigrator(db.metadata)`` share one server, pool and template; a
    migrator that cannot be fingerprinted is only ever the same as itself.
    """
    if schema is None:
        return None
    digest, _ = _fingerprints.identity(schema)
    if digest is None:
        return ("object", id(schema))
    return ("identity", digest)


def verify(schema: Any, connection: Connection) -> None:
    """Run the migrator's optional ``verify(connection)`` on the freshly built template."""
    method = getattr(schema, "verify", None)
    if callable(method):
        method(connection)


def missing_tables(metadata: MetaData, connection: Connection) -> List[str]:
    """The metadata's tables (``schema.name``) that do not exist on ``connection``'s database."""
    from sqlalchemy import inspect

    inspector = inspect(connection)
    schemas = set(inspector.get_schema_names())
    present: Dict[str, Set[str]] = {}
    missing = []
    for table in metadata.sorted_tables:
        schema = table.schema or "public"
        if schema not in present:
            names = inspector.get_table_names(schema=schema) + inspector.get_view_names(schema=schema)
            present[schema] = set(names) if schema in schemas else set()
        if table.name not in present[schema]:
            missing.append(f"{schema}.{table.name}")
    return missing


def check_schema(schema: Any, *, is_async: bool) -> Any:
    """Return ``schema`` if it can build a schema (or is None), else raise with the fix.

    Sync servers need a ``migrate(connection)`` method; async servers accept
    ``migrate_async(connection)`` or, run through ``run_sync``, ``migrate``.
    """
    if schema is None:
        return None
    if hasattr(schema, "migrate") or (is_async and hasattr(schema, "migrate_async")):
        return schema
    hint = ""
    if isinstance(schema, MetaData):
        name = "AsyncMetadataMigrator" if is_async else "MetadataMigrator"
        hint = f" Did you mean {name}(metadata)?"
    elif isinstance(schema, str):
        hint = " Did you mean AlembicMigrator(...) from elefast.extras.alembic?"
    raise ConfigurationError(
        f"schema must be a migrator (an object with a "
        f"{'migrate_async' if is_async else 'migrate'}(connection) method, such as "
        f"MetadataMigrator(Base.metadata) or AlembicMigrator('alembic.ini')) or None, "
        f"not {type(schema).__name__}.{hint}"
    )


def non_public_schemas(metadata: MetaData) -> List[str]:
    """The schema names tables in ``metadata`` use, other than ``public``, sorted."""
    return sorted({str(t.schema) for t in metadata.tables.values() if t.schema and t.schema != "public"})


def metadata_ddl(metadata: MetaData) -> str:
    """Every statement ``create_all`` would send for ``metadata`` to PostgreSQL, in its order.

    ``create_all`` is replayed on a mock engine (no database): tables and their columns (server
    defaults, computed and identity columns, constraint names), indexes, sequences, enum types,
    table and column comments, and the DDL that event listeners attach (``event.listen(table,
    "after_create", DDL(...))``: triggers, functions; and listener functions that execute
    statements, with the values bound to them, such as a seed row's) all land in the
    fingerprint. A listener that needs a real database to run makes the template this
    process's own (:class:`~elefast._schema.fingerprints.Unsafe`).
    """
    from sqlalchemy import create_mock_engine

    from elefast._schema.fingerprints import Unsafe

    parts: List[str] = [f"schema {name}" for name in non_public_schemas(metadata)]

    def record(statement: Any, *multiparams: Any, **params: Any) -> None:
        compiled = statement.compile(dialect=engine.dialect) if hasattr(statement, "compile") else statement
        parts.append(str(compiled).strip())
        bound = [given for given in (getattr(compiled, "params", None), *multiparams, params) if given]
        if bound:  # a seed row's values (insert(...).values(...), text() with parameters)
            parts.append("-- with " + ", ".join(_stable_repr(given) for given in bound))

    engine = create_mock_engine("postgresql+psycopg://", record)
    try:
        metadata.create_all(engine, checkfirst=False)
    except Exception as error:
        raise Unsafe(f"create_all could not be replayed without a database ({type(error).__name__}: "
                     f"{error}); a DDL event listener probably reads from it") from None
    return "\n".join(_indexes_in_order(parts))


def _indexes_in_order(statements: List[str]) -> List[str]:
    """``statements`` with each run of ``CREATE INDEX`` sorted: ``create_all`` sends a table's
    indexes in the order of a set, which string hashing changes from one process to the next
    (the same MetaData would name a new template per process); their order shapes nothing."""
    ordered: List[str] = []
    run: List[str] = []
    for statement in [*statements, ""]:
        if statement.startswith(("CREATE INDEX ", "CREATE UNIQUE INDEX ")):
            run.append(statement)
            continue
        ordered += sorted(run)
        run = []
        if statement:
            ordered.append(statement)
    return ordered


def _stable_repr(value: Any) -> str:
    """``repr`` of bound parameter values, with mappings in key order: the same values, the same text."""
    if isinstance(value, Mapping):
        items = sorted(((repr(key), _stable_repr(item)) for key, item in value.items()))
        return "{" + ", ".join(f"{key}: {item}" for key, item in items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_stable_repr(item) for item in value) + "]"
    return repr(value)
