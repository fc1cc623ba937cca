"""app_engines: an app whose engine is built at import time, from settings naming a server and a
database that do not exist here, runs on each test's database in both modes, sync and async,
with writes from a background thread, and nothing of it is changed."""

import os
import time
import unittest

import psycopg
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import IntegrityError

from elefast import AsyncPostgresTestCase, MetadataMigrator, PostgresTestCase
from elefast.errors import ConfigurationError, GuardError
from examples.legacy_shop import adb, db
from tests import support

SCHEMA = MetadataMigrator(db.Base.metadata)


class _Shop:
    schema = SCHEMA
    database_url = support.server_url()
    app_engines = ("examples.legacy_shop.db:engine",)

    def names(self):
        return sorted(self.session.execute(select(db.Item.name)).scalars())


class DatabaseModeTests(_Shop, PostgresTestCase, unittest.TestCase):
    """Each test: the app's engine connects to that test's fresh database."""

    def test_the_app_engine_is_on_this_tests_database(self):
        self.assertEqual(db.current_database(), self.database.url.database)

    def test_app_writes_are_seen_by_the_test_and_start_empty(self):
        db.add_item("lamp")
        db.add_item_in_thread("desk")
        self.assertEqual(self.names(), ["desk", "lamp"])
        self.assertEqual(db.count_items(), 2)

    def test_the_same_unique_name_again_in_the_next_test(self):
        db.add_item("lamp")  # the other test's lamp is in another database
        with self.assertRaises(IntegrityError):
            db.add_item("lamp")
        db.rename_in_block("lamp", "bulb")
        self.assertEqual(self.names(), ["bulb"])

    def test_no_connection_outlives_the_test(self):
        db.count_items()
        name = self.database.url.database
        self.doCleanups()
        self.assertEqual(db.engine.pool.checkedin(), 0)
        deadline = time.monotonic() + 2  # a closed session's server process takes a moment to leave
        with psycopg.connect(support.libpq_dsn(), autocommit=True) as conn:
            while True:
                sessions = conn.execute("select count(*) from pg_stat_activity where datname = %s",
                                        (name,)).fetchone()[0]
                if sessions == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
        self.assertEqual(sessions, 0)  # a connection still open after 2 s outlived the test


class TransactionModeTests(_Shop, PostgresTestCase, unittest.TestCase):
    """Each test: the app's connections join the test's one transaction, rolled back after it."""

    isolation = "transaction"

    def test_commits_are_seen_and_rolled_back_after_the_test(self):
        db.add_item("lamp")  # commits: a savepoint released inside the test's transaction
        self.assertEqual(self.names(), ["lamp"])
        self.assertEqual(db.count_items(), 1)

    def test_the_next_test_does_not_see_the_last_ones_rows(self):
        self.assertEqual(db.count_items(), 0)
        db.add_item("lamp")
        self.assertEqual(db.count_items(), 1)

    def test_a_failed_commit_rolls_back_to_the_apps_savepoint_only(self):
        db.add_item("lamp")
        with self.assertRaises(IntegrityError):
            db.add_item("lamp")
        db.add_item("desk")  # the transaction is usable again; the lamp stayed
        self.assertEqual(self.names(), ["desk", "lamp"])

    def test_a_background_thread_writes_in_the_same_transaction(self):
        db.add_item_in_thread("desk")
        self.assertEqual(self.names(), ["desk"])

    def test_the_test_session_rows_are_seen_by_the_app(self):
        self.session.add(db.Item(name="chair"))
        self.session.commit()
        self.assertEqual(db.count_items(), 1)
        db.rename_in_block("chair", "stool")
        self.assertEqual(self.names(), ["stool"])

    def test_an_app_transaction_left_open_under_the_test_session(self):
        app_session = db.Session()
        app_session.execute(select(db.Item.name)).all()  # the app's savepoint is open, then the test's begins
        self.session.add(db.Item(name="chair"))
        self.session.flush()
        db.Session.remove()  # the app gives its connection back while the test's savepoint is above its own
        self.session.commit()
        self.assertEqual(self.names(), ["chair"])

    def test_the_app_engine_is_on_the_class_database(self):
        self.assertEqual(db.current_database(), self.database.url.database)


