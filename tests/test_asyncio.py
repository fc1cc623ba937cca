"""Tests of elefast.asyncio (the async twins) on a real server, with asyncpg and psycopg."""

import asyncio
import contextlib
import time
import unittest

from sqlalchemy import NullPool, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from elefast import AsyncDatabase, AsyncDatabaseServer, AsyncMetadataMigrator, AsyncMigrator, MetadataMigrator
from elefast.errors import (
    ConfigurationError,
    DatabaseNotReadyError,
    InvalidURLError,
    MigrationError,
    ServerRejectedError,
)
from tests import support
from tests.test_sync import metadata, posts, users


class AsyncSeededMigrator:
    """An async migrator that creates the tables and a seed row, counting its runs."""

    def __init__(self) -> None:
        self.runs = 0

    async def migrate_async(self, connection):
        self.runs += 1
        await AsyncMetadataMigrator(metadata).migrate_async(connection)
        await connection.execute(users.insert().values(name="seed"))
        await asyncio.sleep(0.2)  # let concurrent callers pile up


class AsyncFailingMigrator:
    async def migrate_async(self, connection):
        await connection.execute(text("CREATE TABLE half_built (id int)"))
        raise RuntimeError("async migration exploded")


class AsyncServerTestCase(unittest.IsolatedAsyncioTestCase):
    driver = "asyncpg"

    def setUp(self):
        self.prefix = support.unique_prefix("a")
        self.addCleanup(self.assert_no_leftovers)

    def assert_no_leftovers(self):
        support.drop_templates(self.prefix)  # fingerprinted templates are kept on purpose
        self.assertEqual(support.databases(self.prefix + "%"), [])

    def url(self) -> str:
        return support.server_url().replace("postgresql://", f"postgresql+{self.driver}://")

    def server(self, schema=None, **kwargs):
        server = AsyncDatabaseServer(self.url(), schema=schema, **kwargs)
        self.addAsyncCleanup(server.close)
        return server


class AsyncDatabaseServerTests(AsyncServerTestCase):
    async def test_bare_url_uses_asyncpg_and_nullpool(self):
        """A bare postgresql:// URL becomes an asyncpg engine with NullPool."""
        server = AsyncDatabaseServer(support.server_url())
        self.addAsyncCleanup(server.close)
        self.assertEqual(server.url.drivername, "postgresql+asyncpg")
        self.assertIsInstance(server.engine, AsyncEngine)
        self.assertIsInstance(server.engine.sync_engine.pool, NullPool)

    async def test_ensure_is_ready_returns_server(self):
        """ensure_is_ready returns the server itself."""
        server = self.server()
        self.assertIs(await server.ensure_is_ready(timeout=5), server)

    async def test_create_database_with_schema(self):
        """Clones have the schema (non-public schema too), are isolated and dropped on exit."""
        server = self.server(AsyncMetadataMigrator(metadata))
        async with await server.create_database(prefix=self.prefix) as first:
            self.assertIsInstance(first, AsyncDatabase)
            self.assertEqual(first.url.database, first.name)
            async with first.session() as session:
                await session.execute(users.insert().values(name="ada"))
                await session.execute(posts.insert().values(user_id=1, title="t"))
                await session.commit()
            async with await server.create_database(prefix=self.prefix) as second:
                async with second.session() as session:
                    count = (await session.execute(select(func.count()).select_from(users))).scalar()
                    self.assertEqual(count, 0)

    async def test_sync_migrator_runs_through_run_sync(self):
        """A sync MetadataMigrator works with the async server too."""
        server = self.server(MetadataMigrator(metadata))
        async with await server.create_database(prefix=self.prefix) as database:
            async with database.engine.connect() as connection:
                rows = (await connection.execute(select(users))).all()  # the table exists, and is empty
        self.assertEqual(rows, [])

    async def test_concurrent_tasks_one_migration(self):
        """8 tasks creating databases at once on a fresh server: one migration, no errors."""
        migrator = AsyncSeededMigrator()
        server = self.server(migrator)

        async def one():
            database = await server.create_database(prefix=self.prefix)
            try:
                async with database.session() as session:
                    return (await session.execute(select(users.c.name))).scalars().all()
            finally:
                await database.drop()

        results = await asyncio.gather(*(one() for _ in range(8)))
        self.assertEqual(results, [["seed"]] * 8)
        self.assertEqual(migrator.runs, 1)

    async def test_failed_migration_leaves_nothing(self):
        """A failing async migration raises MigrationError; no template remains."""
        server = self.server(AsyncFailingMigrator())
        with self.assertRaises(MigrationError) as caught:
            await server.create_database(prefix=self.prefix)
        self.assertIn("async migration exploded", str(caught.exception))
        self.assertEqual(support.databases(self.prefix + "%"), [])

    async def test_drop_with_open_connection_and_transaction(self):
        """Dropping works while a connection with an open transaction is still checked out."""
        server = self.server(AsyncMetadataMigrator(metadata))
        database = await server.create_database(prefix=self.prefix)
        other = create_async_engine(database.url, poolclass=NullPool)
        leaked = await other.connect()
        await leaked.begin()
        await leaked.execute(users.insert().values(name="left open"))
        started = time.monotonic()
        await database.drop()
        self.assertLess(time.monotonic() - started, 5)
        self.assertEqual(support.gone_soon(database.name), [])  # dropped behind, ending it
        try:
            await leaked.close()
        except Exception:
            pass  # its server session was ended
        await other.dispose()

    async def test_close_drops_everything_owned(self):
        """close() drops a per-process template (no fingerprint) and the databases still owned."""
        server = AsyncDatabaseServer(self.url(), schema=AsyncSeededMigrator())
        database = await server.create_database(prefix=self.prefix)
        self.assertEqual(len(support.databases(self.prefix + "%")), 2)
        await server.close()
        self.assertEqual(support.databases(self.prefix + "%"), [])
        await database.drop()  # already dropped: harmless

    async def test_user_engine_options_carry_over(self):
        """A user's AsyncEngine: clones keep its connect_args and pool size."""
        engine = create_async_engine(
            self.url(), pool_size=2, max_overflow=0,
            connect_args={"server_settings": {"application_name": "eft-async"}},
        )
        server = AsyncDatabaseServer(engine)
        self.addAsyncCleanup(server.close)
        async with await server.create_database(prefix=self.prefix) as database:
            self.assertEqual(database.engine.sync_engine.pool.size(), 2)
            async with database.engine.connect() as connection:
                name = (await connection.execute(text("show application_name"))).scalar()
                self.assertEqual(name, "eft-async")
        await engine.dispose()

    async def test_sessionmaker_factory(self):
        """sessionmaker_factory decides how AsyncDatabase.session() builds sessions."""
        server = self.server(sessionmaker_factory=lambda e: async_sessionmaker(e, expire_on_commit=False))
        async with await server.create_database(prefix=self.prefix) as database:
            session = database.session()
            self.assertIsInstance(session, AsyncSession)
            self.assertFalse(session.sync_session.expire_on_commit)
            await session.close()

    async def test_drop_refuses_foreign_databases(self):
        """drop_database refuses names this server did not create."""
        with self.assertRaises(ValueError):
            await self.server().drop_database("postgres")

    def test_async_migrator_protocol(self):
        """AsyncMetadataMigrator satisfies AsyncMigrator; MetaData itself is refused."""
        self.assertIsInstance(AsyncMetadataMigrator(metadata), AsyncMigrator)
        with self.assertRaises(ConfigurationError) as caught:
            AsyncDatabaseServer(self.url(), schema=metadata)  # type: ignore[arg-type]
        self.assertIn("AsyncMetadataMigrator(metadata)", str(caught.exception))

    def test_sync_driver_refused(self):
        """psycopg2-style sync-only drivers are refused by the async API with the fix."""
        with self.assertRaises(InvalidURLError) as caught:
            AsyncDatabaseServer("postgresql+psycopg2://u@h/db")
        self.assertIn("postgresql+asyncpg://", str(caught.exception))


