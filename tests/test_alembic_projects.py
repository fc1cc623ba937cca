"""Real Alembic projects as users have them: one made by ``alembic init`` and left unchanged, one whose
``env.py`` migrates the app's own database, Flask-Migrate's folder layout, a ``Config`` object, broken
configs. Each gives the right template or one MigrationError naming the fix, in this run and the next."""

import contextlib
import io
import logging
import os
import re
import shutil
import tempfile
import textwrap
import unittest
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from sqlalchemy import Column, Integer, MetaData, String, Table, text

from elefast import AsyncDatabaseServer, DatabaseServer
from elefast._schema.fingerprints import identity
from elefast.errors import ConfigurationError, MigrationError
from elefast.extras.alembic import AlembicMigrator
from tests import support


def psycopg_url(url):
    """``url`` with the psycopg 3 driver (a bare postgresql:// means psycopg2 to SQLAlchemy)."""
    return url.replace("postgresql://", "postgresql+psycopg://", 1)

REVISION = '''"""Create the authors table."""
from alembic import op
import sqlalchemy as sa

revision = "a1"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("authors", sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.String(40)))
    op.execute("INSERT INTO authors (name) VALUES ('seed')")


def downgrade():
    op.drop_table("authors")
'''

#: An env.py as many apps write it: the URL comes from the app's settings (here an environment variable).
OWN_URL_ENV = '''
import os
from alembic import context
from sqlalchemy import create_engine

def run_migrations_online():
    engine = create_engine(os.environ["EFT_APP_DATABASE_URL"])
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=None)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()

run_migrations_online()
'''


MODELS = MetaData()
Table("authors", MODELS, Column("id", Integer, primary_key=True), Column("name", String(40)))
DRIFTED = MetaData()  # what the models say after someone added a column and forgot the migration
Table("authors", DRIFTED, Column("id", Integer, primary_key=True), Column("name", String(60)),
      Column("email", String(80)))


def stock_project(root: Path, template: str = "generic") -> Path:
    """``alembic init`` in ``root`` (unchanged) plus one revision; the ini's path."""
    ini = root / "alembic.ini"
    with contextlib.redirect_stdout(io.StringIO()):  # its "Generating ..." lines
        command.init(Config(str(ini)), str(root / "migrations"), template=template)
    (root / "migrations" / "versions" / "a1_authors.py").write_text(REVISION)
    return ini


def packaged_project(root: Path, package: str) -> Path:
    """Migrations shipped inside an installed package, as mlflow's are: ``<package>/store/db_migrations``
    holds env.py and an alembic.ini whose script_location is relative to site-packages. The
    ini's path; ``root / 'site'`` must be on sys.path."""
    folder = root / "site" / package / "store" / "db_migrations"
    folder.parent.mkdir(parents=True)
    for init in (folder.parent.parent / "__init__.py", folder.parent / "__init__.py"):
        init.write_text("")
    scratch = root / "scratch.ini"
    with contextlib.redirect_stdout(io.StringIO()):
        command.init(Config(str(scratch)), str(folder))
    (folder / "__init__.py").write_text("")
    (folder / "versions" / "a1_authors.py").write_text(REVISION)
    ini = folder / "alembic.ini"
    lines = scratch.read_text().splitlines()  # alembic init's ini (logging sections: env.py reads them)
    located = [f"script_location = {package}/store/db_migrations" if line.startswith("script_location")
               else line for line in lines]
    ini.write_text("\n".join(located) + "\n")
    return ini


def authors(database):
    with database.engine.connect() as connection:
        return connection.execute(text("SELECT name FROM authors")).scalars().all()


