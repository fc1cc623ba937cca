"""Tests of elefast.extras.alembic.AlembicMigrator with a real migrations folder."""

import os
import tempfile
import traceback
import unittest
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from elefast import AsyncDatabaseServer, DatabaseServer, Migrator
from elefast.asyncio import AsyncMigrator
from elefast.errors import ConfigurationError, MigrationError
from elefast.extras.alembic import AlembicMigrator
from tests import support

HERE = Path(__file__).resolve().parent
INI = HERE / "alembic_project" / "alembic.ini"
TOML = HERE / "alembic_project" / "pyproject.toml"
BROKEN = HERE / "alembic_broken" / "alembic.ini"


def read_state(connection):
    """(alembic version, seed account names, whether ledger.entries exists)."""
    version = connection.execute(text("select version_num from alembic_version")).scalar()
    names = connection.execute(text("select name from accounts order by id")).scalars().all()
    ledger = connection.execute(text("select to_regclass('ledger.entries') is not null")).scalar()
    return version, names, ledger


class AlembicSyncTests(unittest.TestCase):
    def setUp(self):
        self.prefix = support.unique_prefix("al")
        self.addCleanup(lambda: self.assertEqual(support.databases(self.prefix + "%"), []))
        self.addCleanup(support.drop_templates, self.prefix)

    def migrate_and_check(self, config_path):
        server = DatabaseServer(support.server_url(), schema=AlembicMigrator(config_path))
        self.addCleanup(server.close)
        for _ in range(2):  # both clones carry the migrated schema and its seed row
            with server.create_database(prefix=self.prefix) as database, database.engine.connect() as c:
                self.assertEqual(read_state(c), ("0002", ["admin"], True))

    def test_ini_upgrade_head(self):
        """alembic.ini: migrations run to head once; every clone has tables and seed rows."""
        self.migrate_and_check(INI)

    def test_toml_config(self):
        """A TOML config ([tool.alembic]) works the same way."""
        self.migrate_and_check(TOML)

    def test_runs_from_another_directory(self):
        """A relative script_location is found next to alembic.ini from any working directory."""
        old = os.getcwd()
        with tempfile.TemporaryDirectory() as elsewhere:
            os.chdir(elsewhere)
            try:
                self.migrate_and_check(INI)
            finally:
                os.chdir(old)

    def test_is_a_migrator_for_both_apis(self):
        """AlembicMigrator satisfies both the Migrator and AsyncMigrator protocols."""
        migrator = AlembicMigrator(INI)
        self.assertIsInstance(migrator, Migrator)
        self.assertIsInstance(migrator, AsyncMigrator)

    def test_missing_config(self):
        """A config path that does not exist is refused at once, naming the path."""
        with self.assertRaises(ConfigurationError) as caught:
            AlembicMigrator(HERE / "no_such" / "alembic.ini")
        self.assertIn("no_such", str(caught.exception))

    def test_broken_env_py(self):
        """A broken env.py raises MigrationError with its message; no template remains."""
        server = DatabaseServer(support.server_url(), schema=AlembicMigrator(BROKEN))
        self.addCleanup(server.close)
        with self.assertRaises(MigrationError) as caught:
            server.create_database(prefix=self.prefix)
        self.assertIn("env.py is broken on purpose", str(caught.exception))

    def test_migration_failing_halfway_names_it(self):
        """A migration that fails halfway: MigrationError names its revision and file; no template remains."""
        with tempfile.TemporaryDirectory() as directory:
            server = DatabaseServer(support.server_url(),
                                    schema=AlembicMigrator(support.alembic_project_failing_halfway(directory)))
            self.addCleanup(server.close)
            with self.assertRaises(MigrationError) as caught:
                server.create_database(prefix=self.prefix)
        message = str(caught.exception)
        self.assertRegex(message, r"Alembic revision 0003 \(0003_halfway.py, line \d+\) failed: ProgrammingError")
        self.assertEqual(message.count("0003_halfway.py"), 1)  # said once
        self.assertNotIn("ChainMigrator", message)  # no chain here: no note about one
        self.assertIn("no_such_table", message)
        self.assertEqual(support.databases(self.prefix + "%"), [])
        # On screen, too, the message comes once, and the database error stays in the chain.
        error = caught.exception
        shown = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        self.assertEqual(shown.count("Alembic revision 0003"), 1, shown)
        causes = []
        while error.__cause__ is not None:
            error = error.__cause__
            causes.append(error)
        self.assertTrue(any(isinstance(cause, DBAPIError) for cause in causes), causes)


class AlembicAsyncTests(unittest.IsolatedAsyncioTestCase):
    def setUp(self):
        self.prefix = support.unique_prefix("aa")
        self.addCleanup(lambda: self.assertEqual(support.databases(self.prefix + "%"), []))
        self.addCleanup(support.drop_templates, self.prefix)

    async def test_async_upgrade_head(self):
        """The async server runs the same migrations through run_sync, with asyncpg."""
        server = AsyncDatabaseServer(support.server_url(), schema=AlembicMigrator(INI))
        self.addAsyncCleanup(server.close)
        async with await server.create_database(prefix=self.prefix) as database:
            async with database.engine.connect() as connection:
                state = await connection.run_sync(read_state)
        self.assertEqual(state, ("0002", ["admin"], True))

    async def test_async_broken_env_py(self):
        """A broken env.py fails the async build with MigrationError too."""
        server = AsyncDatabaseServer(support.server_url(), schema=AlembicMigrator(BROKEN))
        self.addAsyncCleanup(server.close)
        with self.assertRaises(MigrationError):
            await server.create_database(prefix=self.prefix)


if __name__ == "__main__":
    unittest.main()
