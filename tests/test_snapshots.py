"""Snapshots: database.snapshot() copies the test's database as it is; restore(snapshot) makes it
that again under the same name (the app's steered engine keeps working); sync and async; the
snapshot is the server's to drop, and a busy database fails with the sessions named."""

import unittest

from sqlalchemy import select

from elefast import AsyncPostgresTestCase, MetadataMigrator, PostgresTestCase
from elefast.errors import SnapshotError
from examples.legacy_shop import adb, db
from tests import support

SCHEMA = MetadataMigrator(db.Base.metadata)


class SnapshotTests(PostgresTestCase, unittest.TestCase):
    schema = SCHEMA
    database_url = support.server_url()
    app_engines = ("examples.legacy_shop.db:engine",)

    def names(self):
        return sorted(self.session.execute(select(db.Item.name)).scalars())

    def test_restore_goes_back_to_the_snapshot(self):
        db.add_item("lamp")
        snapshot = self.database.snapshot()
        self.assertIn(snapshot.name, support.databases("%_snap_%"))
        db.add_item("desk")
        self.assertEqual(self.names(), ["desk", "lamp"])
        self.session.close()
        self.database.restore(snapshot)
        self.assertEqual(self.names(), ["lamp"])
        self.assertEqual(db.current_database(), self.database.name)  # the app's engine, same name
        db.add_item("chair")
        self.assertEqual(db.count_items(), 2)

    def test_restore_twice_from_one_snapshot(self):
        snapshot = self.database.snapshot()
        for name in ("a", "b"):
            db.add_item(name)
            self.database.restore(snapshot)
            self.assertEqual(db.count_items(), 0)

    def test_an_open_session_is_named(self):
        self.names()  # self.session now holds a connection in a transaction
        with self.assertRaises(SnapshotError) as caught:
            self.database.snapshot()
        self.assertIn("still in use", str(caught.exception))
        self.assertIn("self.session.close()", str(caught.exception))
        self.session.close()
        self.database.snapshot()  # idle now

    def test_a_fresh_database_from_a_snapshot(self):
        db.add_item("lamp")
        snapshot = self.database.snapshot()
        db.add_item("desk")  # after the snapshot: not in the copy
        with self.database.server.create_database("copy", snapshot=snapshot) as copy:
            self.assertNotEqual(copy.name, self.database.name)
            with copy.engine.connect() as connection:
                self.assertEqual(connection.execute(select(db.Item.name)).scalars().all(), ["lamp"])
            name = copy.name
        self.assertEqual(support.gone_soon(name), [])  # dropped behind like any clone
        self.assertEqual(self.names(), ["desk", "lamp"])  # the test's own database is untouched
        with self.assertRaises(TypeError):
            self.database.server.create_database("copy", snapshot="not a snapshot")

    def test_restore_takes_only_snapshots(self):
        with self.assertRaises(TypeError):
            self.database.restore("elefast_x")


class AsyncSnapshotTests(AsyncPostgresTestCase, unittest.IsolatedAsyncioTestCase):
    schema = SCHEMA
    database_url = support.server_url()
    app_engines = ("examples.legacy_shop.adb:engine",)

    async def test_async_snapshot_and_restore(self):
        await adb.add_item("lamp")
        snapshot = await self.database.snapshot()
        await adb.add_item("desk")
        self.assertEqual(await adb.count_items(), 2)
        await self.session.close()
        await self.database.restore(snapshot)
        self.assertEqual(await adb.count_items(), 1)
        async with await self.database.server.create_database("acopy", snapshot=snapshot) as copy:
            async with copy.engine.connect() as connection:
                self.assertEqual((await connection.execute(select(adb.Item.name))).scalars().all(), ["lamp"])


class LeftBehindTests(unittest.TestCase):
    def test_the_servers_close_drops_its_snapshots(self):
        from elefast import DatabaseServer

        prefix = support.unique_prefix("snp")
        self.addCleanup(support.drop_templates, prefix)
        server = DatabaseServer(support.server_url(), schema=SCHEMA)
        database = server.create_database(prefix=prefix)
        snapshot = database.snapshot()
        self.assertIn(snapshot.name, support.databases(prefix + "%"))
        database.drop()
        server.close()
        self.assertEqual([name for name in support.databases(prefix + "%") if "_tpl_" not in name], [])


if __name__ == "__main__":
    unittest.main()
