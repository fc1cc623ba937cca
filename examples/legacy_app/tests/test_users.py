"""Signing up, plans and deleting users: each test has a database of its own."""

import unittest

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, NoResultFound

from examples.legacy_app import services
from examples.legacy_app.models import Note, Plan, User
from examples.legacy_app.tests.base import DatabaseTestCase


class SignUpTests(DatabaseTestCase):
    def test_starts_empty(self):
        self.assertEqual(self.session.scalar(select(func.count(User.id))), 0)

    def test_plans_are_seeded_by_the_migration(self):
        plans = self.session.execute(select(Plan.code, Plan.max_notes).order_by(Plan.code)).all()
        self.assertEqual(plans, [("free", 3), ("pro", 1000)])

    def test_sign_up_stores_lower_case(self):
        services.sign_up(self.session, " Ada@Example.com ")
        self.assertEqual(self.session.scalar(select(User.email)), "ada@example.com")

    def test_new_users_are_on_the_free_plan(self):
        user = services.sign_up(self.session, "ada@example.com")
        self.assertEqual(user.plan.name, "Free")

    def test_emails_are_unique_in_any_case(self):
        services.sign_up(self.session, "ada@example.com")
        with self.assertRaises(IntegrityError):
            services.sign_up(self.session, "ADA@example.com")

    def test_unknown_plan_is_refused_by_the_database(self):
        with self.assertRaises(IntegrityError):
            services.sign_up(self.session, "ada@example.com", plan="platinum")

    def test_find_user_ignores_case(self):
        services.sign_up(self.session, "grace@example.com")
        self.assertEqual(services.find_user(self.session, "Grace@Example.COM").email, "grace@example.com")

    def test_find_unknown_user(self):
        with self.assertRaises(NoResultFound):
            services.find_user(self.session, "nobody@example.com")


class PlanTests(DatabaseTestCase):
    def setUp(self):
        super().setUp()
        self.user = services.sign_up(self.session, "linus@example.com")

    def test_change_plan(self):
        services.change_plan(self.session, self.user, "pro")
        self.assertEqual(self.user.plan.max_notes, 1000)

    def test_change_to_unknown_plan(self):
        with self.assertRaises(ValueError):
            services.change_plan(self.session, self.user, "platinum")
        self.assertEqual(self.user.plan_code, "free")

    def test_delete_user_removes_their_notes(self):
        services.write_note(self.session, self.user, "soon gone")
        services.delete_user(self.session, self.user)
        self.assertEqual(self.session.scalar(select(func.count(Note.id))), 0)
        self.assertEqual(self.session.scalar(select(func.count(User.id))), 0)

    def test_a_committed_change_is_visible_to_another_connection(self):
        """The service commits for real: a second connection to the test's database sees it."""
        services.change_plan(self.session, self.user, "pro")
        with self.engine.connect() as other:
            self.assertEqual(other.scalar(select(User.plan_code)), "pro")


if __name__ == "__main__":
    unittest.main()
