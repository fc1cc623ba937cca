"""Test classes that use the mixins; run by tests/test_testcase.py, not collected directly.

The name does not match ``test*.py``, so ``unittest discover`` skips this module;
``test_testcase`` runs these classes and inspects their results.
"""

import os
import unittest

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from elefast import AsyncDatabase, AsyncPostgresTestCase, Database, PostgresTestCase
from elefast.sync import MetadataMigrator
from tests.test_sync import FailingMigrator, SeededMigrator, metadata, users

SEEDED = SeededMigrator()
PREFIX = os.environ.get("EFT_CASES_PREFIX", f"eft_mix{os.getpid()}")
ASYNC_PREFIX = PREFIX + "_a"


class SyncCases(PostgresTestCase, unittest.TestCase):
    schema = SEEDED
    database_prefix = PREFIX

    def test_attributes(self):
        self.assertIsInstance(self.database, Database)
        self.assertIs(self.engine, self.database.engine)
        self.assertIsInstance(self.session, Session)
        self.assertTrue(self.database.name.startswith(PREFIX + "_"))

    def test_isolation_first(self):
        self.assertEqual(self.session.execute(select(func.count()).select_from(users)).scalar(), 1)
        self.session.execute(users.insert().values(name="first"))
        self.session.commit()

    def test_isolation_second(self):
        self.assertEqual(self.session.execute(select(func.count()).select_from(users)).scalar(), 1)
        self.session.execute(users.insert().values(name="second"))
        self.session.commit()

    def test_leaves_connection_and_transaction_open(self):
        connection = self.engine.connect()
        connection.begin()
        connection.execute(users.insert().values(name="never committed"))
        self.leaked = connection  # kept alive past the test on purpose

    def test_after_leak(self):
        self.assertEqual(self.session.execute(select(users.c.name)).scalars().all(), ["seed"])


class SameSchemaOtherClass(PostgresTestCase, unittest.TestCase):
    """Shares the process-wide server and template with SyncCases."""

    schema = SEEDED
    database_prefix = PREFIX

    def test_seed(self):
        self.assertEqual(self.session.execute(select(users.c.name)).scalars().all(), ["seed"])


class ForgetsSuperSetUp(PostgresTestCase, unittest.TestCase):
    schema = MetadataMigrator(metadata)
    database_prefix = PREFIX

    def setUp(self):  # no super().setUp(): elefast must still set up
        self.marker = True

    def tearDown(self):  # no super().tearDown() either
        pass

    def test_still_has_database(self):
        self.assertTrue(self.marker)
        self.session.execute(select(users)).all()


class FailingSetUp(PostgresTestCase, unittest.TestCase):
    database_prefix = PREFIX

    def setUp(self):
        super().setUp()
        raise RuntimeError("setUp failed on purpose")

    def test_never_runs(self):
        raise AssertionError("not reached")


class FailingSchema(PostgresTestCase, unittest.TestCase):
    schema = FailingMigrator()
    database_prefix = PREFIX + "_fail"  # its own: nothing with this prefix may be left

    def test_never_runs(self):
        raise AssertionError("not reached")


class AsyncLambdaFactory(AsyncPostgresTestCase, unittest.IsolatedAsyncioTestCase):
    """A lambda as sessionmaker_factory, read from the class (an instance would bind it)."""

    schema = MetadataMigrator(metadata)
    database_prefix = ASYNC_PREFIX
    sessionmaker_factory = lambda engine: async_sessionmaker(engine, expire_on_commit=False)  # noqa: E731

    async def test_session_comes_from_the_lambda(self):
        self.assertIsInstance(self.session, AsyncSession)
        self.assertFalse(self.session.sync_session.expire_on_commit)


class AsyncCases(AsyncPostgresTestCase, unittest.IsolatedAsyncioTestCase):
    schema = SEEDED  # a sync migrator: run through run_sync
    database_prefix = ASYNC_PREFIX

    async def test_attributes(self):
        self.assertIsInstance(self.database, AsyncDatabase)
        self.assertIsInstance(self.engine, AsyncEngine)
        self.assertIsInstance(self.session, AsyncSession)
        self.assertTrue(self.database.name.startswith(ASYNC_PREFIX + "_"))

    async def test_isolation_first(self):
        self.assertEqual((await self.session.execute(select(func.count()).select_from(users))).scalar(), 1)
        await self.session.execute(users.insert().values(name="first"))
        await self.session.commit()

    async def test_isolation_second(self):
        self.assertEqual((await self.session.execute(select(func.count()).select_from(users))).scalar(), 1)
        await self.session.execute(users.insert().values(name="second"))
        await self.session.commit()

    async def test_leaves_connection_open(self):
        connection = await self.engine.connect()
        await connection.begin()
        await connection.execute(text("select 1"))
        self.leaked = connection


