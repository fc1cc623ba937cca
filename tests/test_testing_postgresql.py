"""elefast.testing_postgresql: testing.postgresql's API, each instance a clone on the real server."""

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import unittest
import uuid

import psycopg
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from elefast import testing_postgresql
from elefast._schema import fingerprints
from elefast._testing.provider import SHARED
from elefast.errors import ConfigurationError
from elefast.sync import DatabaseServer
from elefast.testing_postgresql import Postgresql, PostgresqlFactory
from tests import support


class _Calls:
    """How often a handler ran (an object, not a plain value: not part of the handler's fingerprint)."""

    def __init__(self) -> None:
        self.count = 0


CALLS = _Calls()


def make_handler(tag):
    """A handler whose fingerprint is new for every ``tag``: built fresh, so it runs here."""

    def handler(postgresql):
        CALLS.count += 1
        with psycopg.connect(**libpq(postgresql.dsn())) as connection:  # its own connection, as users write
            connection.execute("CREATE TABLE seeded (id integer, tag text)")
            connection.execute("INSERT INTO seeded VALUES (1, %s), (2, %s)", (tag, tag))

    return handler


def libpq(dsn):
    """testing.postgresql's dsn() for psycopg 3, which spells ``database`` as ``dbname``."""
    return {("dbname" if key == "database" else key): value for key, value in dsn.items()}


def rows(postgresql, sql):
    with psycopg.connect(postgresql.url()) as connection:
        return connection.execute(sql).fetchall()


