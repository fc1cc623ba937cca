"""The legacy shop's own tests: its import-time engine and scoped session, unchanged, on each
test's database (and, in the second class, in one transaction rolled back after each test)."""

import unittest

from sqlalchemy.exc import IntegrityError

from elefast import MetadataMigrator, PostgresTestCase
from examples.legacy_shop import db


class ItemTests(PostgresTestCase, unittest.TestCase):
    schema = MetadataMigrator(db.Base.metadata)
    app_engines = ("examples.legacy_shop.db:engine",)

    def test_add_from_a_request_thread(self):
        db.add_item_in_thread("lamp")
        self.assertEqual(db.count_items(), 1)

    def test_names_are_unique(self):
        db.add_item("lamp")
        with self.assertRaises(IntegrityError):
            db.add_item("lamp")
        db.rename_in_block("lamp", "bulb")
        self.assertEqual([item.name for item in self.session.query(db.Item)], ["bulb"])


class ItemTransactionTests(ItemTests):
    isolation = "transaction"


if __name__ == "__main__":
    unittest.main()
