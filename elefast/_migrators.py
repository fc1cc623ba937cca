"""Checks and helpers for the ``schema`` argument, shared by sync and async."""

from __future__ import annotations

from typing import Any, List

from sqlalchemy import MetaData

from elefast.errors import ConfigurationError


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
