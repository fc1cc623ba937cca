"""Tests of the unittest mixins, running the classes of tests/cases_mixins.py for real."""

import io
import os
import re
import unittest
import uuid
from unittest import mock

from elefast import AsyncPostgresTestCase, PostgresTestCase
from elefast.errors import ConfigurationError, MigrationError, ServerNotConfiguredError
from tests import cases_mixins, support


def run(*classes):
    """Run test classes with unittest's own runner; return the result and its output."""
    suite = unittest.TestSuite(unittest.defaultTestLoader.loadTestsFromTestCase(c) for c in classes)
    stream = io.StringIO()
    result = unittest.TextTestRunner(stream=stream, verbosity=2).run(suite)
    return result, stream.getvalue()


def drain_pools():
    """Let every shared server's pool drop what it keeps ahead or has yet to drop."""
    from elefast._server.core import core_of
    from elefast._testing.provider import SHARED

    for server in SHARED.servers():
        core_of(server).drain()


def clones(prefix):
    """Per-test databases (not templates) whose name starts with prefix, once the pools are drained."""
    drain_pools()
    pattern = re.compile(rf"^{re.escape(prefix)}_[0-9a-f]{{16}}$")
    return [name for name in support.databases(prefix + "%") if pattern.match(name)]


class SyncMixinTests(unittest.TestCase):
    def test_sync_cases_pass_and_leave_no_clone(self):
        """Each test gets a fresh migrated database; leaked connections break nothing."""
        result, output = run(cases_mixins.SyncCases, cases_mixins.SameSchemaOtherClass,
                             cases_mixins.ForgetsSuperSetUp)
        self.assertTrue(result.wasSuccessful(), output)
        self.assertEqual(result.testsRun, 7)
        self.assertEqual(clones(cases_mixins.PREFIX), [])

    def test_one_migration_for_classes_sharing_a_schema(self):
        """Classes with the same URL and schema object share one server and template."""
        before = cases_mixins.SEEDED.runs  # the async classes have their own server
        run(cases_mixins.SyncCases, cases_mixins.SameSchemaOtherClass)
        first = cases_mixins.SEEDED.runs
        run(cases_mixins.SameSchemaOtherClass)
        self.assertLessEqual(first - before, 1)
        self.assertEqual(cases_mixins.SEEDED.runs, first)

    def test_one_server_for_migrator_objects_naming_one_schema(self):
        """Two classes that each write MetadataMigrator(metadata) share one server (one pool, one template);
        a migrator of another type over the same tables does not."""
        from elefast import MetadataMigrator

        def case(schema):
            return type("Case", (PostgresTestCase, unittest.TestCase),
                        {"schema": schema, "database_prefix": cases_mixins.PREFIX})

        first, second = case(MetadataMigrator(cases_mixins.metadata)), case(MetadataMigrator(cases_mixins.metadata))
        self.assertIs(first.elefast_server(), second.elefast_server())

        class Seeding(MetadataMigrator):
            pass

        self.assertIsNot(case(Seeding(cases_mixins.metadata)).elefast_server(), first.elefast_server())

    def test_failing_setup_leaks_nothing(self):
        """A setUp that raises after elefast's part still drops the test's database."""
        result, output = run(cases_mixins.FailingSetUp)
        self.assertEqual(len(result.errors), 1, output)
        self.assertIn("setUp failed on purpose", output)
        self.assertEqual(clones(cases_mixins.PREFIX), [])

    def test_failing_schema_errors_every_class_quickly(self):
        """A broken migration fails the class with MigrationError and leaves nothing."""
        result, output = run(cases_mixins.FailingSchema)
        self.assertEqual(len(result.errors), 1, output)
        self.assertIn(MigrationError.__name__, output)
        self.assertIn("migration 0042 exploded", output)
        self.assertEqual(support.databases(cases_mixins.FailingSchema.database_prefix + "%"), [])

    def test_no_server_configured(self):
        """Asked for a URL (ELEFAST_SERVER=url) with none set, setUpClass says how to set either."""
        environ = {k: v for k, v in os.environ.items() if k != "ELEFAST_DATABASE_URL"}
        environ["ELEFAST_SERVER"] = "url"
        with mock.patch.dict(os.environ, environ, clear=True):
            result, output = run(cases_mixins.NoServer)
        self.assertEqual(len(result.errors), 1, output)
        self.assertIn(ServerNotConfiguredError.__name__, output)
        self.assertIn("database_url", output)
        self.assertIn("ELEFAST_DATABASE_URL", output)

    def test_database_url_attribute_wins(self):
        """A class's database_url is used even when ELEFAST_DATABASE_URL says otherwise."""

        class UsesAttribute(cases_mixins.ForgetsSuperSetUp):
            database_url = support.server_url()

        UsesAttribute.__module__ = cases_mixins.__name__  # not this module: its fixtures must not run

        with mock.patch.dict(os.environ, {"ELEFAST_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x"}):
            result, output = run(UsesAttribute)
        self.assertTrue(result.wasSuccessful(), output)


class AsyncMixinTests(unittest.TestCase):
    def test_async_cases_pass_and_leave_no_clone(self):
        """Async tests get AsyncDatabase, AsyncEngine, AsyncSession; nothing is left."""
        result, output = run(cases_mixins.AsyncCases, cases_mixins.AsyncForgetsSuper)
        self.assertTrue(result.wasSuccessful(), output)
        self.assertEqual(result.testsRun, 5)
        self.assertEqual(clones(cases_mixins.ASYNC_PREFIX), [])

    def test_async_failing_setup_leaks_nothing(self):
        """An asyncSetUp that raises still drops the test's database."""
        result, output = run(cases_mixins.AsyncFailingSetUp)
        self.assertEqual(len(result.errors), 1, output)
        self.assertEqual(clones(cases_mixins.ASYNC_PREFIX), [])


