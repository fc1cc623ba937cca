"""A full server (every connection slot taken) gets its own error, never "did not answer ... Start the
server": at start, and in the middle of a run, sync and async. A real private server with
max_connections = 6."""

import logging
import os
import threading
import time
import unittest
from unittest import mock

import psycopg
from sqlalchemy.exc import OperationalError

from elefast import AsyncDatabaseServer, DatabaseServer
from elefast._testing.outcome import explaining_loss
from elefast.errors import DatabaseNotReadyError, ServerFullError
from tests import support


class Collected(logging.Handler):
    """elefast's warnings of a class whose tests fill the server on purpose: kept, not printed."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def collect_elefast_warnings(owner):
    handler = Collected()
    logging.getLogger("elefast").addHandler(handler)
    owner.addClassCleanup(logging.getLogger("elefast").removeHandler, handler)
    return handler


@support.once_per_ci
class FullServerTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.warned = collect_elefast_warnings(cls)
        context = support.password_server("pw", max_connections="6", superuser_reserved_connections="0")
        cls.url = context.__enter__()
        cls.addClassCleanup(context.__exit__, None, None, None)

    def fill(self):
        """Take every free slot, also those that free up just after (a background drop's connection
        ends after its statement; the server frees the slot when that session has exited); give them
        back after the test."""
        held = []
        settled = 0
        while settled < 2:
            try:
                held.append(psycopg.connect(self.url, connect_timeout=3))
                settled = 0
            except psycopg.OperationalError as error:
                self.assertIn("too many clients", str(error))
                settled += 1
                time.sleep(0.3)
        self.assertGreater(len(held), 0)
        self.addCleanup(lambda: [conn.close() for conn in held])
        return held

    def assert_says_full(self, error, with_numbers=False):
        message = str(error)
        self.assertIn("has no free connections", message)
        self.assertIn("max_connections", message)
        self.assertNotIn("did not answer", message)
        self.assertNotIn("Start the server", message)
        self.assertNotIn("pw@", message)  # never the password
        if with_numbers:
            self.assertIn("in use of max_connections = 6", message)

    def test_at_start(self):
        self.fill()
        server = DatabaseServer(self.url)
        self.addCleanup(server.close)
        started = time.monotonic()
        with self.assertRaises(ServerFullError) as caught:
            server.ensure_is_ready(timeout=1)
        self.assertLess(time.monotonic() - started, 5)  # within the stated timeout, give or take a probe
        self.assertIsInstance(caught.exception, DatabaseNotReadyError)  # who catches that still does
        self.assert_says_full(caught.exception)

    def test_in_the_middle_of_a_run(self):
        """Full mid-run: creating and dropping go over the control connection the process already holds
        (never waiting for a slot only another waiting process could free); the test's own first
        connection waits for a slot, then fails saying the server is full."""
        server = DatabaseServer(self.url)
        self.addCleanup(server.close)
        with server.create_database():
            pass  # the server works; elefast's control connection is open
        self.fill()
        started = time.monotonic()
        with mock.patch.dict(os.environ, {"ELEFAST_FULL_WAIT": "1"}):
            database = server.create_database(prefix="full")  # no new slot needed
            name = database.name
            with self.assertRaises(OperationalError) as caught:
                database.engine.connect()
            self.assertGreater(time.monotonic() - started, 0.9)  # it waited for a slot first
            self.assertIn("too many clients", str(caught.exception))
            with self.assertRaises(ServerFullError) as explained:
                with explaining_loss(server.url):  # what the mixins say of it
                    database.engine.connect()
            self.assert_says_full(explained.exception)
            database.drop()  # on the control connection too
        server.close()
        self.assertEqual(support.databases(name), [])

    def test_a_slot_that_frees_up_in_time_is_taken(self):
        server = DatabaseServer(self.url)
        self.addCleanup(server.close)
        with server.create_database():
            pass
        held = self.fill()
        threading.Timer(0.5, lambda: [conn.close() for conn in held[:3]]).start()  # a worker's drops
        with server.create_database(prefix="waited") as database:  # waits, then works
            with database.engine.connect() as connection:
                self.assertEqual(connection.exec_driver_sql("select 1").scalar(), 1)


@support.once_per_ci
class AsyncFullServerTests(unittest.IsolatedAsyncioTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.warned = collect_elefast_warnings(cls)

    async def test_at_start(self):
        with support.password_server("pw", max_connections="6", superuser_reserved_connections="0") as url:
            held = []
            try:
                while True:
                    try:
                        held.append(psycopg.connect(url, connect_timeout=3))
                    except psycopg.OperationalError:
                        break
                server = AsyncDatabaseServer(url)
                try:
                    with self.assertRaises(ServerFullError) as caught:
                        await server.ensure_is_ready(timeout=1)
                finally:
                    await server.close()
            finally:
                for conn in held:
                    conn.close()
        self.assertIn("has no free connections", str(caught.exception))
        self.assertNotIn("did not answer", str(caught.exception))


if __name__ == "__main__":
    unittest.main()


def have(module):
    import importlib.util

    return importlib.util.find_spec(module) is not None


@support.once_per_ci
class EightWorkersOnThirtyConnectionsTests(unittest.TestCase):
    """pytest -n 8 and unittest-parallel -j 8 on a server with max_connections = 30: green, with no
    'too many clients', nothing left behind."""

    @classmethod
    def setUpClass(cls):
        context = support.password_server("pw", max_connections="30")
        cls.url = context.__enter__()
        cls.addClassCleanup(context.__exit__, None, None, None)

    def run_runner(self, command):
        import subprocess
        import sys

        env = dict(os.environ, ELEFAST_DATABASE_URL=self.url)
        result = subprocess.run([sys.executable, *command], cwd=str(support.ROOT), env=env, capture_output=True,
                                text=True, timeout=600)
        output = result.stdout + result.stderr
        wanted = [line for line in output.splitlines() if "Warning" not in line and "warnings.warn" not in line]
        self.assertEqual(result.returncode, 0, "\n".join(wanted)[-4000:])
        self.assertNotIn("too many clients", output)
        deadline = time.monotonic() + 15  # the workers' exit drops their clones
        while time.monotonic() < deadline:
            with psycopg.connect(self.url) as conn:
                left = [row[0] for row in conn.execute(
                    "select datname from pg_database where datname ~ '^elefast_[0-9a-f]{16}$'")]
            if not left:
                break
            time.sleep(0.2)
        self.assertEqual(left, [])

    @unittest.skipUnless(have("xdist"), "pytest-xdist is not installed")
    def test_pytest_n_8(self):
        self.run_runner(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "8",
                         "-o", "asyncio_default_fixture_loop_scope=function", "examples/legacy_app/tests"])


SIZED_CHILD = """
import sqlalchemy as sa
from elefast import DatabaseServer, MetadataMigrator
from elefast._server.pool import pool_size, pool_workers