class AlembicProjectTests(unittest.TestCase):
    def setUp(self):
        self.prefix = support.unique_prefix("alp")
        self.root = Path(tempfile.mkdtemp(prefix="elefast-alembic-"))
        self.addCleanup(lambda: self.assertEqual(support.databases(self.prefix + "%"), []))
        self.addCleanup(support.drop_templates, self.prefix)

    def clone_once(self, migrator):
        server = DatabaseServer(support.server_url(), schema=migrator)
        try:
            with server.create_database(prefix=self.prefix) as database:
                return authors(database)
        finally:
            server.close()

    def test_stock_alembic_init_project_works_unchanged(self):
        """The env.py `alembic init` writes connects to sqlalchemy.url: elefast points it at the template."""
        ini = stock_project(self.root)
        root_handlers = list(logging.getLogger().handlers)
        self.assertIn("driver://user:pass@localhost/dbname", ini.read_text())  # really untouched
        for _ in range(2):  # built, then reused
            self.assertEqual(self.clone_once(AlembicMigrator(ini)), ["seed"])
        self.assertFalse(logging.getLogger("elefast").disabled)  # env.py's fileConfig did not silence us
        self.assertEqual(logging.getLogger().handlers, root_handlers)  # nor replace the root's handlers

    def test_migrations_folder_and_config_object(self):
        """The folder holding env.py (Flask-Migrate's layout: no script_location) and a Config work too."""
        ini = stock_project(self.root)
        folder = self.root / "migrations"
        (folder / "alembic.ini").write_text(ini.read_text().replace("script_location = %(here)s/migrations\n", "")
                                            .replace("script_location = migrations\n", ""))
        self.assertEqual(self.clone_once(AlembicMigrator(folder)), ["seed"])
        config = Config(str(ini))
        self.assertEqual(self.clone_once(AlembicMigrator(config)), ["seed"])
        self.assertNotIn("connection", config.attributes)  # the caller's Config is left as it was
        self.assertEqual(config.get_main_option("sqlalchemy.url"), "driver://user:pass@localhost/dbname")

    def test_migrations_inside_an_installed_package(self):
        """mlflow's shape: its ini (script_location relative to site-packages), 'package:folder', or the
        package's dotted name, from any current directory."""
        import sys

        package = f"eftpkg_{self.prefix}"
        ini = packaged_project(self.root, package)
        sys.path.insert(0, str(self.root / "site"))
        self.addCleanup(sys.path.remove, str(self.root / "site"))
        self.addCleanup(lambda: [sys.modules.pop(n) for n in list(sys.modules) if n.startswith(package)])
        for given in (ini, f"{package}.store:db_migrations", f"{package}.store.db_migrations"):
            self.assertEqual(self.clone_once(AlembicMigrator(given)), ["seed"], given)
        with self.assertRaisesRegex(ConfigurationError, "importable package holding env.py"):
            AlembicMigrator(f"{package}.store.nosuch")

    def test_env_py_that_migrates_the_apps_own_database(self):
        """An env.py that ignores the connection would migrate the developer's database: refused before
        the first migration, naming env.py's line; nothing ran there, nothing kept."""
        ini = stock_project(self.root)
        (self.root / "migrations" / "env.py").write_text(OWN_URL_ENV)
        devdb = f"{self.prefix}_dev"
        support.execute(f'CREATE DATABASE "{devdb}"')
        self.addCleanup(support.execute, f'DROP DATABASE IF EXISTS "{devdb}" WITH (FORCE)')
        os.environ["EFT_APP_DATABASE_URL"] = psycopg_url(support.url_with(database=devdb))
        self.addCleanup(os.environ.pop, "EFT_APP_DATABASE_URL")
        for _ in range(2):  # the next run says the same: the empty template was not kept
            with self.assertLogs("elefast", logging.INFO) as logs, self.assertRaises(MigrationError) as caught:
                self.clone_once(AlembicMigrator(ini))
            self.assertFalse([line for line in logs.output if "reused" in line], logs.output)
            message = str(caught.exception)
            self.assertIn("about to run the migrations on a connection to", message)
            self.assertIn(devdb, message)
            self.assertRegex(message, re.escape(str(self.root / "migrations" / "env.py")) + r":\d+: ")
            self.assertIn('config.attributes.get("connection")', message)
            self.assertEqual(support.databases(self.prefix + "_tpl%"), [])
            with psycopg.connect(support.libpq_dsn(support.url_with(database=devdb))) as dev:
                tables = dev.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0]
            self.assertEqual(tables, 0, "the developer's database was migrated")

    def test_env_py_whose_own_database_does_not_exist(self):
        ini = stock_project(self.root)
        (self.root / "migrations" / "env.py").write_text(OWN_URL_ENV)
        os.environ["EFT_APP_DATABASE_URL"] = psycopg_url(support.url_with(database=f"{self.prefix}_nosuch"))
        self.addCleanup(os.environ.pop, "EFT_APP_DATABASE_URL")
        with self.assertRaises(MigrationError) as caught:
            self.clone_once(AlembicMigrator(ini))
        self.assertIn("env.py could not connect", str(caught.exception))
        self.assertIn("does not exist", str(caught.exception))
        self.assertEqual(support.databases(self.prefix + "%"), [])

    def test_alembic_config_errors_are_migration_errors_with_the_fix(self):
        no_location = self.root / "bare.ini"
        no_location.write_text("[alembic]\n")
        with self.assertRaisesRegex(MigrationError, "script_location.*AlembicMigrator\\('migrations'\\)"):
            self.clone_once(AlembicMigrator(no_location))
        missing = self.root / "missing.ini"
        missing.write_text("[alembic]\nscript_location = no/such/place\n")
        with self.assertRaisesRegex(MigrationError, "Path doesn't exist.*absolute path"):
            self.clone_once(AlembicMigrator(missing))
        with self.assertRaisesRegex(MigrationError, "No module named 'eft_no_such_pkg'.*sys.path"):
            identity(AlembicMigrator("eft_no_such_pkg:migrations"))  # while fingerprinting, before any build
        ini = stock_project(self.root)  # its env.py calls fileConfig() on an ini without logging sections
        env_py = self.root / "migrations" / "env.py"
        source = env_py.read_text()
        env_py.write_text("from eft_no_such_app.models import Base\n" + source)  # run from the wrong folder
        with self.assertRaisesRegex(MigrationError, "No module named 'eft_no_such_app'.*project's root"):
            self.clone_once(AlembicMigrator(ini))
        env_py.write_text(source)
        no_logging = self.root / "no_logging.ini"
        no_logging.write_text(f"[alembic]\nscript_location = {self.root / 'migrations'}\n")
        with self.assertRaisesRegex(MigrationError, "fileConfig\\(\\) found no \\[formatters\\] section in .*"
                                                    "no_logging.ini: copy the \\[loggers\\]"):
            self.clone_once(AlembicMigrator(no_logging))


