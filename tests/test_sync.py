"""Tests of elefast.sync (DatabaseServer, Database, MetadataMigrator) on a real server."""

import threading
import time
import unittest

from sqlalchemy import (
    Column,
    ForeignKey,
    Integer,
    MetaData,
    NullPool,
    QueuePool,
    String,
    Table,
    create_engine,
    func,
    make_url,
    select,
    text,
)
from sqlalchemy.orm import Session, sessionmaker

from elefast import Database, DatabaseServer, MetadataMigrator, Migrator
from elefast.errors import (
    ConfigurationError,
    DatabaseNotReadyError,
    InvalidPrefixError,
    MigrationError,
    ServerRejectedError,
)
from tests import support

metadata = MetaData()
users = Table("users", metadata, Column("id", Integer, primary_key=True), Column("name", String(50)))
posts = Table(
    "posts", metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", ForeignKey("users.id")),
    Column("title", String(100)),
    schema="blog",
)


class SeededMigrator:
    """A migrator that creates the tables and inserts a row, counting its runs."""

    def __init__(self) -> None:
        self.runs = 0
        self.lock = threading.Lock()

    def migrate(self, connection):
        with self.lock:
            self.runs += 1
        MetadataMigrator(metadata).migrate(connection)
        connection.execute(users.insert().values(name="seed"))
        time.sleep(0.2)  # widen the window in which concurrent callers could race


class FailingMigrator:
    """Creates a table, then fails: the template must not survive."""

    def __init__(self) -> None:
        self.runs = 0

    def migrate(self, connection):
        self.runs += 1
        connection.execute(text("CREATE TABLE half_built (id int)"))
        raise RuntimeError("migration 0042 exploded")


class ServerTestCase(unittest.TestCase):
    """Gives each test a unique prefix and checks nothing with it is left after."""

    def setUp(self):
        self.prefix = support.unique_prefix()
        self.addCleanup(self.assert_no_leftovers)

    def assert_no_leftovers(self):
        self.assertEqual(support.left_after_exit(self.prefix), [])  # fingerprinted templates are kept on purpose

    def server(self, schema=None, **kwargs):
        server = DatabaseServer(support.server_url(), schema=schema, **kwargs)
        self.addCleanup(server.close)
        return server


