"""Schemas that are not MetaData: SQL files, a real ``pg_dump`` output, and chained migrators for
histories that do not build from an empty database. Real servers, sync and async."""

import os
import shutil
import subprocess
import tempfile
import unittest
from pathlib import Path

from sqlalchemy import Column, Integer, MetaData, String, Table, text

from elefast import AsyncDatabaseServer, ChainMigrator, DatabaseServer, MetadataMigrator, SQLFileMigrator
from elefast._schema.fingerprints import identity
from elefast.errors import MigrationError
from elefast.extras.alembic import AlembicMigrator
from tests import support
from tests.test_alembic_projects import stock_project

TABLES = """
-- the schema; a semicolon inside a function body must not split it
CREATE TABLE authors (id serial PRIMARY KEY, "Full Name" text NOT NULL, note text);
CREATE FUNCTION shout(t text) RETURNS text LANGUAGE plpgsql AS $body$
BEGIN
    RETURN upper(t) || '!';  -- a comment; with a semicolon
END;
$body$;
/* a block comment; with /* a nested one; */ */
"""
DATA = "INSERT INTO authors (\"Full Name\", note) VALUES ('Ann', 'it''s; fine'), ('Bob', NULL);\n"

initial = MetaData()
Table("accounts", initial, Column("id", Integer, primary_key=True), Column("name", String(40)))

ALTERS_INITIAL = '''"""Starts from the table create_all made."""
from alembic import op
import sqlalchemy as sa

revision = "b1"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("accounts", sa.Column("email", sa.String(80)))
    op.execute("INSERT INTO accounts (name, email) VALUES ('seed', 'seed@example.com')")


def downgrade():
    op.drop_column("accounts", "email")
'''


def altering_project(root: Path) -> Path:
    """A stock ``alembic init`` project whose only revision alters a table create_all made; its ini."""
    ini = stock_project(root)
    os.remove(root / "migrations" / "versions" / "a1_authors.py")
    (root / "migrations" / "versions" / "b1_email.py").write_text(ALTERS_INITIAL)
    return ini


def rows(database, sql):
    with database.engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text(sql))]


def make_dump(path: Path, prefix: str, *options: str) -> Path:
    """A database with tables, awkward data and a function, dumped by the real pg_dump (plain format)."""
    source = f"{prefix}_src"
    support.execute(f'CREATE DATABASE "{source}"')
    try:
        url = support.url_with(database=source)
        from sqlalchemy import create_engine

        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        with engine.begin() as connection:
            connection.exec_driver_sql(TABLES)
            connection.exec_driver_sql(DATA)
            connection.exec_driver_sql("INSERT INTO authors (\"Full Name\", note) "
                                       "VALUES (E'Tab\\there', E'line\\nbreak \\\\ slash')")
        engine.dispose()
        dump = path / "dump.sql"
        subprocess.run(["pg_dump", *options, "--dbname", support.libpq_dsn(url), "--file", str(dump)], check=True)
        return dump
    finally:
        support.execute(f'DROP DATABASE IF EXISTS "{source}" WITH (FORCE)')


class SQLFileTests(unittest.TestCase):
    def setUp(self):
        self.prefix = support.unique_prefix("sqlf")
        self.dir = Path(tempfile.mkdtemp(prefix="elefast-sql-"))
        self.addCleanup(lambda: self.assertEqual(support.databases(self.prefix + "%"), []))
        self.addCleanup(support.drop_templates, self.prefix)

    def clone_rows(self, migrator, sql):
        server = DatabaseServer(support.server_url(), schema=migrator)
        try:
            with server.create_database(prefix=self.prefix) as database:
                return rows(database, sql)
        finally:
            server.close()

    def test_a_folder_applied_in_name_order(self):
        (self.dir / "002_data.sql").write_text(DATA)
        (self.dir / "001_tables.sql").write_text(TABLES)
        got = self.clone_rows(SQLFileMigrator(self.dir), 'SELECT shout("Full Name"), note FROM authors ORDER BY id')
        self.assertEqual(got, [("ANN!", "it's; fine"), ("BOB!", None)])

    def test_several_files_in_the_order_given(self):
        (self.dir / "a_data.sql").write_text(DATA)  # name order would put the data first
        (self.dir / "z_tables.sql").write_text(TABLES)
        migrator = SQLFileMigrator(self.dir / "z_tables.sql", str(self.dir / "a_data.sql"))
        got = self.clone_rows(migrator, 'SELECT "Full Name" FROM authors ORDER BY id')
        self.assertEqual(got, [("Ann",), ("Bob",)])
        with self.assertRaisesRegex(MigrationError, r"a_data.sql line 1 failed: .*authors"):
            self.clone_rows(SQLFileMigrator(self.dir / "a_data.sql", self.dir / "z_tables.sql"), "SELECT 1")

    def test_a_pg_dump_made_with_create_says_to_drop_it(self):
        dump = make_dump(self.dir, self.prefix, "--create")
        with self.assertRaisesRegex(MigrationError, r"dump.sql line \d+ failed: .*CREATE DATABASE cannot run inside "
                                                    r"a transaction block\. A dump made with pg_dump --create"):
            self.clone_rows(SQLFileMigrator(dump), "SELECT 1")

    def test_a_changed_file_is_a_new_template(self):
        (self.dir / "schema.sql").write_text(TABLES)
        before = identity(SQLFileMigrator(self.dir / "schema.sql"))[0]
        (self.dir / "schema.sql").write_text(TABLES + "CREATE TABLE more (id int);\n")
        self.assertNotEqual(identity(SQLFileMigrator(self.dir / "schema.sql"))[0], before)

    def test_a_real_pg_dump_with_schema_and_data(self):
        dump = make_dump(self.dir, self.prefix)
        self.assertIn("FROM stdin;", dump.read_text())
        got = self.clone_rows(SQLFileMigrator(dump), 'SELECT "Full Name", note, shout(\'x\') FROM authors ORDER BY id')
        self.assertEqual(got, [("Ann", "it's; fine", "X!"), ("Bob", None, "X!"),
                               ("Tab\there", "line\nbreak \\ slash", "X!")])
        insert = "INSERT INTO authors (\"Full Name\") VALUES ('new') RETURNING id"
        next_id = self.clone_rows(SQLFileMigrator(dump), insert)
        self.assertEqual(next_id, [(4,)])  # the dump's setval came along with its rows

    def test_psql_meta_commands_are_refused_with_their_line(self):
        (self.dir / "schema.sql").write_text("CREATE TABLE a (id int);\n\\connect other\nCREATE TABLE b (id int);\n")
        with self.assertRaisesRegex(MigrationError, r"schema.sql line 2: the psql meta-command \\connect"):
            self.clone_rows(SQLFileMigrator(self.dir / "schema.sql"), "SELECT 1")

    def test_a_failing_statement_names_file_and_line(self):
        (self.dir / "schema.sql").write_text("CREATE TABLE a (id int);\n\nINSERT INTO nowhere VALUES (1);\n")
        with self.assertRaisesRegex(MigrationError, r"schema.sql line 3 failed: .*nowhere"):
            self.clone_rows(SQLFileMigrator(self.dir / "schema.sql"), "SELECT 1")


