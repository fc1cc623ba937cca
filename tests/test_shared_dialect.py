"""Clone engines after a template's first share its dialect and statement cache, and stay apart.

Checked on the real server: each later engine reaches its own database, carries the user's
engine's options (isolation level, ``connect_args``, pool class), does not ask the server the
dialect's questions again, finds statements the first test compiled in the shared cache; events
a test adds to its engine never reach another test's; a template with hstore keeps dialects
of their own (the adapter carries the type's oid).
"""

from __future__ import annotations

import unittest
from typing import Any, List

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import default

from elefast import AsyncDatabaseServer, DatabaseServer, MetadataMigrator
from elefast.extensions import Extensions
from elefast.migrators import ChainMigrator
from tests import support

metadata = sa.MetaData()
items = sa.Table("items", metadata, sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.Text))


class SharedDialectTests(unittest.TestCase):
    def server(self, engine_or_url: Any = None, schema: Any = None) -> DatabaseServer:
        prefix = support.unique_prefix("sd")
        self.addCleanup(support.drop_templates, prefix)
        server = DatabaseServer(engine_or_url or support.psycopg_url(), schema=schema or MetadataMigrator(metadata))
        self.addCleanup(server.close)
        self.prefix = prefix
        return server

    def databases(self, server: DatabaseServer, count: int) -> List[Any]:
        """``count`` databases, each used once as it is made, as one test after another would."""
        made = []
        for _ in range(count):
            database = server.create_database(self.prefix)
            self.addCleanup(database.drop)
            with database.engine.connect() as connection:
                self.assertEqual(connection.execute(sa.text("SELECT current_database()")).scalar(), database.name)
            made.append(database)
        return made

    def test_later_engines_share_the_dialect_and_cache_and_reach_their_own_database(self) -> None:
        server = self.server()
        first, second = self.databases(server, 2)
        dialect_class = type(second.engine.dialect)
        asked: List[str] = []
        original = dialect_class.initialize

        def initialize(dialect: Any, connection: Any) -> None:
            asked.append("initialize")
            original(dialect, connection)

        dialect_class.initialize = initialize  # type: ignore[method-assign]
        self.addCleanup(setattr, dialect_class, "initialize", original)
        third, fourth = self.databases(server, 2)
        for database in (first, second, third, fourth):
            with database.engine.begin() as connection:
                self.assertEqual(connection.execute(sa.text("SELECT current_database()")).scalar(), database.name)
                connection.execute(items.insert().values(name=database.name))
        self.assertEqual(asked, [])  # the third's and fourth's dialect had met the server already
        self.assertIs(third.engine.dialect, fourth.engine.dialect)
        self.assertIs(third.engine._compiled_cache, fourth.engine._compiled_cache)
        self.assertIsNot(third.engine.pool, fourth.engine.pool)
        query = sa.select(items.c.name).where(items.c.id > 0)
        with third.engine.connect() as connection:
            self.assertEqual(connection.execute(query).scalars().all(), [third.name])
        with fourth.engine.connect() as connection:
            result = connection.execute(query)
            self.assertEqual(result.scalars().all(), [fourth.name])  # its own rows only
            self.assertIs(result.context.cache_hit, default.CACHE_HIT)  # compiled once, by the third test
        fourth.engine.dispose()  # a disposed shared engine reconnects to its own database
        with fourth.engine.connect() as connection:
            self.assertEqual(connection.execute(sa.text("SELECT current_database()")).scalar(), fourth.name)

    def test_the_users_engine_options_reach_every_later_engine(self) -> None:
        user_engine = sa.create_engine(support.psycopg_url(), isolation_level="REPEATABLE READ",
                                       pool_pre_ping=True, pool_size=3,
                                       connect_args={"application_name": "elefast-shared-dialect"})
        self.addCleanup(user_engine.dispose)
        server = self.server(user_engine)
        made = self.databases(server, 4)
        self.assertIs(made[2].engine.dialect, made[3].engine.dialect)
        for database in made:
            self.assertIsInstance(database.engine.pool, sa.QueuePool)
            self.assertEqual(database.engine.pool.size(), 3)
            with database.engine.connect() as connection:
                isolation, application = connection.execute(sa.text(
                    "SELECT current_setting('transaction_isolation'), current_setting('application_name')")).one()
            self.assertEqual((isolation, application), ("repeatable read", "elefast-shared-dialect"))

    def test_events_a_test_adds_to_its_engine_stay_there(self) -> None:
        server = self.server()
        _first, second, third = self.databases(server, 3)
        seen: List[str] = []
        event.listen(second.engine, "connect", lambda connection, record: seen.append("second's connect"))

        def name_it(dialect: Any, record: Any, cargs: Any, cparams: Any) -> None:  # returns no connection
            seen.append("third's do_connect")
            cparams["application_name"] = "set-by-the-hook"

        event.listen(third.engine, "do_connect", name_it)
        fourth, fifth = self.databases(server, 2)
        later = self.databases(server, 3)  # two were made ahead with the third's dialect, before the hook
        for database in (fourth, fifth, *later):
            self.assertIsNot(database.engine.dialect, third.engine.dialect)
        self.assertEqual(seen, [])
        third.engine.dispose()  # its pool held the connection made ahead
        with third.engine.connect() as connection:
            named = connection.execute(sa.text("SELECT current_setting('application_name')")).scalar()
        self.assertEqual((seen, named), (["third's do_connect"], "set-by-the-hook"))  # it works where it was added

    def test_a_template_with_hstore_keeps_a_dialect_per_engine(self) -> None:
        server = self.server(schema=ChainMigrator(Extensions("hstore"), MetadataMigrator(metadata)))
        made = self.databases(server, 4)
        self.assertIsNot(made[2].engine.dialect, made[3].engine.dialect)
        self.assertTrue(made[3].engine.dialect._has_native_hstore)


class AsyncSharedDialectTests(unittest.IsolatedAsyncioTestCase):
    """The async server's engines share the same way (their ``sync_engine``s do)."""

    async def test_later_async_engines_share_and_reach_their_own_database(self) -> None:
        prefix = support.unique_prefix("sda")
        self.addCleanup(support.drop_templates, prefix)
        server = AsyncDatabaseServer(support.server_url(), schema=MetadataMigrator(metadata))  # asyncpg
        self.addAsyncCleanup(server.close)
        made = []
        for _ in range(4):
            database = await server.create_database(prefix)
            self.addAsyncCleanup(database.drop)
            async with database.engine.begin() as connection:
                self.assertEqual((await connection.execute(sa.text("SELECT current_database()"))).scalar(),
                                 database.name)
                await connection.execute(items.insert().values(name=database.name))
            made.append(database)
        third, fourth = made[2].engine.sync_engine, made[3].engine.sync_engine
        self.assertIs(third.dialect, fourth.dialect)
        self.assertIs(third._compiled_cache, fourth._compiled_cache)
        query = sa.select(items.c.name)
        for database in made[2:]:
            async with database.engine.connect() as connection:
                result = await connection.execute(query)
                self.assertEqual(result.scalars().all(), [database.name])
        self.assertIs(result.context.cache_hit, default.CACHE_HIT)


class SharedDialectOnAFullServerTests(SharedDialectTests):
    """The same, in a process that found the server full: ready clones are made without a connection."""

    def setUp(self) -> None:
        support.process_lean(self, True)


if __name__ == "__main__":
    unittest.main()