class AsyncForgetsSuper(AsyncPostgresTestCase, unittest.IsolatedAsyncioTestCase):
    schema = MetadataMigrator(metadata)
    database_prefix = ASYNC_PREFIX

    def setUp(self):
        self.marker = 1

    async def asyncSetUp(self):
        self.marker += 1

    async def test_still_has_database(self):
        self.assertEqual(self.marker, 2)
        await self.session.execute(select(users))


class AsyncFailingSetUp(AsyncPostgresTestCase, unittest.IsolatedAsyncioTestCase):
    database_prefix = ASYNC_PREFIX

    async def asyncSetUp(self):
        raise RuntimeError("asyncSetUp failed on purpose")

    async def test_never_runs(self):
        raise AssertionError("not reached")


class NoServer(PostgresTestCase, unittest.TestCase):
    """Run with ELEFAST_DATABASE_URL unset: setUpClass must say how to configure a server."""

    database_url = None

    def test_never_runs(self):
        raise AssertionError("not reached")




def _names(rows):
    return sorted(rows)


class TransactionCases(PostgresTestCase, unittest.TestCase):
    """isolation = "transaction" with class data: every test sees the class row, never another test's."""

    schema = MetadataMigrator(metadata)
    isolation = "transaction"
    database_prefix = PREFIX + "_t"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.seen = set()

    @classmethod
    def setUpTestData(cls, connection):
        connection.execute(users.insert().values(name="class-row"))

    def setUp(self):
        super().setUp()
        type(self).seen.add(self.database.name)

    def test_commit_is_visible_inside_the_test(self):
        self.session.execute(users.insert().values(name="first"))
        self.session.commit()  # a savepoint of the test's transaction, not a real COMMIT
        self.assertEqual(_names(self.session.execute(select(users.c.name)).scalars()), ["class-row", "first"])
        seen = self.connection.execute(select(users.c.name)).scalars().all()
        self.assertEqual(_names(seen), ["class-row", "first"])

    def test_other_test_sees_only_class_row(self):
        self.assertEqual(self.session.execute(select(users.c.name)).scalars().all(), ["class-row"])
        self.session.execute(users.insert().values(name="second"))
        self.session.commit()

    def test_rollback_inside_test(self):
        self.session.execute(users.insert().values(name="undone"))
        self.session.rollback()  # back to the last savepoint, the test's rows before it stay
        self.assertEqual(self.session.execute(select(users.c.name)).scalars().all(), ["class-row"])

    def test_same_database_for_the_class(self):  # runs last (alphabetical): every test so far used one
        self.assertEqual(len(type(self).seen), 1)


class DatabaseModeTestData(PostgresTestCase, unittest.TestCase):
    """isolation = "database" with class data: each test a fresh clone that has the class row."""

    schema = MetadataMigrator(metadata)
    database_prefix = PREFIX + "_d"

    @classmethod
    def setUpTestData(cls, connection):
        connection.execute(users.insert().values(name="class-row"))

    def test_one(self):
        self.assertEqual(self.session.execute(select(users.c.name)).scalars().all(), ["class-row"])
        self.session.execute(users.insert().values(name="one"))
        self.session.commit()

    def test_two(self):
        self.assertEqual(self.session.execute(select(users.c.name)).scalars().all(), ["class-row"])
        self.session.execute(users.insert().values(name="two"))
        self.session.commit()


class AsyncTransactionCases(AsyncPostgresTestCase, unittest.IsolatedAsyncioTestCase):
    """Async transaction mode with an async setUpTestData."""

    schema = MetadataMigrator(metadata)
    isolation = "transaction"
    database_prefix = ASYNC_PREFIX + "_t"

    @classmethod
    async def setUpTestData(cls, connection):
        await connection.execute(users.insert().values(name="class-row"))

    async def test_commit_is_visible_inside_the_test(self):
        await self.session.execute(users.insert().values(name="first"))
        await self.session.commit()
        names = (await self.session.execute(select(users.c.name))).scalars().all()
        self.assertEqual(sorted(names), ["class-row", "first"])
        seen = (await self.connection.execute(select(users.c.name))).scalars().all()
        self.assertEqual(sorted(seen), ["class-row", "first"])

    async def test_other_test_sees_only_class_row(self):
        names = (await self.session.execute(select(users.c.name))).scalars().all()
        self.assertEqual(names, ["class-row"])
        await self.session.execute(users.insert().values(name="second"))
        await self.session.commit()


class AsyncDatabaseModeTestData(AsyncPostgresTestCase, unittest.IsolatedAsyncioTestCase):
    """Async database mode with a sync setUpTestData."""

    schema = MetadataMigrator(metadata)
    database_prefix = ASYNC_PREFIX + "_d"

    @classmethod
    def setUpTestData(cls, connection):
        connection.execute(users.insert().values(name="class-row"))

    async def test_one(self):
        names = (await self.session.execute(select(users.c.name))).scalars().all()
        self.assertEqual(names, ["class-row"])
        await self.session.execute(users.insert().values(name="one"))
        await self.session.commit()

    async def test_two(self):
        names = (await self.session.execute(select(users.c.name))).scalars().all()
        self.assertEqual(names, ["class-row"])