class AfterTheClassTests(unittest.TestCase):
    def test_the_engine_is_the_apps_again_outside_the_tests(self):
        self.assertIs(type(db.engine.pool).__name__ != "SandboxPool", True)
        self.assertEqual(db.engine.url.host, "shop-db.invalid")  # the object itself was never changed
        with self.assertRaises(Exception):
            with db.engine.connect():
                pass  # where the app says: a host that does not exist


class _AsyncShop:
    schema = SCHEMA
    database_url = support.server_url()
    app_engines = (adb.engine,)


class AsyncDatabaseModeTests(_AsyncShop, AsyncPostgresTestCase, unittest.IsolatedAsyncioTestCase):
    async def test_on_this_tests_database(self):
        self.assertEqual(await adb.current_database(), self.database.url.database)
        await adb.add_item("lamp")
        self.assertEqual(await adb.count_items(), 1)

    async def test_starts_empty(self):
        self.assertEqual(await adb.count_items(), 0)
        await adb.add_item("lamp")


class AsyncTransactionModeTests(_AsyncShop, AsyncPostgresTestCase, unittest.IsolatedAsyncioTestCase):
    isolation = "transaction"

    async def test_commits_join_the_tests_transaction(self):
        await adb.add_item("lamp")
        rows = (await self.session.execute(select(db.Item.name))).scalars().all()
        self.assertEqual(rows, ["lamp"])

    async def test_rolled_back_after_each_test(self):
        self.assertEqual(await adb.count_items(), 0)
        await adb.add_item("lamp")
        with self.assertRaises(IntegrityError):
            await adb.add_item("lamp")
        self.assertEqual(await adb.count_items(), 1)


class UrlVariableTests(PostgresTestCase, unittest.TestCase):
    schema = SCHEMA
    database_url = support.server_url()
    database_url_env = "SHOP_DATABASE_URL"

    def test_the_variable_holds_a_url_that_connects_to_the_test_database(self):
        url = os.environ["SHOP_DATABASE_URL"]
        engine = create_engine(url)
        try:
            with engine.connect() as connection:
                name = connection.execute(text("select current_database()")).scalar()
        finally:
            engine.dispose()
        self.assertEqual(name, self.database.url.database)

    def test_restored_after_the_test(self):
        self.doCleanups()
        self.assertNotIn("SHOP_DATABASE_URL", os.environ)


class GuardTests(PostgresTestCase, unittest.TestCase):
    schema = SCHEMA
    database_url = support.server_url()
    guard = True
    app_engines = (db.engine,)

    def test_an_engine_elsewhere_fails_with_the_fix(self):
        stray = create_engine(support.psycopg_url())  # the server's own postgres database
        try:
            with self.assertRaises(GuardError) as caught:
                stray.connect()
        finally:
            stray.dispose()
        self.assertIn("app_engines", str(caught.exception))
        self.assertIn("/postgres", str(caught.exception))

    def test_the_test_and_app_engines_pass(self):
        db.add_item("lamp")
        self.assertEqual(self.session.execute(select(db.Item.name)).scalars().all(), ["lamp"])
        own = create_engine(self.database.url)
        try:
            with own.connect() as connection:
                self.assertEqual(connection.execute(text("select count(*) from items")).scalar(), 1)
        finally:
            own.dispose()


class BadInputTests(unittest.TestCase):
    def set_up(self, **attributes):
        cls = type("Shop", (PostgresTestCase, unittest.TestCase),
                   dict(schema=SCHEMA, database_url=support.server_url(), **attributes))
        cls._elefast_class_set_up()
        cls.doClassCleanups()

    def test_each_bad_entry_is_named(self):
        cases = [
            (("examples.legacy_shop.db.engine",), "a colon before the attribute"),
            (("examples.legacy_shop.nothing:engine",), "does not import"),
            (("examples.legacy_shop.db:motor",), "has no attribute 'motor'"),
            (("examples.legacy_shop.other:settings",), "not an Engine"),
            (("examples.legacy_shop.other:sqlite_engine",), "sqlite engine"),
        ]
        for entry, message in cases:
            with self.subTest(entry=entry):
                with self.assertRaises(ConfigurationError) as caught:
                    self.set_up(app_engines=entry)
                self.assertIn(message, str(caught.exception))
                self.assertIn("Shop.app_engines", str(caught.exception))

    def test_not_a_tuple(self):
        with self.assertRaises(ConfigurationError):
            self.set_up(app_engines=db.engine)


if __name__ == "__main__":
    unittest.main()