class PsycopgAsyncTests(AsyncDatabaseServerTests):
    """The same tests with psycopg 3's async mode instead of asyncpg."""

    driver = "psycopg"

    async def test_user_engine_options_carry_over(self):
        """A user's psycopg AsyncEngine: clones keep its connect_args."""
        engine = create_async_engine(self.url(), connect_args={"application_name": "eft-async-pg"})
        server = AsyncDatabaseServer(engine)
        self.addAsyncCleanup(server.close)
        async with await server.create_database(prefix=self.prefix) as database:
            async with database.engine.connect() as connection:
                name = (await connection.execute(text("show application_name"))).scalar()
                self.assertEqual(name, "eft-async-pg")
        await engine.dispose()


class AsyncReadinessTests(unittest.IsolatedAsyncioTestCase):
    @classmethod
    def setUpClass(cls):
        stack = contextlib.ExitStack()
        cls.addClassCleanup(stack.close)
        cls.password_url = stack.enter_context(support.password_server("right-secret"))

    async def test_unreachable_times_out(self):
        """Nothing listening: DatabaseNotReadyError within about the timeout."""
        server = AsyncDatabaseServer(support.url_with(port=str(support.free_port())))
        started = time.monotonic()
        with self.assertRaises(DatabaseNotReadyError):
            await server.ensure_is_ready(timeout=1, interval=0.1)
        self.assertLess(time.monotonic() - started, 3)

    async def test_unknown_role_fails_at_once(self):
        """An unknown role raises ServerRejectedError at once."""
        server = AsyncDatabaseServer(support.url_with(user="eft_nobody"))
        started = time.monotonic()
        with self.assertRaises(ServerRejectedError):
            await server.ensure_is_ready(timeout=30)
        self.assertLess(time.monotonic() - started, 5)

    async def test_unknown_database_fails_at_once(self):
        """An unknown database raises ServerRejectedError at once."""
        server = AsyncDatabaseServer(support.url_with(database="eft_no_such_database"))
        with self.assertRaises(ServerRejectedError):
            await server.ensure_is_ready(timeout=30)

    async def test_wrong_password_fails_at_once(self):
        """A wrong password fails at once; the password appears nowhere in the error."""
        url = self.password_url
        good = AsyncDatabaseServer(url)
        await good.ensure_is_ready(timeout=10)
        bad = AsyncDatabaseServer(url.replace("right-secret", "wrong-secret"))
        started = time.monotonic()
        with self.assertRaises(ServerRejectedError) as caught:
            await bad.ensure_is_ready(timeout=30)
        self.assertLess(time.monotonic() - started, 5)
        self.assertIn("password", str(caught.exception))
        self.assertNotIn("wrong-secret", str(caught.exception))


if __name__ == "__main__":
    unittest.main()
