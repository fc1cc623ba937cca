"""A Flask app made inside the tests, the shape of most Flask suites (miguelgrinberg/microblog's):
``create_app(TestConfig)`` in ``setUp`` (or ``setUpClass``), a test config on ``sqlite://``,
``db.create_all()`` / ``db.drop_all()`` around each test. With ``app_engines = (db,)`` every
engine the extension makes, whenever it makes it, runs on the test's PostgreSQL database."""

import unittest

from sqlalchemy import text

from elefast import MetadataMigrator, PostgresTestCase
from examples.flask_app import User, create_app, db
from tests import support

TEST_CONFIG = {"SQLALCHEMY_DATABASE_URI": "sqlite://", "TESTING": True}


class AppInSetUpTests(PostgresTestCase, unittest.TestCase):
    """A new app for every test, made after elefast's set-up ran."""

    schema = MetadataMigrator(db.metadata)
    database_url = support.server_url()
    app_engines = (db,)
    guard = True  # a connection that missed the test's database would fail the test

    def setUp(self):
        self.app = create_app(TEST_CONFIG)
        self.context = self.app.app_context()
        self.context.push()
        db.create_all()

    def tearDown(self):
        db.session.remove()
        self.session.close()  # its open transaction holds a lock on the tables drop_all drops: it would wait
        db.drop_all()
        self.context.pop()

    def where(self):
        return db.session.execute(text("select current_database()")).scalar()

    def test_the_new_apps_engine_is_on_this_tests_database(self):
        self.assertEqual(db.engine.dialect.name, "postgresql")
        self.assertEqual(self.where(), self.database.name)

    def test_commits_are_seen_by_the_test_session(self):
        db.session.add(User(email="ada@example.com"))
        db.session.commit()
        self.assertEqual([user.email for user in self.session.query(User)], ["ada@example.com"])

    def test_the_same_email_in_the_next_test(self):
        db.session.add(User(email="ada@example.com"))
        db.session.commit()
        self.assertEqual(self.app.test_client().get("/users").json, ["ada@example.com"])

    def test_a_postgres_url_for_a_server_that_is_not_here_is_steered_too(self):
        other = create_app({"SQLALCHEMY_DATABASE_URI": "postgresql+psycopg://app@db.invalid:5999/app"})
        with other.app_context():
            self.assertEqual(db.session.execute(text("select current_database()")).scalar(), self.database.name)
            db.session.remove()


class AppInSetUpInATransactionTests(AppInSetUpTests):
    """The same tests, each in the class's one transaction: the app's commits roll back after it."""

    isolation = "transaction"

    def test_the_new_apps_engine_is_on_this_tests_database(self):
        self.assertEqual(self.where(), self.database.name)
        self.assertEqual(db.session.execute(text("select count(*) from users")).scalar(), 0)


class AppInSetUpClassTests(PostgresTestCase, unittest.TestCase):
    """An app made in ``setUpClass`` after elefast's, so after ``app_engines`` was resolved."""

    schema = MetadataMigrator(db.metadata)
    database_url = support.server_url()
    app_engines = (db,)

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.app = create_app(TEST_CONFIG)

    def setUp(self):
        self.context = self.app.app_context()
        self.context.push()
        self.addCleanup(self.context.pop)
        self.addCleanup(db.session.remove)

    def test_on_this_tests_database(self):
        self.assertEqual(db.session.execute(text("select current_database()")).scalar(), self.database.name)

    def test_starts_empty_again(self):
        self.assertEqual(self.app.test_client().post("/users", json={"email": "ada@example.com"}).status_code, 201)
        self.assertEqual(self.session.query(User).count(), 1)

    def test_starts_empty_once_more(self):
        self.assertEqual(self.app.test_client().post("/users", json={"email": "ada@example.com"}).status_code, 201)
        self.assertEqual(self.session.query(User).count(), 1)


class AfterTheClassesTests(unittest.TestCase):
    def test_an_app_made_outside_the_tests_keeps_its_own_database(self):
        app = create_app(TEST_CONFIG)
        with app.app_context():
            self.assertEqual(db.engine.dialect.name, "sqlite")


if __name__ == "__main__":
    unittest.main()
