"""Notes and tags, in transaction mode: one database per class, each test rolled back.

``setUpTestData`` writes the users once per class; every test starts from them and
whatever a test writes (even what the service commits) is gone before the next.
"""

import unittest

from sqlalchemy import func, insert, select

from examples.legacy_app import services
from examples.legacy_app.models import Note, Tag, User
from examples.legacy_app.tests.base import DatabaseTestCase


class NoteTests(DatabaseTestCase):
    isolation = "transaction"

    @classmethod
    def setUpTestData(cls, connection):
        connection.execute(insert(User), [
            {"email": "grace@example.com", "plan_code": "free"},
            {"email": "linus@example.com", "plan_code": "pro"},
        ])

    def setUp(self):
        super().setUp()
        self.grace = services.find_user(self.session, "grace@example.com")
        self.linus = services.find_user(self.session, "linus@example.com")

    def test_users_from_set_up_test_data(self):
        self.assertEqual(self.session.scalar(select(func.count(User.id))), 2)

    def test_write_and_count(self):
        services.write_note(self.session, self.grace, "first")
        services.write_note(self.session, self.grace, "second")
        self.assertEqual(services.count_notes(self.session, "grace@example.com"), 2)

    def test_previous_test_left_nothing(self):
        self.assertEqual(self.session.scalar(select(func.count(Note.id))), 0)

    def test_empty_note_refused(self):
        with self.assertRaises(ValueError):
            services.write_note(self.session, self.grace, "   ")
        self.assertEqual(self.session.scalar(select(func.count(Note.id))), 0)

    def test_free_plan_limit(self):
        for number in range(3):
            services.write_note(self.session, self.grace, f"note {number}")
        with self.assertRaises(services.PlanLimitReached):
            services.write_note(self.session, self.grace, "one too many")
        self.assertEqual(services.count_notes(self.session, "grace@example.com"), 3)

    def test_pro_plan_has_room(self):
        for number in range(5):
            services.write_note(self.session, self.linus, f"note {number}")
        self.assertEqual(services.count_notes(self.session, "linus@example.com"), 5)

    def test_search_ignores_case(self):
        services.write_note(self.session, self.linus, "Buy MILK")
        services.write_note(self.session, self.linus, "call the bank")
        self.assertEqual(services.search_notes(self.session, "milk"), ["Buy MILK"])

    def test_writes_are_visible_on_the_test_connection(self):
        """In transaction mode ``self.connection`` shares the test's transaction."""
        services.write_note(self.session, self.grace, "shared")
        self.assertEqual(self.connection.scalar(select(Note.text)), "shared")


class TagTests(DatabaseTestCase):
    isolation = "transaction"

    @classmethod
    def setUpTestData(cls, connection):
        connection.execute(insert(User).values(email="ada@example.com", plan_code="pro"))

    def setUp(self):
        super().setUp()
        user = services.find_user(self.session, "ada@example.com")
        self.note = services.write_note(self.session, user, "engine notes")

    def test_tags_are_created_and_lower_cased(self):
        services.tag_note(self.session, self.note, "Math", "history")
        self.assertEqual(sorted(t.name for t in self.note.tags), ["history", "math"])

    def test_existing_tag_is_reused(self):
        services.tag_note(self.session, self.note, "math")
        services.tag_note(self.session, self.note, "MATH", "math ")
        self.assertEqual(self.session.scalar(select(func.count(Tag.id))), 1)

    def test_notes_tagged(self):
        services.tag_note(self.session, self.note, "math")
        self.assertEqual(services.notes_tagged(self.session, "Math"), ["engine notes"])

    def test_no_tags_left_from_other_tests(self):
        self.assertEqual(self.session.scalar(select(func.count(Tag.id))), 0)


if __name__ == "__main__":
    unittest.main()
