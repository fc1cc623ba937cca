"""The public API used the way upstream elefast's README, recipes and examples use it (written here, not
copied): each works, or fails with a message that gives the one line to write instead. Sync and async."""

import unittest

from sqlalchemy import Column, Integer, MetaData, NullPool, String, Table, create_engine, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from elefast import AsyncDatabaseServer, DatabaseNotReadyError, DatabaseServer, MetadataMigrator
from elefast.errors import ConfigurationError
from tests import support

metadata = MetaData()
posts = Table("posts", metadata, Column("id", Integer, primary_key=True), Column("title", String(80)))


def sync_url() -> str:
    return support.server_url().replace("postgresql://", "postgresql+psycopg://", 1)


class UpstreamSyncUsageTests(unittest.TestCase):
    def setUp(self):
        self.prefix = support.unique_prefix("up")
        self.addCleanup(support.drop_templates, self.prefix)

    def test_server_engine_with_lower_case_autocommit(self):
        """upstream's simple-alembic example: isolation_level="autocommit" on the server's engine."""
        engine = create_engine(sync_url(), isolation_level="autocommit", poolclass=NullPool)
        server = DatabaseServer(engine, schema=MetadataMigrator(metadata))
        self.addCleanup(server.close)
        with server.create_database(prefix=self.prefix) as database:
            with database.session() as session:
                session.execute(posts.insert().values(title="hello"))
                session.commit()
                self.assertEqual(session.execute(select(posts.c.title)).scalars().all(), ["hello"])
        self.assertEqual(support.gone_soon(database.name), [])  # dropped behind

    def test_parametrized_node_name_as_prefix(self):
        server = DatabaseServer(support.server_url())
        self.addCleanup(server.close)
        with server.create_database(prefix="test_get_posts[1-2]") as database:
            self.assertRegex(database.name, r"^test_get_posts_1-2_[0-9a-f]{16}$")
            with database.engine.connect() as connection:
                self.assertEqual(connection.execute(text("SELECT current_database()")).scalar(), database.name)

    def test_persistent_database_recipe(self):
        """Return create_database() without dropping: with keep=True it outlives the server."""
        server = DatabaseServer(support.server_url())
        database = server.create_database(prefix=self.prefix, keep=True)
        server.close()
        self.addCleanup(support.execute, f'DROP DATABASE IF EXISTS "{database.name}" WITH (FORCE)')
        self.assertEqual(support.databases(database.name), [database.name])
        database.drop()  # after keep(): the engine is disposed, the database stays
        self.assertEqual(support.databases(database.name), [database.name])

    def test_not_a_url_is_a_type_error(self):
        with self.assertRaises(TypeError):
            DatabaseServer(123)  # type: ignore[arg-type]
        with self.assertRaises(ConfigurationError):  # and elefast's own error, for those who catch that
            DatabaseServer(123)  # type: ignore[arg-type]

    def test_readiness_message_says_timeout(self):
        server = DatabaseServer(support.url_with(port=str(support.free_port())))
        with self.assertRaises(DatabaseNotReadyError) as caught:
            server.ensure_is_ready(timeout=1, interval=0.2)
        self.assertIn("timeout", str(caught.exception))

    def test_dropping_a_database_elefast_did_not_create_gives_the_line(self):
        name = f"{self.prefix}_theirs"
        support.execute(f'CREATE DATABASE "{name}"')
        self.addCleanup(support.execute, f'DROP DATABASE IF EXISTS "{name}"')
        server = DatabaseServer(support.server_url())
        self.addCleanup(server.close)
        with self.assertRaises(ValueError) as caught:
            server.drop_database(name)
        self.assertIn(f'DROP DATABASE "{name}" WITH (FORCE)', str(caught.exception))
        self.assertEqual(support.databases(name), [name])

    def test_a_database_per_test_from_the_pool_is_gone_when_dropped(self):
        """A fixture calling create_database() per test: from the second call on, clones come from the
        pool; drop() returns at once and each is dropped behind; close() leaves nothing."""
        server = DatabaseServer(support.server_url(), schema=MetadataMigrator(metadata))
        names = []
        for _ in range(6):
            with server.create_database(prefix=self.prefix) as database:
                with database.session() as session:
                    self.assertEqual(session.execute(select(posts.c.id)).all(), [])
                    session.execute(posts.insert().values(title="mine"))
                    session.commit()
            names.append(database.name)
            self.assertEqual(support.gone_soon(database.name), [])
        self.assertEqual(len(set(names)), 6)
        server.close()
        self.assertEqual(support.databases(self.prefix + "_________________"), [])


class UpstreamAsyncUsageTests(unittest.IsolatedAsyncioTestCase):
    async def test_async_server_engine_with_lower_case_autocommit(self):
        prefix = support.unique_prefix("upa")
        self.addCleanup(support.drop_templates, prefix)
        url = support.server_url().replace("postgresql://", "postgresql+asyncpg://", 1)
        engine = create_async_engine(url, isolation_level="autocommit", poolclass=NullPool)
        server = AsyncDatabaseServer(engine, schema=MetadataMigrator(metadata))
        for _ in range(3):  # pooled from the second on
            async with await server.create_database(prefix=prefix) as database:
                async with database.session() as session:
                    await session.execute(posts.insert().values(title="hello"))
                    await session.commit()
                    titles = (await session.execute(select(posts.c.title))).scalars().all()
            self.assertEqual(titles, ["hello"])
            self.assertEqual(support.gone_soon(database.name), [])  # dropped behind
        kept = await server.create_database(prefix=prefix, keep=True)
        await server.close()
        self.addCleanup(support.execute, f'DROP DATABASE IF EXISTS "{kept.name}" WITH (FORCE)')
        self.assertEqual(support.databases(kept.name), [kept.name])
        await kept.drop()  # after keep(): the engine is disposed, the database stays
        self.assertEqual(support.databases(kept.name), [kept.name])
        with self.assertRaises(TypeError):
            AsyncDatabaseServer(123)  # type: ignore[arg-type]


if __name__ == "__main__":
    unittest.main()