metadata = sa.MetaData()
sa.Table("items", metadata, sa.Column("id", sa.Integer, primary_key=True))
server = DatabaseServer({url!r}, schema=MetadataMigrator(metadata))
with server.create_database({prefix!r}) as database:
    with database.engine.connect() as connection:
        connection.execute(sa.text("SELECT 1"))
print("pool", pool_workers(), pool_size())
server.close()
"""


@support.once_per_ci
class SizedUpFrontTests(unittest.TestCase):
    """The first query on a server reads its connection numbers: a small share means lean at once."""

    def run_child(self, url, **env):
        prefix = support.unique_prefix("sized")
        result = support.run_python(SIZED_CHILD.format(url=url, prefix=prefix),
                                    env={"ELEFAST_LOG": "info", "ELEFAST_POOL_WORKERS": "", **env})
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        return result

    def test_a_small_server_makes_the_process_lean_before_any_refusal(self):
        with support.password_server("pw", max_connections="10") as url:
            result = self.run_child(url)
        self.assertIn("of max_connections = 10 are free for 1 test processes", result.stderr)
        self.assertIn("pool 1 1", result.stdout)
        self.assertNotIn("too many clients", result.stderr)

    def test_the_workers_pytest_xdist_announces_share_the_server(self):
        result = self.run_child(support.psycopg_url(), PYTEST_XDIST_WORKER_COUNT="64")
        self.assertIn("free for 64 test processes", result.stderr)
        self.assertIn("pool 1 1", result.stdout)

    def test_a_roomy_server_keeps_the_normal_pool(self):
        result = self.run_child(support.psycopg_url(), PYTEST_XDIST_WORKER_COUNT="1")
        self.assertNotIn("holds connections only while it uses them", result.stderr)
        self.assertIn("pool 2 2", result.stdout)
