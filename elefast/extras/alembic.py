"""Utility functions for working with Alembic.

Needs the ``alembic`` extra: ``pip install 'elefast[alembic]'``.

:class:`AlembicMigrator` hands elefast's connection to your migrations through
``config.attributes["connection"]``, so your ``env.py`` must use a connection
it is given (Alembic's "sharing a connection" recipe)::

    def run_migrations_online():
        connection = config.attributes.get("connection")
        if connection is not None:          # elefast (or another caller) gave one
            context.configure(connection=connection, target_metadata=target_metadata)
            with context.begin_transaction():
                context.run_migrations()
            return
        ...  # your usual engine_from_config(...) code

For an async project the same branch works unchanged: elefast runs the
migrations through ``AsyncConnection.run_sync``, so ``env.py`` receives a
plain sync ``Connection``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from elefast._messages import first_line
from elefast.errors import ConfigurationError, MigrationError

try:
    from alembic import command
    from alembic.config import Config
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "elefast.extras.alembic needs Alembic. Install it: pip install 'elefast[alembic]'"
    ) from error

__all__ = ["AlembicMigrator"]


class AlembicMigrator:
    """Runs your migrations to create the testing database schema.

    Args:
        config_path: your ``alembic.ini``, or a ``pyproject.toml`` /
            ``alembic.toml`` holding a ``[tool.alembic]`` table. A relative
            ``script_location`` that does not exist from the current directory
            is looked up next to the config file, so tests run from anywhere.

    The migrations run up to ``head`` on the connection elefast passes, inside
    one transaction. Works for both :class:`~elefast.sync.DatabaseServer` and
    :class:`~elefast.asyncio.AsyncDatabaseServer`.
    """

    def __init__(self, config_path: os.PathLike[str] | str) -> None:
        path = Path(config_path)
        if not path.is_file():
            raise ConfigurationError(
                f"The Alembic config {str(path)!r} does not exist (looked from {os.getcwd()!r}). "
                "Pass the path of your alembic.ini, for example "
                "AlembicMigrator(Path(__file__).parent / 'alembic.ini')."
            )
        self.config_path = path.resolve()

    def __repr__(self) -> str:
        return f"AlembicMigrator({str(self.config_path)!r})"

    def config(self) -> Config:
        """A fresh Alembic ``Config`` for the file (a new one per migration run)."""
        if self.config_path.suffix == ".toml":
            config = Config(toml_file=str(self.config_path))
        else:
            config = Config(str(self.config_path))
        location = config.get_main_option("script_location")
        if location and not Path(location).is_absolute() and not Path(location).exists():
            beside = self.config_path.parent / location
            if beside.exists():
                config.set_main_option("script_location", str(beside))
        return config

    def fingerprint(self) -> str:
        """A digest of the migration scripts (``env.py``, ``versions/``) and the config's script options.

        Templates are reused by later runs and other processes while it is unchanged.
        """
        from alembic.script import ScriptDirectory

        config = self.config()
        script = ScriptDirectory.from_config(config)
        digest = hashlib.sha256()
        for option in ("script_location", "version_locations", "version_path_separator", "path_separator"):
            digest.update(f"{option}={config.get_main_option(option)}\n".encode())
        roots = [Path(script.dir)] + [Path(p) for p in (script.version_locations or [])]
        seen = set()
        for root in roots:
            for path in sorted(root.rglob("*")):
                if path.suffix not in (".py", ".sql") or "__pycache__" in path.parts or path in seen:
                    continue
                seen.add(path)
                digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
        return digest.hexdigest()

    def migrate(self, connection: Connection) -> None:
        """Upgrade the database behind ``connection`` to ``head``."""
        config = self.config()
        config.attributes["connection"] = connection
        config.attributes["configure_logger"] = False
        try:
            command.upgrade(config, "head")
        except Exception as error:
            revision = failed_revision(error)
            if revision is None:
                raise
            raise MigrationError(
                f"Alembic revision {revision} failed: {type(error).__name__}: {first_line(error)}"
            ) from error

    async def migrate_async(self, connection: AsyncConnection) -> None:
        """Upgrade the database behind an async ``connection`` to ``head`` (via ``run_sync``)."""
        await connection.run_sync(self.migrate)


def failed_revision(error: BaseException) -> Optional[str]:
    """Which migration ``error`` came from: ``'<revision> (<file>)'`` of the innermost script frame."""
    found = None
    traceback = error.__traceback__
    while traceback is not None:
        scope = traceback.tb_frame.f_globals
        if isinstance(scope.get("revision"), str) and "down_revision" in scope and callable(scope.get("upgrade")):
            found = f"{scope['revision']} ({os.path.basename(str(scope.get('__file__', '?')))})"
        traceback = traceback.tb_next
    return found