class ChainTests(unittest.TestCase):
    def setUp(self):
        self.prefix = support.unique_prefix("chain")
        self.addCleanup(support.drop_templates, self.prefix)

    def test_create_all_then_upgrade(self):
        """A history whose first revision alters tables create_all made (mlflow's shape)."""
        with tempfile.TemporaryDirectory() as root:
            ini = altering_project(Path(root))
            shutil.copy(support.ROOT / "tests" / "alembic_project" / "migrations" / "env.py",
                        Path(root) / "migrations" / "env.py")  # one with the sharing-a-connection branch
            chain = ChainMigrator(MetadataMigrator(initial), AlembicMigrator(ini))
            self.assertIsNotNone(identity(chain)[0])
            server = DatabaseServer(support.server_url(), schema=chain)
            with server.create_database(prefix=self.prefix) as database:
                self.assertEqual(rows(database, "SELECT name, email FROM accounts"), [("seed", "seed@example.com")])
                self.assertEqual(rows(database, "SELECT version_num FROM alembic_version"), [("b1",)])
            server.close()

    def test_alembic_alone_fails_where_the_chain_works(self):
        with tempfile.TemporaryDirectory() as root:
            ini = altering_project(Path(root))
            server = DatabaseServer(support.server_url(), schema=AlembicMigrator(ini))
            with self.assertRaisesRegex(MigrationError, "revision b1"):
                server.create_database(prefix=self.prefix)
            server.close()

    def test_a_chain_with_an_env_py_that_opens_its_own_connection(self):
        """The stock env.py opens a connection of its own, which could not see the chain's earlier steps
        (before: a MigrationError); elefast commits them first, so the chain works."""
        with tempfile.TemporaryDirectory() as root:
            ini = altering_project(Path(root))
            server = DatabaseServer(support.server_url(),
                                    schema=ChainMigrator(MetadataMigrator(initial), AlembicMigrator(ini)))
            with server.create_database(prefix=self.prefix) as database:
                self.assertEqual(rows(database, "SELECT version_num FROM alembic_version"), [("b1",)])
            server.close()


class AsyncSchemaSourceTests(unittest.IsolatedAsyncioTestCase):
    async def test_pg_dump_and_chain_on_the_async_server(self):
        prefix = support.unique_prefix("asqlf")
        self.addCleanup(support.drop_templates, prefix)
        with tempfile.TemporaryDirectory() as root:
            dump = make_dump(Path(root), prefix)
            server = AsyncDatabaseServer(support.server_url(),
                                         schema=ChainMigrator(SQLFileMigrator(dump), MetadataMigrator(initial)))
            async with await server.create_database(prefix=prefix) as database:
                async with database.engine.connect() as connection:
                    got = (await connection.execute(text('SELECT note FROM authors ORDER BY id'))).scalars().all()
                    accounts = (await connection.execute(text("SELECT count(*) FROM accounts"))).scalar()
            await server.close()
        self.assertEqual(got, ["it's; fine", None, "line\nbreak \\ slash"])
        self.assertEqual(accounts, 0)


if __name__ == "__main__":
    unittest.main()
