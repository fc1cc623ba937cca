"""The project's base test classes: the one place that knows about elefast.

Test modules subclass these instead of ``unittest.TestCase``. The schema comes from the
application's own Alembic migrations (with their seed data), built once into a template
that later runs reuse until a migration changes.
"""

import unittest
from pathlib import Path

from elefast import AsyncPostgresTestCase, PostgresTestCase
from elefast.extras.alembic import AlembicMigrator

MIGRATIONS = AlembicMigrator(Path(__file__).resolve().parent.parent / "alembic.ini")


class DatabaseTestCase(PostgresTestCase, unittest.TestCase):
    """Each test gets its own database, migrated and seeded: commit freely."""

    schema = MIGRATIONS


class AsyncDatabaseTestCase(AsyncPostgresTestCase, unittest.IsolatedAsyncioTestCase):
    """The same for ``async def`` tests (asyncpg)."""

    schema = MIGRATIONS
