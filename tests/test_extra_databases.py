"""Several databases per test (``extra_databases``): each its own template, in the class's
isolation mode, sync and async; app engines named for the database they belong to; the guard
lets the extra databases through. Real servers only."""

import unittest

import sqlalchemy as sa
from sqlalchemy import create_engine, text

from elefast import AsyncPostgresTestCase, MetadataMigrator, PostgresTestCase
from elefast.errors import ConfigurationError
from tests import support

main_metadata = sa.MetaData()
sa.Table("orders", main_metadata, sa.Column("id", sa.Integer, primary_key=True), sa.Column("item", sa.Text))
reports_metadata = sa.MetaData()
sa.Table("reports", reports_metadata, sa.Column("id", sa.Integer, primary_key=True), sa.Column("title", sa.Text))

#: The app's reporting engine, made at import for a host that does not exist (as apps do from settings).
reports_engine = create_engine("postgresql+psycopg://app:secret@reports-db.invalid:5432/reports")


def tables(connection):
    return sorted(connection.execute(text("select tablename from pg_tables where schemaname = 'public'")).scalars())


class _TwoDatabases:
    schema = MetadataMigrator(main_metadata)
    extra_databases = {"reports": MetadataMigrator(reports_metadata)}
    database_url = support.server_url()
    app_engines = (("reports", reports_engine),)
    guard = True

    def test_each_has_its_own_schema_and_name(self):
        reports = self.databases["reports"]
        self.assertNotEqual(reports.name, self.database.name)
        self.assertEqual(tables(self.session), ["orders"])
        self.assertEqual(tables(self.sessions["reports"]), ["reports"])

    def test_writes_start_empty_in_both(self):
        self.write_both()

    def test_writes_start_empty_in_both_again(self):
        self.write_both()

    def write_both(self):
        self.session.execute(text("insert into orders (item) values ('lamp')"))
        self.session.commit()
        self.sessions["reports"].execute(text("insert into reports (title) values ('q1')"))
        self.sessions["reports"].commit()
        self.assertEqual(self.session.execute(text("select count(*) from orders")).scalar(), 1)
        self.assertEqual(self.sessions["reports"].execute(text("select count(*) from reports")).scalar(), 1)

    def test_the_apps_reporting_engine_is_on_the_reports_database(self):
        with reports_engine.connect() as connection:
            self.assertEqual(connection.execute(text("select current_database()")).scalar(),
                             self.databases["reports"].name)
            self.assertEqual(tables(connection), ["reports"])

    def test_the_guard_lets_the_extra_database_through(self):
        own = create_engine(self.databases["reports"].url)
        try:
            with own.connect() as connection:
                self.assertEqual(tables(connection), ["reports"])
        finally:
            own.dispose()


class TwoDatabasesTests(_TwoDatabases, PostgresTestCase, unittest.TestCase):
    pass


class TwoDatabasesInATransactionTests(_TwoDatabases, PostgresTestCase, unittest.TestCase):
    isolation = "transaction"

    def test_the_extra_connection_is_in_the_test_transaction(self):
        self.assertTrue(self.connections["reports"].in_transaction())


class AsyncTwoDatabasesTests(AsyncPostgresTestCase, unittest.IsolatedAsyncioTestCase):
    schema = MetadataMigrator(main_metadata)
    extra_databases = {"reports": MetadataMigrator(reports_metadata)}
    database_url = support.server_url()

    async def test_both_async_and_fresh(self):
        reports = self.sessions["reports"]
        await reports.execute(text("insert into reports (title) values ('q1')"))
        await reports.commit()
        self.assertEqual((await reports.execute(text("select count(*) from reports"))).scalar(), 1)
        self.assertEqual((await self.session.execute(text("select count(*) from orders"))).scalar(), 0)
        self.assertNotEqual(self.databases["reports"].name, self.database.name)

    async def test_fresh_again(self):
        self.assertEqual((await self.sessions["reports"].execute(text("select count(*) from reports"))).scalar(), 0)


class KeepFailedTests(unittest.TestCase):
    def test_a_failing_test_keeps_its_extra_databases_too(self):
        prefix = support.unique_prefix("kfx")
        result, kept = support.run_keeping_failed(self, prefix, (
            "    extra_databases = {'reports': None}\n"
            "    def test_fails(self):\n"
            "        self.fail('on purpose')\n"))
        self.assertEqual(len(kept), 2, result.stderr[-2000:])  # the main one and the reports one
        self.assertEqual(len([name for name in kept if name.startswith(prefix + "_reports_")]), 1, kept)
        for name in kept:
            self.assertIn(f"elefast kept the database of the failing test __main__.T.test_fails: {name}", result.stderr)


class BadInputTests(unittest.TestCase):
    def make(self, **attributes):
        return type("Shop", (PostgresTestCase, unittest.TestCase),
                    dict(schema=MetadataMigrator(main_metadata), database_url=support.server_url(), **attributes))

    def test_a_name_that_cannot_be_used(self):
        with self.assertRaises(ConfigurationError) as caught:
            self.make(extra_databases={"two words": None})
        self.assertIn("is not a usable name", str(caught.exception))

    def test_not_a_dict(self):
        with self.assertRaises(ConfigurationError) as caught:
            self.make(extra_databases=[MetadataMigrator(reports_metadata)])
        self.assertIn("must be a dict of names to migrators", str(caught.exception))

    def test_an_app_engine_for_a_database_that_is_not_there(self):
        with self.assertRaises(ConfigurationError) as caught:
            self.make(extra_databases={"reports": None}, app_engines=(("audit", reports_engine),))
        self.assertIn("names the database 'audit', which is not in extra_databases (reports)", str(caught.exception))


if __name__ == "__main__":
    unittest.main()