class LocalDefaultTests(unittest.TestCase):
    def test_no_url_uses_the_local_server(self):
        """With no URL anywhere, the mixin runs its tests on the throwaway local server."""
        environ = {k: v for k, v in os.environ.items() if k not in ("ELEFAST_DATABASE_URL", "ELEFAST_SERVER")}

        class OnLocal(cases_mixins.ForgetsSuperSetUp):
            database_prefix = "eft_local"  # fixed: later runs reuse its template instead of adding one

            def test_where(self):
                host = self.engine.url.query.get("host", "")
                self.assertTrue(str(host).startswith("/"), self.engine.url)  # the private unix socket

        OnLocal.__module__ = cases_mixins.__name__

        with mock.patch.dict(os.environ, environ, clear=True):
            result, output = run(OnLocal)
        self.assertTrue(result.wasSuccessful(), output)


class LeakCheckTests(unittest.TestCase):
    def test_whole_run_leaves_no_database(self):
        """A separate test process using the mixins leaves no database at all once it exits."""
        prefix = f"eft_leak_{uuid.uuid4().hex[:6]}"
        result = support.run_python(
            "import unittest, sys\n"
            "from tests import cases_mixins as m\n"
            "suite = unittest.TestSuite(unittest.defaultTestLoader.loadTestsFromTestCase(c) for c in\n"
            "    (m.SyncCases, m.SameSchemaOtherClass, m.ForgetsSuperSetUp, m.FailingSetUp,\n"
            "     m.AsyncCases, m.AsyncForgetsSuper, m.AsyncFailingSetUp))\n"
            "r = unittest.TextTestRunner(verbosity=0).run(suite)\n"
            "sys.exit(0 if len(r.errors) == 2 and not r.failures else 1)\n",
            env={"EFT_CASES_PREFIX": prefix},
        )
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        self.assertEqual(support.left_after_exit(prefix), [])  # what it owned, dropped behind it


def tearDownModule():
    drain_pools()
    support.drop_templates(cases_mixins.PREFIX)


if __name__ == "__main__":
    unittest.main()


class IsolationModeTests(unittest.TestCase):
    def test_transaction_mode(self):
        """Transaction mode: one clone per class, commit() inside a test, rolled back after it."""
        result, output = run(cases_mixins.TransactionCases)
        self.assertTrue(result.wasSuccessful(), output)
        self.assertEqual(result.testsRun, 4)

    def test_set_up_test_data_in_database_mode(self):
        """setUpTestData rows are in every test's fresh database."""
        result, output = run(cases_mixins.DatabaseModeTestData)
        self.assertTrue(result.wasSuccessful(), output)

    def test_async_modes_and_set_up_test_data(self):
        """The async mixin: transaction mode with async setUpTestData, database mode with a sync one."""
        result, output = run(cases_mixins.AsyncTransactionCases, cases_mixins.AsyncDatabaseModeTestData)
        self.assertTrue(result.wasSuccessful(), output)
        self.assertEqual(result.testsRun, 4)

    def test_unknown_isolation(self):
        """An unknown isolation value fails when the class is created, naming the two valid ones."""
        with self.assertRaises(ConfigurationError) as caught:
            type("BadIsolation", (PostgresTestCase, unittest.TestCase), {"isolation": "savepoint"})
        message = str(caught.exception)
        self.assertIn("BadIsolation.isolation = 'savepoint'", message)
        self.assertIn("'database'", message)
        self.assertIn("'transaction'", message)

    def test_misspelt_isolation_gets_did_you_mean(self):
        """A near miss of a mode is named in the error, sync and async alike."""
        for bases in ((PostgresTestCase, unittest.TestCase),
                      (AsyncPostgresTestCase, unittest.IsolatedAsyncioTestCase)):
            with self.subTest(bases[0].__name__), self.assertRaises(ConfigurationError) as caught:
                type("Misspelt", bases, {"isolation": "transacton"})
            self.assertIn("Did you mean 'transaction'?", str(caught.exception))

    def test_metadata_as_schema_is_refused_at_class_creation(self):
        """A bare MetaData where a migrator belongs: the error names the migrator to use."""
        from sqlalchemy import MetaData

        with self.assertRaises(ConfigurationError) as caught:
            type("BareMetadata", (PostgresTestCase, unittest.TestCase), {"schema": MetaData()})
        self.assertIn("Did you mean MetadataMigrator(metadata)?", str(caught.exception))
        with self.assertRaises(ConfigurationError) as caught:
            type("BareMetadataAsync", (AsyncPostgresTestCase, unittest.IsolatedAsyncioTestCase), {"schema": MetaData()})
        self.assertIn("Did you mean AsyncMetadataMigrator(metadata)?", str(caught.exception))

    def test_async_lambda_sessionmaker_factory(self):
        """A lambda as sessionmaker_factory works on an AsyncPostgresTestCase (it was bound as a method)."""
        result, output = run(cases_mixins.AsyncLambdaFactory)
        self.assertTrue(result.wasSuccessful(), output)
        self.assertEqual(result.testsRun, 1)

    def test_class_templates_and_clones_are_dropped(self):
        """After the classes ran, their per-class templates and clones are gone (pools drained)."""
        run(cases_mixins.TransactionCases, cases_mixins.DatabaseModeTestData)
        drain_pools()
        leftovers = [n for n in support.databases(cases_mixins.PREFIX + "%") if "_tpl_" not in n]
        self.assertEqual(leftovers, [])
