"""A legacy-style unittest suite: each test gets its own fresh database from elefast."""

import unittest

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from elefast import AsyncPostgresTestCase, MetadataMigrator, PostgresTestCase
from examples.legacy_app import services
from examples.legacy_app.models import Base, Note, User

SCHEMA = MetadataMigrator(Base.metadata)


class SignUpTests(PostgresTestCase, unittest.TestCase):
    schema = SCHEMA

    def test_sign_up_stores_lower_case(self):
        services.sign_up(self.session, " Ada@Example.com ")
        self.assertEqual(self.session.execute(select(User.email)).scalar_one(), "ada@example.com")

    def test_emails_are_unique(self):
        services.sign_up(self.session, "ada@example.com")
        with self.assertRaises(IntegrityError):
            services.sign_up(self.session, "ADA@example.com")

    def test_starts_empty(self):
        self.assertEqual(self.session.execute(select(func.count(User.id))).scalar_one(), 0)


class NoteTests(PostgresTestCase, unittest.TestCase):
    schema = SCHEMA

    def setUp(self):
        super().setUp()
        self.user = services.sign_up(self.session, "grace@example.com")

    def test_write_and_count(self):
        services.write_note(self.session, self.user, "first")
        services.write_note(self.session, self.user, "second")
        self.assertEqual(services.count_notes(self.session, "grace@example.com"), 2)

    def test_empty_note_refused(self):
        with self.assertRaises(ValueError):
            services.write_note(self.session, self.user, "   ")
        self.assertEqual(self.session.execute(select(func.count(Note.id))).scalar_one(), 0)


class AsyncSignUpTests(AsyncPostgresTestCase, unittest.IsolatedAsyncioTestCase):
    schema = SCHEMA

    async def test_sign_up(self):
        await services.sign_up_async(self.session, "Linus@Example.com")
        emails = (await self.session.execute(select(User.email))).scalars().all()
        self.assertEqual(emails, ["linus@example.com"])

    async def test_starts_empty(self):
        count = (await self.session.execute(select(func.count(User.id)))).scalar_one()
        self.assertEqual(count, 0)


if __name__ == "__main__":
    unittest.main()
