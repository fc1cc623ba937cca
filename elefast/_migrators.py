"""Checks and helpers for the ``schema`` argument, shared by sync and async."""

from __future__ import annotations

import hashlib
from typing import Any, List, Optional

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


def fingerprint(schema: Any) -> Optional[str]:
    """The migrator's ``fingerprint()``, or None when it has none (a per-process template then)."""
    method = getattr(schema, "fingerprint", None)
    if not callable(method):
        return None
    value = method()
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigurationError(
            f"{type(schema).__name__}.fingerprint() must return a non-empty str (or None), not {value!r}."
        )
    return hashlib.sha256(value.encode()).hexdigest()


def metadata_ddl(metadata: MetaData) -> str:
    """The PostgreSQL DDL ``create_all`` would send for ``metadata``, in a stable order."""
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.schema import CreateIndex, CreateTable

    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    parts: List[str] = [f"schema {name}" for name in non_public_schemas(metadata)]
    for table in metadata.sorted_tables:
        parts.append(str(CreateTable(table).compile(dialect=dialect)).strip())
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            parts.append(str(CreateIndex(index).compile(dialect=dialect)).strip())
        for column in table.columns:
            enums = getattr(column.type, "enums", None)
            if enums:
                parts.append(f"enum {getattr(column.type, 'name', '')} {list(enums)!r}")
    return "\n".join(parts)
