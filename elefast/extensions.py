"""PostgreSQL extensions in every test's database: ``extensions = ("vector", "pg_trgm")``.

On a test class, ``extensions`` puts an :class:`Extensions` step before the class's ``schema``
(a :class:`~elefast.migrators.ChainMigrator`), so the extensions are created once, in the
template, and every clone has them. For a server of your own, or the pytest plugin, chain it
yourself::

    schema = ChainMigrator(Extensions("vector"), AlembicMigrator("alembic.ini"))

The names are part of the template's identity: adding one builds a new template. A server that
lacks one fails the build with the extensions it has and how to get the missing one.
"""

from __future__ import annotations

import re
from typing import Any, Optional, Sequence, Tuple

from sqlalchemy import Connection, text

from elefast.errors import ConfigurationError, MigrationError

__all__ = ["Extensions", "with_extensions"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")

#: Where to get extensions that are not in PostgreSQL's own contrib package.
WHERE_TO_GET = {
    "vector": "pgvector: pip install 'elefast[server]' (its PostgreSQL ships pgvector) and leave "
              "ELEFAST_DATABASE_URL unset, or install your distribution's pgvector package "
              "(Debian: postgresql-<major>-pgvector)",
    "postgis": "PostGIS: your distribution's package (Debian: postgresql-<major>-postgis-3)",
    "timescaledb": "TimescaleDB: the timescaledb package for your PostgreSQL major",
}


class Extensions:
    """A migrator step that creates PostgreSQL extensions (``CREATE EXTENSION IF NOT EXISTS``)."""

    _elefast_fingerprinted = ("names",)

    def __init__(self, *names: str) -> None:
        for name in names:
            if not isinstance(name, str) or not _NAME.match(name):
                raise ConfigurationError(f"Extensions: {name!r} is not an extension name (e.g. 'vector', 'pg_trgm').")
        self.names: Tuple[str, ...] = tuple(dict.fromkeys(names))

    def __repr__(self) -> str:
        return f"Extensions({', '.join(map(repr, self.names))})"

    def fingerprint(self) -> Optional[str]:
        """The extension names, in order."""
        return "extensions " + ",".join(self.names)

    def migrate(self, connection: Connection) -> None:
        """Create each extension; a missing one raises :class:`~elefast.errors.MigrationError` with the fix."""
        available = set(connection.execute(text("SELECT name FROM pg_available_extensions")).scalars())
        missing = [name for name in self.names if name not in available]
        if missing:
            raise MigrationError(_missing_message(missing, available, connection))
        for name in self.names:
            connection.execute(text(f'CREATE EXTENSION IF NOT EXISTS "{name}"'))

    async def migrate_async(self, connection: Any) -> None:
        """:meth:`migrate` on an ``AsyncConnection``."""
        await connection.run_sync(self.migrate)

    def verify(self, connection: Connection) -> None:
        """Raise :class:`~elefast.errors.MigrationError` unless every extension is in the template."""
        present = set(connection.execute(text("SELECT extname FROM pg_extension")).scalars())
        absent = [name for name in self.names if name not in present]
        if absent:
            raise MigrationError(f"{self!r}: the template lacks {', '.join(absent)} after the build.")


def _missing_message(missing: Sequence[str], available: set, connection: Connection) -> str:  # type: ignore[type-arg]
    version = connection.execute(text("SHOW server_version")).scalar()
    lines = [f"The server (PostgreSQL {version}) has no extension {', '.join(repr(n) for n in missing)}. "
             f"It has: {', '.join(sorted(available)) or 'none'}."]
    otherwise = "install it on the server (its package for your PostgreSQL major), or use a server that has it"
    for name in missing:
        lines.append(f"To get {name!r}: {WHERE_TO_GET.get(name, otherwise)}.")
    return "\n".join(lines)


def with_extensions(schema: Any, names: Sequence[str]) -> Any:
    """``schema`` with an :class:`Extensions` step before it (``schema`` itself when ``names`` is empty)."""
    if not names:
        return schema
    from elefast.migrators import ChainMigrator

    step = Extensions(*names)
    return step if schema is None else ChainMigrator(step, schema)
