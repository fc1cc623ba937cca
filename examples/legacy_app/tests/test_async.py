"""The async service functions, on asyncpg, in both isolation modes."""

import unittest

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from examples.legacy_app import services
from examples.legacy_app.models import Note, Plan, User
from examples.legacy_app.tests.base import AsyncDatabaseTestCase


class AsyncSignUpTests(AsyncDatabaseTestCase):
    async def test_sign_up(self):
        await services.sign_up_async(self.session, "Linus@Example.com")
        emails = (await self.session.execute(select(User.email))).scalars().all()
        self.assertEqual(emails, ["linus@example.com"])

    async def test_starts_empty(self):
        self.assertEqual(await self.session.scalar(select(func.count(User.id))), 0)

    async def test_seed_plans_are_there(self):
        self.assertEqual(await self.session.scalar(select(func.count(Plan.code))), 2)

    async def test_duplicate_email(self):
        await services.sign_up_async(self.session, "ada@example.com")
        with self.assertRaises(IntegrityError):
            await services.sign_up_async(self.session, "Ada@example.com")


class AsyncNoteTests(AsyncDatabaseTestCase):
    isolation = "transaction"

    @classmethod
    async def setUpTestData(cls, connection):
        await connection.execute(insert(User).values(email="grace@example.com", plan_code="free"))

    async def asyncSetUp(self):
        self.grace = (await self.session.execute(select(User))).scalar_one()

    async def test_write_and_count(self):
        await services.write_note_async(self.session, self.grace, "async note")
        self.assertEqual(await services.count_notes_async(self.session, "grace@example.com"), 1)

    async def test_free_plan_limit(self):
        for number in range(3):
            await services.write_note_async(self.session, self.grace, f"note {number}")
        with self.assertRaises(services.PlanLimitReached):
            await services.write_note_async(self.session, self.grace, "one too many")

    async def test_rolled_back_after_each_test(self):
        self.assertEqual(await self.session.scalar(select(func.count(Note.id))), 0)


if __name__ == "__main__":
    unittest.main()