class DatabaseServerTests(ServerTestCase):
    def test_accepts_str_url_and_engine(self):
        """A URL string, a URL object and a user's engine all work; url is the server's URL."""
        url = support.server_url()
        for given in (url, make_url(url), create_engine(make_url(url).set(drivername="postgresql+psycopg"))):
            with self.subTest(kind=type(given).__name__):
                server = self.server(**{}) if given is url else DatabaseServer(given)
                self.addCleanup(server.close)
                self.assertEqual(server.url.database, make_url(url).database)
                with server.create_database(prefix=self.prefix) as database:
                    self.assertIsInstance(database, Database)
                    with database.engine.connect() as connection:
                        self.assertEqual(connection.execute(text("select current_database()")).scalar(),
                                         database.name)

    def test_str_url_becomes_autocommit_nullpool_engine(self):
        """The server engine built from a URL uses AUTOCOMMIT and NullPool, with psycopg."""
        server = self.server()
        self.assertIsInstance(server.engine.pool, NullPool)
        self.assertEqual(server.url.drivername, "postgresql+psycopg")
        with server.engine.connect() as connection:
            self.assertTrue(connection.connection.driver_connection.autocommit)

    def test_ensure_is_ready_returns_server(self):
        """ensure_is_ready returns the server itself, for chaining."""
        server = self.server()
        self.assertIs(server.ensure_is_ready(timeout=5), server)

    def test_create_database_applies_schema_and_names(self):
        """Each database is a clone with the schema, named <prefix>_<random>, dropped on exit."""
        server = self.server(MetadataMigrator(metadata))
        with server.create_database(prefix=self.prefix) as first, \
                server.create_database(prefix=self.prefix) as second:
            self.assertNotEqual(first.name, second.name)
            self.assertRegex(first.name, rf"^{self.prefix}_[0-9a-f]{{16}}$")
            self.assertEqual(first.url.database, first.name)
            with first.session() as session:
                session.execute(users.insert().values(name="ada"))
                session.execute(posts.insert().values(user_id=1, title="hello"))
                session.commit()
            with second.session() as session:  # isolated from the first
                self.assertEqual(session.execute(select(func.count()).select_from(users)).scalar(), 0)
            present = support.databases(self.prefix + "_%")
            self.assertIn(first.name, present)
            self.assertIn(second.name, present)
            self.assertEqual(len([n for n in present if "_tpl_" in n]), 1)  # one template (and maybe spares)
        self.assertEqual(support.gone_soon(first.name), [])  # dropped behind, in the background
        self.assertEqual(support.gone_soon(second.name), [])
        left = support.databases(self.prefix + "_________________")
        self.assertLessEqual(len(left), 2)  # what the pool keeps ahead for the next call (same prefix)
        server.close()
        self.assertEqual(support.databases(self.prefix + "_________________"), [])

    def test_migration_rows_are_in_every_clone(self):
        """Rows a migration inserts are in every database cloned from the template."""
        server = self.server(SeededMigrator())
        for _ in range(2):
            with server.create_database(prefix=self.prefix) as database, database.session() as session:
                names = session.execute(select(users.c.name)).scalars().all()
                self.assertEqual(names, ["seed"])

    def test_template_built_once(self):
        """The migration runs once per server, however many databases are created."""
        migrator = SeededMigrator()
        server = self.server(migrator)
        for _ in range(3):
            server.create_database(prefix=self.prefix).drop()
        self.assertEqual(migrator.runs, 1)

    def test_concurrent_threads_one_migration(self):
        """8 threads creating databases at once on a fresh server: one migration, no errors."""
        migrator = SeededMigrator()
        server = self.server(migrator)
        errors, names = [], []
        barrier = threading.Barrier(8)

        def work():
            try:
                barrier.wait()
                with server.create_database(prefix=self.prefix) as database:
                    names.append(database.name)
                    with database.session() as session:
                        self.assertEqual(session.execute(select(func.count()).select_from(users)).scalar(), 1)
            except BaseException as error:  # collected and asserted below
                errors.append(error)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(errors, [])
        self.assertEqual(len(set(names)), 8)
        self.assertEqual(migrator.runs, 1)

    def test_failed_migration_leaves_nothing_and_raises(self):
        """A failing migration raises MigrationError naming the cause; no template remains."""
        migrator = FailingMigrator()
        server = self.server(migrator)
        with self.assertRaises(MigrationError) as caught:
            server.create_database(prefix=self.prefix)
        self.assertIn("migration 0042 exploded", str(caught.exception))
        self.assertIsInstance(caught.exception.__cause__, RuntimeError)
        self.assertEqual(support.databases(self.prefix + "%"), [])
        with self.assertRaises(MigrationError):  # the failure is remembered, not retried
            server.create_database(prefix=self.prefix)
        self.assertEqual(migrator.runs, 1)

    def test_schema_none_gives_empty_databases(self):
        """Without a schema, databases are empty clones of template0."""
        server = self.server()
        with server.create_database(prefix=self.prefix) as database, database.engine.connect() as c:
            count = c.execute(text("select count(*) from pg_tables where schemaname = 'public'")).scalar()
            self.assertEqual(count, 0)

    def test_schema_that_is_not_a_migrator(self):
        """Passing MetaData itself says: did you mean MetadataMigrator(metadata)?"""
        with self.assertRaises(ConfigurationError) as caught:
            DatabaseServer(support.server_url(), schema=metadata)  # type: ignore[arg-type]
        self.assertIn("Did you mean MetadataMigrator(metadata)?", str(caught.exception))

    def test_migrator_protocol(self):
        """MetadataMigrator and any object with migrate() satisfy the Migrator protocol."""
        self.assertIsInstance(MetadataMigrator(metadata), Migrator)
        self.assertIsInstance(SeededMigrator(), Migrator)

    def test_bad_prefix_and_encoding(self):
        """An unsafe prefix is made safe (upstream's prefix=request.node.name works); a bad encoding
        and a prefix with nothing safe in it are refused before anything is created."""
        server = self.server()
        with server.create_database(prefix=self.prefix + '[1-2]"; DROP DATABASE postgres; --') as database:
            self.assertRegex(database.name, "^" + self.prefix + "_1-2_DROP_DATABASE_postgres_--_[0-9a-f]{16}$")
        with self.assertRaises(InvalidPrefixError):
            server.create_database(prefix="[]")
        with self.assertRaises(ConfigurationError):
            server.create_database(prefix=self.prefix, encoding="utf8'")

    def test_long_prefix(self):
        """A 100-character prefix gives a 63-byte name ending in the random part."""
        server = self.server()
        long_prefix = self.prefix + "x" * 100
        with server.create_database(prefix=long_prefix) as database:
            self.assertEqual(len(database.name), 63)
            self.assertEqual(support.databases(database.name), [database.name])

    def test_encoding(self):
        """The encoding argument reaches CREATE DATABASE."""
        server = self.server(MetadataMigrator(metadata))
        with server.create_database(prefix=self.prefix, encoding="latin1") as database:
            with database.engine.connect() as connection:
                self.assertEqual(connection.execute(text("show server_encoding")).scalar(), "LATIN1")

    def test_close_drops_templates(self):
        """close() drops a per-process template (no fingerprint) and every database still owned."""
        server = DatabaseServer(support.server_url(), schema=SeededMigrator())
        database = server.create_database(prefix=self.prefix)
        self.assertEqual(len(support.databases(self.prefix + "%")), 2)
        server.close()
        self.assertEqual(support.databases(self.prefix + "%"), [])
        database.drop()  # dropped by close() already: harmless
        server.close()  # twice is fine

    def test_process_exit_drops_templates(self):
        """A process that never calls close() leaves nothing behind when it exits."""
        result = support.run_python(
            "from tests.test_sync import SeededMigrator\n"
            "from elefast import DatabaseServer\n"
            "from tests import support\n"
            f"s = DatabaseServer(support.server_url(), schema=SeededMigrator())\n"
            f"d = s.create_database(prefix={self.prefix!r})\n"
            "print(len(support.databases(%r)))\n" % (self.prefix + "%")
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.strip(), "2")

    def test_drop_refuses_foreign_databases(self):
        """drop_database refuses a name this server did not create."""
        server = self.server()
        with self.assertRaises(ValueError) as caught:
            server.drop_database("postgres")
        self.assertIn("only drops databases it created", str(caught.exception))
        self.assertIn("postgres", support.databases("postgres"))

    def test_drop_with_open_connections_and_transactions(self):
        """Dropping works while a connection, a transaction and a session are still open."""
        server = self.server(MetadataMigrator(metadata))
        database = server.create_database(prefix=self.prefix)
        leaked = database.engine.connect()
        leaked.begin()
        leaked.execute(users.insert().values(name="left open"))
        session = database.session()
        session.execute(select(users)).all()
        other = create_engine(database.url, poolclass=NullPool).connect()
        started = time.monotonic()
        database.drop()
        self.assertLess(time.monotonic() - started, 5)
        self.assertEqual(support.gone_soon(database.name), [])  # dropped behind, ending them
        for thing in (leaked, session, other):
            try:
                thing.close()
            except Exception:
                pass  # their server sessions were ended; closing may complain

    def test_debug_logs_statements(self):
        """debug=True logs every CREATE and DROP elefast sends on the elefast logger."""
        server = self.server(MetadataMigrator(metadata), debug=True)
        with self.assertLogs("elefast", "INFO") as logs:
            server.create_database(prefix=self.prefix).drop()
        joined = "\n".join(logs.output)
        self.assertIn("CREATE DATABASE", joined)
        self.assertIn("DROP DATABASE", joined)

    def test_database_attributes(self):
        """A Database knows its server, engine, name, url and sessionmaker."""
        server = self.server()
        with server.create_database(prefix=self.prefix) as database:
            self.assertIs(database.server, server)
            self.assertEqual(database.engine.url.database, database.name)
            self.assertIs(database.url, database.engine.url)
            self.assertTrue(callable(database.sessionmaker))

    def test_repr_hides_password(self):
        """Reprs show the URL without its password."""
        server = DatabaseServer("postgresql://postgres:hunter2@127.0.0.1:5432/postgres")
        self.addCleanup(server.close)
        self.assertNotIn("hunter2", repr(server))
        self.assertIn("***", repr(server))


