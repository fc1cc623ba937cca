"""elefast: a real, isolated PostgreSQL database for every test, fast.

Subclass :class:`PostgresTestCase` (or :class:`AsyncPostgresTestCase`) in a
``unittest`` suite, or use :class:`DatabaseServer` directly.

The names below are imported on first use, so that light parts of the package
(the local server's supervisor, the CLI) start without loading SQLAlchemy.

How it works, in the order a test meets it (docs: "How it works"); the folders are the rooms::

    testcase.py pytest_plugin.py  the front ends (the mixins, the fixtures); _cli/ the command line
    _testing/          the test side: class attributes, isolation modes, app engines, guard, provider
    provision/         where the server is: a URL, a throwaway local server, Docker
    sync.py asyncio.py the public servers and databases (thin); snapshots.py
    _server/           one server for both kinds: admin core, templates, clone pool, ownership, disk
    migrators.py       what builds a template (MetaData, chains; sql_files.py, extras/alembic.py);
                       _schema/ the fingerprints that name a shared one
    _engines/          URLs, engine options, sync/async kinds, steering, connection slots
    _base/ errors.py   every statement, the logger, fork and exit; every error
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from elefast.asyncio import (
        AsyncDatabase,
        AsyncDatabaseServer,
        AsyncMetadataMigrator,
        AsyncMigrator,
        CanBeTurnedIntoAsyncEngine,
    )
    from elefast.errors import DatabaseNotReadyError, ElefastError
    from elefast.extras.alembic import AlembicMigrator as AlembicMigrator
    from elefast.migrators import ChainMigrator
    from elefast.sql_files import SQLFileMigrator
    from elefast.sync import (
        CanBeTurnedIntoEngine,
        Database,
        DatabaseServer,
        MetadataMigrator,
        Migrator,
    )
    from elefast.testcase import AsyncPostgresTestCase, PostgresTestCase

__all__ = [
    "AsyncDatabase",
    "AsyncDatabaseServer",
    "AsyncMetadataMigrator",
    "AsyncMigrator",
    "AsyncPostgresTestCase",
    "CanBeTurnedIntoAsyncEngine",
    "CanBeTurnedIntoEngine",
    "ChainMigrator",
    "Database",
    "DatabaseNotReadyError",
    "DatabaseServer",
    "ElefastError",
    "MetadataMigrator",
    "Migrator",
    "PostgresTestCase",
    "SQLFileMigrator",
]

__version__ = "0.1.0"

_HOMES = {
    "elefast.asyncio": ("AsyncDatabase", "AsyncDatabaseServer", "AsyncMetadataMigrator", "AsyncMigrator",
                        "CanBeTurnedIntoAsyncEngine"),
    "elefast.errors": ("DatabaseNotReadyError", "ElefastError"),
    "elefast.extras.alembic": ("AlembicMigrator",),  # needs the alembic extra: not in __all__ (import *)
    "elefast.migrators": ("ChainMigrator",),
    "elefast.sql_files": ("SQLFileMigrator",),
    "elefast.sync": ("CanBeTurnedIntoEngine", "Database", "DatabaseServer", "MetadataMigrator", "Migrator"),
    "elefast.testcase": ("AsyncPostgresTestCase", "PostgresTestCase"),
}
_WHERE = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'elefast' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