class EnvPyAdviceTests(unittest.TestCase):
    def test_reading_env_py(self):
        """Only an env.py that reads config.attributes["connection"] counts as taking it."""
        from elefast.extras.alembic import env_py_shares_connection

        with tempfile.TemporaryDirectory() as root:
            path = Path(root) / "env.py"
            for source, shares in (
                ('connection = config.attributes.get("connection")\n', True),
                ("connectable = config.attributes['connection']\n", True),
                ('"""uses config attributes"""\nwith engine.connect() as connection:\n    pass\n', False),
                ("with connectable.connect() as connection:\n    context.configure(connection=connection)\n", False),
            ):
                path.write_text(source)
                self.assertIs(env_py_shares_connection(path), shares, source)

    def test_the_alembic_extra_imports_without_greenlet(self):
        """A sync-only project (SQLAlchemy 2.1 installs no greenlet) can import AlembicMigrator."""
        import subprocess
        import sys

        code = ("import sys; sys.modules['greenlet'] = None\n"
                "from elefast.extras.alembic import AlembicMigrator\n"
                "print('imported', AlembicMigrator.__name__)")
        out = subprocess.run([sys.executable, "-c", code], cwd=str(support.ROOT), capture_output=True, text=True,
                             timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("imported AlembicMigrator", out.stdout)

    def test_init_and_doctor_say_what_to_add_to_env_py(self):
        import subprocess
        import sys

        with tempfile.TemporaryDirectory() as root:
            stock_project(Path(root))
            env = dict(os.environ, PYTHONPATH=str(support.ROOT))
            for command_line in (["init", "--yes", "--path", "tests/base.py"], ["doctor"]):
                out = subprocess.run([sys.executable, "-m", "elefast", *command_line], cwd=root, env=env,
                                     capture_output=True, text=True, timeout=120)
                self.assertIn("does not use config.attributes['connection']", out.stdout, command_line)
                self.assertIn('connection = config.attributes.get("connection")', out.stdout)
            shutil.copy(support.ROOT / "tests" / "alembic_project" / "migrations" / "env.py",
                        Path(root) / "migrations" / "env.py")
            out = subprocess.run([sys.executable, "-m", "elefast", "doctor"], cwd=root, env=env,
                                 capture_output=True, text=True, timeout=120)
            self.assertIn("env.py takes elefast's connection", out.stdout)


class MigrationsMatchModelsTests(unittest.TestCase):
    def setUp(self):
        self.prefix = support.unique_prefix("alm")
        self.root = Path(tempfile.mkdtemp(prefix="elefast-alembic-"))
        self.ini = stock_project(self.root)
        self.addCleanup(support.drop_templates, self.prefix)
        self.addCleanup(support.drop_templates, "elefast_check")

    def test_assert_migrations_match_on_the_mixin(self):
        from elefast import PostgresTestCase

        ini = self.ini

        class Check(PostgresTestCase, unittest.TestCase):
            schema = AlembicMigrator(ini)
            database_url = support.server_url()
            database_prefix = self.prefix

            def test_matches(self):
                self.assertMigrationsMatch(MODELS)

            def test_drifted(self):
                self.assertMigrationsMatch(DRIFTED)

        result = unittest.TestResult()
        unittest.defaultTestLoader.loadTestsFromTestCase(Check).run(result)
        self.assertEqual(result.errors, [])
        self.assertEqual([test.id().rsplit(".", 1)[1] for test, _ in result.failures], ["test_drifted"])
        message = result.failures[0][1]
        self.assertIn("2 differences", message)
        self.assertIn("add_column: authors.email", message)
        self.assertIn("modify_type: authors.name: type VARCHAR(40) in the migrations, VARCHAR(60) in the models",
                      message)

    def test_assert_migrations_match_on_the_async_mixin(self):
        from elefast import AsyncPostgresTestCase

        ini = self.ini

        class Check(AsyncPostgresTestCase, unittest.IsolatedAsyncioTestCase):
            schema = AlembicMigrator(ini)
            database_url = support.server_url()
            database_prefix = self.prefix

            async def test_matches(self):
                self.assertMigrationsMatch(MODELS)

            async def test_drifted(self):
                self.assertMigrationsMatch(DRIFTED)

        result = unittest.TestResult()
        unittest.defaultTestLoader.loadTestsFromTestCase(Check).run(result)
        self.assertEqual(result.errors, [])
        self.assertEqual([test.id().rsplit(".", 1)[1] for test, _ in result.failures], ["test_drifted"])
        self.assertIn("add_column: authors.email", result.failures[0][1])

    def test_check_command(self):
        command_line = ["-m", "elefast", "check", "--alembic", str(self.ini), "--url", support.server_url()]
        import subprocess
        import sys

        ok = subprocess.run([sys.executable, *command_line, "--metadata", "tests.test_alembic_projects:MODELS"],
                            cwd=str(support.ROOT), capture_output=True, text=True, timeout=120)
        self.assertEqual(ok.returncode, 0, ok.stderr)
        self.assertIn("0 differences", ok.stdout)
        drifted = subprocess.run([sys.executable, *command_line, "--metadata", "tests.test_alembic_projects:DRIFTED"],
                                 cwd=str(support.ROOT), capture_output=True, text=True, timeout=120)
        self.assertEqual(drifted.returncode, 1, drifted.stderr)
        self.assertIn("add_column", drifted.stdout)
        bad = subprocess.run([sys.executable, *command_line, "--metadata", "tests.no_such_module:x"],
                             cwd=str(support.ROOT), capture_output=True, text=True, timeout=120)
        self.assertEqual(bad.returncode, 2)
        self.assertIn("package.module:attribute", bad.stderr)


class AsyncAlembicProjectTests(unittest.IsolatedAsyncioTestCase):
    async def test_stock_project_on_the_async_server(self):
        prefix = support.unique_prefix("alpa")
        self.addCleanup(support.drop_templates, prefix)
        with tempfile.TemporaryDirectory() as root:
            server = AsyncDatabaseServer(support.server_url(), schema=AlembicMigrator(stock_project(Path(root))))
            async with await server.create_database(prefix=prefix) as database:
                async with database.engine.connect() as connection:
                    names = (await connection.execute(text("SELECT name FROM authors"))).scalars().all()
            await server.close()
        self.assertEqual(names, ["seed"])

    async def test_alembic_init_async_project_unchanged(self):
        """``alembic init -t async``: its env.py calls asyncio.run(), which cannot run inside the async
        server's loop; elefast gives it a thread of its own. On the sync server too."""
        prefix = support.unique_prefix("alpa")
        self.addCleanup(support.drop_templates, prefix)
        with tempfile.TemporaryDirectory() as root:
            ini = stock_project(Path(root), template="async")
            self.assertIn("asyncio.run(run_async_migrations())", (Path(root) / "migrations" / "env.py").read_text())
            server = AsyncDatabaseServer(support.server_url(), schema=AlembicMigrator(ini))
            async with await server.create_database(prefix=prefix) as database:
                async with database.engine.connect() as connection:
                    names = (await connection.execute(text("SELECT name FROM authors"))).scalars().all()
            await server.close()
            self.assertEqual(names, ["seed"])
            support.drop_templates(prefix)
            sync_server = DatabaseServer(support.server_url(), schema=AlembicMigrator(ini))  # inside this loop
            try:
                with sync_server.create_database(prefix=prefix) as database:
                    self.assertEqual(authors(database), ["seed"])
            finally:
                sync_server.close()

    async def test_packaged_migrations_on_the_async_server(self):
        import sys

        prefix = support.unique_prefix("alpa")
        self.addCleanup(support.drop_templates, prefix)
        with tempfile.TemporaryDirectory() as root:
            packaged_project(Path(root), f"eftapkg_{prefix}")
            sys.path.insert(0, str(Path(root) / "site"))
            try:
                server = AsyncDatabaseServer(support.server_url(),
                                             schema=AlembicMigrator(f"eftapkg_{prefix}.store.db_migrations"))
                async with await server.create_database(prefix=prefix) as database:
                    async with database.engine.connect() as connection:
                        names = (await connection.execute(text("SELECT name FROM authors"))).scalars().all()
                await server.close()
            finally:
                sys.path.remove(str(Path(root) / "site"))
        self.assertEqual(names, ["seed"])

    async def test_env_py_elsewhere_on_the_async_server(self):
        prefix = support.unique_prefix("alpa")
        with tempfile.TemporaryDirectory() as root:
            ini = stock_project(Path(root))
            (Path(root) / "migrations" / "env.py").write_text(textwrap.dedent(OWN_URL_ENV))
            devdb = f"{prefix}_dev"
            support.execute(f'CREATE DATABASE "{devdb}"')
            self.addCleanup(support.execute, f'DROP DATABASE IF EXISTS "{devdb}" WITH (FORCE)')
            os.environ["EFT_APP_DATABASE_URL"] = psycopg_url(support.url_with(database=devdb))
            self.addCleanup(os.environ.pop, "EFT_APP_DATABASE_URL")
            server = AsyncDatabaseServer(support.server_url(), schema=AlembicMigrator(ini))
            with self.assertRaisesRegex(MigrationError, f"about to run the migrations on a connection to .*{devdb}"):
                await server.create_database(prefix=prefix)
            await server.close()
        self.assertEqual(support.databases(prefix + "_tpl%"), [])


if __name__ == "__main__":
    unittest.main()