class TestingPostgresqlTests(unittest.TestCase):
    def setUp(self):
        self.prefix = support.unique_prefix("tpg")
        self.saved_prefix = testing_postgresql.PREFIX
        testing_postgresql.PREFIX = self.prefix
        testing_postgresql._RESOLVED["url"] = support.server_url()  # the server these tests look at
        self.addCleanup(self.cleanup)

    def cleanup(self):
        testing_postgresql.PREFIX = self.saved_prefix
        for server in SHARED.servers():
            if asyncio.iscoroutinefunction(server.drop_database):
                continue  # an async test case's server (the shim's are sync)
            for name in support.databases(self.prefix + "%"):
                if not name.startswith(self.prefix + "_tpl"):
                    try:
                        server.drop_database(name)
                    except Exception:
                        pass
        support.drop_templates(self.prefix)

    def test_an_instance_is_a_fresh_database_with_testing_postgresqls_dsn_and_url(self):
        """dsn() has the same keys; url() is libpq's scheme; every instance starts empty; stop() drops it."""
        with Postgresql() as first:
            dsn = first.dsn()
            self.assertEqual(set(dsn), {"host", "port", "user", "database"})
            self.assertTrue(dsn["database"].startswith(self.prefix))
            self.assertTrue(first.url().startswith("postgresql://"))
            self.assertEqual(make_url(first.url()).database, dsn["database"])
            with psycopg.connect(**libpq(dsn)) as connection:
                connection.execute("CREATE TABLE mine (id integer)")
            self.assertEqual(first.dsn(database="postgres")["database"], "postgres")
            engine = create_engine(make_url(first.url()).set(drivername="postgresql+psycopg"))
            with engine.connect() as connection:
                self.assertEqual(connection.execute(text("SELECT count(*) FROM mine")).scalar(), 0)
            engine.dispose()
            with Postgresql() as second:
                self.assertNotEqual(second.dsn()["database"], dsn["database"])
                self.assertEqual(rows(second, "SELECT to_regclass('mine') IS NULL"), [(True,)])
        self.assertFalse(first.is_alive())
        # dropped in the background, as the pool does for the test cases
        self.assertEqual(support.gone_soon(dsn["database"], 30), [])
        first.stop()  # twice: harmless

    def test_a_factorys_handler_runs_once_on_a_template_every_instance_clones(self):
        tag = uuid.uuid4().hex
        before = CALLS.count
        factory = PostgresqlFactory(cache_initialized_db=True, on_initialized=make_handler(tag))
        self.assertEqual(CALLS.count, before + 1)  # in the constructor, as testing.postgresql does
        instances = [factory() for _ in range(3)]
        try:
            for instance in instances:
                self.assertEqual(rows(instance, "SELECT id, tag FROM seeded ORDER BY id"), [(1, tag), (2, tag)])
            with psycopg.connect(instances[0].url()) as connection:
                connection.execute("DELETE FROM seeded")  # one test's change is its own
            self.assertEqual(len(rows(instances[1], "SELECT * FROM seeded")), 2)
        finally:
            for instance in instances:
                instance.stop()
        self.assertEqual(CALLS.count, before + 1)
        factory.clear_cache()  # later instances are empty, as with testing.postgresql
        with factory() as empty:
            self.assertEqual(rows(empty, "SELECT to_regclass('seeded') IS NULL"), [(True,)])

    def test_the_template_is_named_by_the_handlers_code_and_the_files_it_names(self):
        with tempfile.TemporaryDirectory() as folder:
            schema = os.path.join(folder, "schema.sql")
            with open(schema, "w") as handle:
                handle.write("CREATE TABLE a (id integer);")
            scope = {"psycopg": psycopg, "SCHEMA": schema}
            code = "def handler(pg):\n    psycopg.connect(pg.url()).execute(open(SCHEMA).read())\n"
            exec(code, scope)
            first = fingerprints.callable_identity(scope["handler"], "on_initialized")
            self.assertIsNotNone(first)
            self.assertEqual(fingerprints.callable_identity(scope["handler"], "on_initialized"), first)
            with open(schema, "w") as handle:
                handle.write("CREATE TABLE b (id integer);")
            self.assertNotEqual(fingerprints.callable_identity(scope["handler"], "on_initialized"), first)
            exec(code.replace("pg.url()", "pg.url(database=None)"), scope)  # the code changed
            edited = fingerprints.callable_identity(scope["handler"], "on_initialized")
            self.assertNotIn(edited, (first, None))
        self.assertIsNone(fingerprints.callable_identity(print, "on_initialized"))  # not Python code

    def test_server_settings_are_refused_in_one_line_naming_the_fix(self):
        cases = {
            "port": dict(port=5433), "base_dir": dict(base_dir="/tmp/x"),
            "copy_data_from": dict(copy_data_from="/tmp/x"), "ELEFAST_POSTGRES_BINDIR": dict(initdb="/usr/bin/initdb"),
            "server-wide": dict(postgres_args="-c shared_buffers=1GB"), "--locale": dict(initdb_args="--locale=C"),
        }
        for fix, arguments in cases.items():
            with self.subTest(fix), self.assertRaises(ConfigurationError) as caught:
                Postgresql(**arguments)
            self.assertNotIn("\n", str(caught.exception))
            self.assertIn(fix, str(caught.exception))
        with self.assertRaises(ConfigurationError):  # the factory checks them up front
            PostgresqlFactory(cache_initialized_db=True, port=5433)

    def test_replaced_defaults_are_checked_too(self):
        """A suite that sets ``Postgresql.DEFAULT_SETTINGS`` (wal_level=logical) gets its line, not a silent no."""
        class Logical(Postgresql):
            DEFAULT_SETTINGS = dict(Postgresql.DEFAULT_SETTINGS, postgres_args="-h 127.0.0.1 -F -c wal_level=logical")

        with Postgresql() as probe:
            level = rows(probe, "SHOW wal_level")[0][0]
        if level == "logical":
            self.skipTest("this server runs with wal_level=logical already")
        with self.assertRaises(ConfigurationError) as caught:
            Logical()
        self.assertIn("wal_level", str(caught.exception))

    def test_per_database_settings_and_encoding_are_honoured(self):
        with Postgresql(postgres_args="-h 127.0.0.1 -F -c TimeZone=Asia/Tokyo -c work_mem=8MB",
                        initdb_args="-E=UTF8 -U postgres -A trust") as postgresql:
            self.assertEqual(rows(postgresql, "SHOW timezone"), [("Asia/Tokyo",)])
            self.assertEqual(rows(postgresql, "SHOW work_mem"), [("8MB",)])
            self.assertEqual(rows(postgresql, "SHOW server_encoding"), [("UTF8",)])

    def test_auto_start_zero_waits_for_start(self):
        postgresql = Postgresql(auto_start=0)
        self.assertFalse(postgresql.is_alive())
        with self.assertRaises(ConfigurationError):
            postgresql.dsn()
        postgresql.start()
        self.addCleanup(postgresql.stop)
        self.assertEqual(rows(postgresql, "SELECT 1"), [(1,)])

    def test_the_import_line_is_the_port(self):
        from elefast.testing_postgresql import testing

        self.assertIs(testing.postgresql.Postgresql, Postgresql)
        self.assertIs(testing.postgresql.PostgresqlFactory, PostgresqlFactory)
        skipped = testing.postgresql.skipIfNotInstalled("/no/such/postgres")(lambda: None)
        self.assertTrue(getattr(skipped, "__unittest_skip__", False))
        kept = testing.postgresql.skipIfNotFound(lambda: None)
        self.assertFalse(getattr(kept, "__unittest_skip__", False))

    def test_nothing_is_left_after_sigkill(self):
        """A run killed with instances open leaves orphans the next sweep drops; the template stays, shared."""
        code = textwrap.dedent(f"""
            import os, signal, psycopg
            from elefast import testing_postgresql
            testing_postgresql.PREFIX = {self.prefix!r}
            def handler(pg):
                with psycopg.connect(pg.url()) as c:
                    c.execute("CREATE TABLE t (id integer)")
            factory = testing_postgresql.PostgresqlFactory(cache_initialized_db=True, on_initialized=handler)
            kept = [factory() for _ in range(3)]
            print(" ".join(p.dsn()["database"] for p in kept), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        """)
        out = subprocess.run([sys.executable, "-c", code], cwd=str(support.ROOT), capture_output=True, text=True,
                             timeout=120, env={**os.environ, "ELEFAST_DATABASE_URL": support.server_url()})
        self.assertEqual(out.returncode, -signal.SIGKILL, out.stderr)
        names = out.stdout.split()
        self.assertEqual(len(names), 3)
        self.assertEqual([name for name in names if support.databases(name)], names)  # the kill left them
        server = DatabaseServer(support.server_url())
        self.addCleanup(server.close)
        left = support.swept(server, lambda: [n for n in support.databases(self.prefix + "%") if "_tpl_" not in n])
        self.assertEqual(left, [])


if __name__ == "__main__":
    unittest.main()
