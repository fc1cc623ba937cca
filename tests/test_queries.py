"""Query assertions: assertNumQueries and captureQueries on both mixins, over the test's engine and
the class's app_engines (the app's own import-time engine, from another thread too), in both
isolation modes; capture_queries for a plain engine."""

import threading
import unittest

from sqlalchemy import select, text

from elefast import AsyncPostgresTestCase, MetadataMigrator, PostgresTestCase
from elefast.queries import capture_queries
from examples.legacy_shop import adb, db
from tests import support

SCHEMA = MetadataMigrator(db.Base.metadata)


class _Queries:
    schema = SCHEMA
    database_url = support.server_url()
    app_engines = ("examples.legacy_shop.db:engine",)

    def test_counts_the_tests_and_the_apps_statements(self):
        with self.assertNumQueries(3):
            self.session.execute(select(db.Item.name)).all()
            db.add_item("lamp")  # the app's engine: an INSERT (its commit is not a statement)
            self.assertEqual(db.count_items(), 1)

    def test_a_wrong_count_fails_listing_the_statements_with_their_parameters(self):
        with self.assertRaises(AssertionError) as caught:
            with self.assertNumQueries(1):
                db.add_item("desk")
                db.count_items()
        message = str(caught.exception)
        self.assertIn("2 queries ran, 1 expected", message)
        self.assertIn("1. INSERT INTO items", message)
        self.assertIn("'desk'", message)
        self.assertIn("2. SELECT count(", message)

    def test_capture_in_order_from_another_thread(self):
        with self.captureQueries() as queries:
            worker = threading.Thread(target=db.add_item, args=("chair",))
            worker.start()
            worker.join()
            self.session.execute(text("select 42")).scalar()
        self.assertEqual(len(queries), 2, queries.listing())
        self.assertTrue(queries[0].statement.startswith("INSERT INTO items"), queries.listing())
        self.assertEqual(queries[1].statement, "select 42")
        self.assertIn("chair", str(queries[0].parameters))

    def test_the_callable_form(self):
        self.assertEqual(self.assertNumQueries(1, db.count_items), 0)

    def test_nothing_is_recorded_after_the_block(self):
        with self.captureQueries() as queries:
            pass
        db.count_items()
        self.assertEqual(list(queries), [])


class DatabaseModeQueryTests(_Queries, PostgresTestCase, unittest.TestCase):
    pass


class TransactionModeQueryTests(_Queries, PostgresTestCase, unittest.TestCase):
    """The sandbox's savepoints are elefast's, not the app's: the counts are the same as above."""

    isolation = "transaction"


class AsyncQueryTests(AsyncPostgresTestCase, unittest.IsolatedAsyncioTestCase):
    schema = SCHEMA
    database_url = support.server_url()
    app_engines = ("examples.legacy_shop.adb:engine",)

    async def test_async_engines_are_counted(self):
        with self.assertNumQueries(2) as queries:
            await adb.add_item("lamp")
            async with self.engine.connect() as connection:
                await connection.execute(text("select 1"))
        self.assertEqual(queries.statements[1], "select 1")


class PlainEngineTests(unittest.TestCase):
    def test_capture_queries_on_any_engine(self):
        from sqlalchemy import create_engine

        engine = create_engine(support.psycopg_url())
        self.addCleanup(engine.dispose)
        with capture_queries(engine) as queries, engine.connect() as connection:
            connection.execute(text("select :x"), {"x": 5})
        self.assertEqual([(q.statement, q.parameters) for q in queries], [("select %(x)s", {"x": 5})])

    def test_not_an_engine(self):
        with self.assertRaisesRegex(TypeError, "takes engines"):
            capture_queries("postgresql://")


if __name__ == "__main__":
    unittest.main()
