"""elefast: a real, isolated PostgreSQL database for every test, fast.

Subclass :class:`PostgresTestCase` (or :class:`AsyncPostgresTestCase`) in a
``unittest`` suite, or use :class:`DatabaseServer` directly.
"""

from elefast.asyncio import (
    AsyncDatabase,
    AsyncDatabaseServer,
    AsyncMetadataMigrator,
    AsyncMigrator,
    CanBeTurnedIntoAsyncEngine,
)
from elefast.errors import DatabaseNotReadyError, ElefastError
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
    "Database",
    "DatabaseNotReadyError",
    "DatabaseServer",
    "ElefastError",
    "MetadataMigrator",
    "Migrator",
    "PostgresTestCase",
]

__version__ = "0.1.0"