class UserEngineTests(ServerTestCase):
    def test_non_autocommit_engine_works(self):
        """A user's engine with a transactional isolation level can create and drop databases."""
        engine = create_engine(support.psycopg_url(),
                               isolation_level="SERIALIZABLE")
        server = DatabaseServer(engine, schema=MetadataMigrator(metadata))
        self.addCleanup(server.close)
        with server.create_database(prefix=self.prefix) as database:
            self.assertEqual(support.databases(database.name), [database.name])

    def test_database_engines_keep_user_options(self):
        """Clones' engines keep the user's pool, isolation level and connect_args."""
        engine = create_engine(
            support.psycopg_url(),
            pool_size=2, max_overflow=0, isolation_level="REPEATABLE READ",
            connect_args={"application_name": "eft-options"},
        )
        server = DatabaseServer(engine)
        self.addCleanup(server.close)
        with server.create_database(prefix=self.prefix) as database:
            self.assertIsInstance(database.engine.pool, QueuePool)
            self.assertEqual(database.engine.pool.size(), 2)
            with database.engine.connect() as connection:
                self.assertEqual(connection.execute(text("show application_name")).scalar(), "eft-options")
                self.assertEqual(connection.get_isolation_level(), "REPEATABLE READ")

    def test_url_query_is_kept(self):
        """Options in the URL's query (application_name here) reach the clones' engines."""
        server = DatabaseServer(support.server_url() + "?application_name=eft-query")
        self.addCleanup(server.close)
        with server.create_database(prefix=self.prefix) as database, database.engine.connect() as c:
            self.assertEqual(c.execute(text("show application_name")).scalar(), "eft-query")
            self.assertFalse(c.connection.driver_connection.autocommit)  # sessions get transactions

    def test_sessionmaker_factory_reaches_database(self):
        """sessionmaker_factory decides how Database.session() builds sessions."""
        factory = lambda engine: sessionmaker(engine, expire_on_commit=False)  # noqa: E731
        server = self.server(sessionmaker_factory=factory)
        with server.create_database(prefix=self.prefix) as database:
            session = database.session()
            self.assertIsInstance(session, Session)
            self.assertFalse(session.expire_on_commit)
            session.close()
        direct = Database(create_engine(server.url.set(database="postgres")), server, factory)
        self.assertFalse(direct.session().expire_on_commit)


