"""The Flask app's tests: each test on its own PostgreSQL database (or, in the second class, one
transaction rolled back after it), though the app's config says SQLite."""

import unittest

from elefast import MetadataMigrator, PostgresTestCase
from examples.flask_app import User, create_app, db

app = create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://", "TESTING": True})


class SignUpTests(PostgresTestCase, unittest.TestCase):
    schema = MetadataMigrator(db.metadata)
    app_engines = (db,)  # every engine of every app of this db, and db.session with them

    def setUp(self):
        self.context = app.app_context()
        self.context.push()
        self.addCleanup(self.context.pop)
        self.client = app.test_client()

    def test_sign_up_on_postgres(self):
        response = self.client.post("/users", json={"email": "ada@example.com"})
        self.assertEqual(response.status_code, 201, response.json)
        self.assertEqual(db.session.execute(db.text("select version()")).scalar()[:10], "PostgreSQL")
        self.assertEqual([u.email for u in self.session.query(User)], ["ada@example.com"])

    def test_the_same_email_again_in_a_fresh_database(self):
        self.assertEqual(self.client.post("/users", json={"email": "ada@example.com"}).status_code, 201)
        self.assertEqual(self.client.post("/users", json={"email": "ada@example.com"}).status_code, 409)
        self.assertEqual(self.client.get("/users").json, ["ada@example.com"])


class SignUpInATransactionTests(SignUpTests):
    isolation = "transaction"  # one database for the class; db.session's commits become savepoints

    def test_rows_from_the_test_session_are_seen_by_the_app(self):
        self.session.add(User(email="grace@example.com"))
        self.session.commit()
        self.assertEqual(self.client.get("/users").json, ["grace@example.com"])


if __name__ == "__main__":
    unittest.main()
