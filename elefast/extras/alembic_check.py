"""Do a project's Alembic migrations build what its models declare? (``assertMigrationsMatch``, ``check``)

Needs the ``alembic`` extra. :func:`migration_differences` runs Alembic's own comparison
(``compare_metadata``, with types) between a database elefast migrated and the models'
``MetaData``.
"""

from __future__ import annotations

from typing import Any, List

from elefast._engines.urls import sync_url

__all__ = ["migration_differences"]


def migration_differences(url: Any, metadata: Any) -> List[str]:
    """How the migrated database at ``url`` differs from ``metadata`` (Alembic's own comparison).

    ``url`` is a database elefast migrated (``self.database.url`` in a test); the result is
    one line per difference (a table, column, index, constraint or type that the models
    declare and the migrations do not make, or the other way round), empty when they match.
    Alembic's ``alembic_version`` table is ignored.
    """
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import NullPool, create_engine

    engine = create_engine(sync_url(url), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            found = compare_metadata(context, metadata)
    finally:
        engine.dispose()
    return [_describe(difference) for difference in found]


def _describe(difference: Any) -> str:
    """One line for one of ``compare_metadata``'s differences (a tuple, or a list of modify tuples)."""
    if isinstance(difference, list):
        return "; ".join(_describe(part) for part in difference)
    action, *rest = difference
    if action.startswith("modify_") and len(rest) == 6:  # (schema, table, column, existing, old, new)
        _, table, column, _, old, new = rest
        what = action[len("modify_"):]
        return f"{action}: {table}.{column}: {what} {old} in the migrations, {new} in the models"
    parts = []
    for item in rest:
        if item is None:
            continue  # the default schema
        name = getattr(item, "name", None)
        table = getattr(getattr(item, "table", None), "name", None)
        parts.append(f"{table}.{name}" if table and name else str(name if name is not None else item))
    named = [part for part in parts if not any(other.startswith(part + ".") for other in parts)]
    return f"{action}: {', '.join(named)}"