class ReadinessTests(unittest.TestCase):
    def test_unreachable_server_times_out(self):
        """Nothing listening: DatabaseNotReadyError after about `timeout`, chained, host named."""
        server = DatabaseServer(support.url_with(port=str(support.free_port()), password="hunter2"))
        started = time.monotonic()
        with self.assertRaises(DatabaseNotReadyError) as caught:
            server.ensure_is_ready(timeout=1, interval=0.1)
        elapsed = time.monotonic() - started
        self.assertGreaterEqual(elapsed, 0.8)
        self.assertLess(elapsed, 3)
        self.assertIsNotNone(caught.exception.__cause__)
        self.assertIn("127.0.0.1", str(caught.exception))
        self.assertNotIn("hunter2", str(caught.exception))

    def test_unknown_role_fails_at_once(self):
        """An unknown role raises ServerRejectedError at once, not after the timeout."""
        server = DatabaseServer(support.url_with(user="eft_nobody"))
        started = time.monotonic()
        with self.assertRaises(ServerRejectedError) as caught:
            server.ensure_is_ready(timeout=30)
        self.assertLess(time.monotonic() - started, 5)
        self.assertIn("role", str(caught.exception))

    def test_unknown_database_fails_at_once(self):
        """An unknown database raises ServerRejectedError at once, naming the fix."""
        server = DatabaseServer(support.url_with(database="eft_no_such_database"))
        started = time.monotonic()
        with self.assertRaises(ServerRejectedError) as caught:
            server.ensure_is_ready(timeout=30)
        self.assertLess(time.monotonic() - started, 5)
        self.assertIn("does not exist", str(caught.exception))

    def test_wrong_password_fails_at_once(self):
        """A wrong password fails at once with the cause, and the password is never shown."""
        with support.password_server("right-secret") as url:
            good = DatabaseServer(url)
            self.assertIs(good.ensure_is_ready(timeout=10), good)
            with good.create_database(prefix="eft_pw") as database:
                self.assertNotIn("right-secret", repr(database))
            good.close()
            bad = DatabaseServer(url.replace("right-secret", "wrong-secret"))
            started = time.monotonic()
            with self.assertRaises(ServerRejectedError) as caught:
                bad.ensure_is_ready(timeout=30)
            self.assertLess(time.monotonic() - started, 5)
            self.assertIn("password", str(caught.exception))
            self.assertNotIn("wrong-secret", str(caught.exception))
            self.assertNotIn("right-secret", str(caught.exception))

    def test_missing_createdb_permission(self):
        """A role without CREATEDB gets ServerRejectedError telling how to grant it."""
        with support.role(createdb=False) as name:
            server = DatabaseServer(support.url_with(user=name))
            server.ensure_is_ready(timeout=5)
            with self.assertRaises(ServerRejectedError) as caught:
                server.create_database(prefix="eft_perm")
            self.assertIn("CREATEDB", str(caught.exception))
            server.close()


if __name__ == "__main__":
    unittest.main()
