"""Regression tests for four fixes whose tests were missing (the review of issue 16's first part):

- ``restore()`` refuses, naming it, while an app session is inside a transaction, and does not end it;
- ``assertNumQueries`` counts the statements of an app made inside the block (a Flask factory);
- the guard trusts only the engines steered for the class running now: an engine that an earlier
  class listed in ``app_engines`` is refused in a later guarded class that does not list it;
- a Flask app made in a test gets its own engine back after the test.

The classes that must run one after the other run as suites inside a test, on real servers.
"""

import unittest

from sqlalchemy import select, text

from elefast import MetadataMigrator, PostgresTestCase
from elefast.errors import GuardError, SnapshotError
from examples import flask_app
from examples.legacy_shop import db
from tests import support

SHOP = MetadataMigrator(db.Base.metadata)
TEST_CONFIG = {"SQLALCHEMY_DATABASE_URI": "sqlite://", "TESTING": True}


def run(*classes):
    """Run the classes' tests one class after the other; the result."""
    suite = unittest.TestSuite(unittest.defaultTestLoader.loadTestsFromTestCase(cls) for cls in classes)
    result = unittest.TestResult()
    suite.run(result)
    return result


def problems(result):
    return "\n".join(text for _, text in result.errors + result.failures)


class RestoreWithAnAppTransactionTests(PostgresTestCase, unittest.TestCase):
    schema = SHOP
    database_url = support.server_url()
    app_engines = ("examples.legacy_shop.db:engine",)

    def test_restore_refuses_and_leaves_the_app_session_alone(self):
        snapshot = self.database.snapshot()
        db.add_item("lamp")
        app_session = db.Session()
        self.addCleanup(db.Session.remove)
        app_session.execute(select(db.Item.name)).all()  # the app's session is now inside a transaction
        self.session.close()
        with self.assertRaises(SnapshotError) as caught:
            self.database.restore(snapshot)
        self.assertIn("connection(s) of the app's engines (app_engines) on this database are still in use",
                      str(caught.exception))
        self.assertIn("Session.remove()", str(caught.exception))  # the fix
        # not ended: the app's session goes on in its transaction
        self.assertEqual(app_session.execute(select(db.Item.name)).scalars().all(), ["lamp"])
        app_session.rollback()
        db.Session.remove()
        self.database.restore(snapshot)  # idle now: restored
        self.assertEqual(db.count_items(), 0)


class CountAppMadeInTheBlock(PostgresTestCase, unittest.TestCase):
    schema = MetadataMigrator(flask_app.db.metadata)
    database_url = support.server_url()
    app_engines = (flask_app.db,)

    def query_through_a_new_app(self):
        app = flask_app.create_app(TEST_CONFIG)
        with app.app_context():
            flask_app.db.session.execute(text("select 1"))
            flask_app.db.session.remove()

    def test_an_app_made_in_the_block_is_counted(self):
        with self.assertRaises(AssertionError) as caught:
            with self.assertNumQueries(0):
                self.query_through_a_new_app()
        self.assertIn("select 1", str(caught.exception))
        with self.assertNumQueries(1):
            self.query_through_a_new_app()


class _Listed(PostgresTestCase, unittest.TestCase):
    schema = SHOP
    database_url = support.server_url()
    app_engines = (db.engine,)

    def test_uses_the_app_engine(self):
        db.add_item("lamp")
        self.assertEqual(db.count_items(), 1)


class _GuardedWithoutIt(PostgresTestCase, unittest.TestCase):
    schema = SHOP
    database_url = support.server_url()
    guard = True

    def test_the_other_class_engine_is_refused(self):
        with self.assertRaises(GuardError):
            with db.engine.connect():
                pass


class _AppMadeInATest(PostgresTestCase, unittest.TestCase):
    schema = MetadataMigrator(flask_app.db.metadata)
    database_url = support.server_url()
    app_engines = (flask_app.db,)
    made = []

    def test_makes_an_app(self):
        app = flask_app.create_app(TEST_CONFIG)
        with app.app_context():
            self.assertEqual(flask_app.db.engine.dialect.name, "postgresql")  # steered during the test
        self.made.append(app)


class OneClassAfterAnotherTests(unittest.TestCase):
    def test_a_guard_after_an_app_engines_class_refuses_that_engine(self):
        result = run(_Listed, _GuardedWithoutIt)
        self.assertEqual(result.testsRun, 2)
        self.assertTrue(result.wasSuccessful(), problems(result))

    def test_an_app_made_in_a_test_has_its_own_engine_after_it(self):
        _AppMadeInATest.made.clear()
        result = run(_AppMadeInATest)
        self.assertTrue(result.wasSuccessful(), problems(result))
        (app,) = _AppMadeInATest.made
        with app.app_context():
            self.assertEqual(flask_app.db.engine.dialect.name, "sqlite")
            flask_app.db.create_all()
            self.assertEqual(flask_app.db.session.execute(text("select 1")).scalar(), 1)
            flask_app.db.session.remove()
            flask_app.db.drop_all()


def load_tests(loader, tests, pattern):
    """The underscored classes run only inside OneClassAfterAnotherTests, in their order."""
    suite = unittest.TestSuite()
    for cls in (RestoreWithAnAppTransactionTests, CountAppMadeInTheBlock, OneClassAfterAnotherTests):
        suite.addTests(loader.loadTestsFromTestCase(cls))
    return suite


if __name__ == "__main__":
    unittest.main()
