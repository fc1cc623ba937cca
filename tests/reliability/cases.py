"""The suites the reliability scenarios run in child processes, like a user's would run.

Not collected by ``python -m tests`` (no module here starts with ``test``). Each class
is run alone, e.g. ``python -m unittest tests.reliability.cases.Work``; environment
variables set by the scenario choose the schema (``RELIABILITY_SCHEMA``), the prefix
(``RELIABILITY_PREFIX``) and the files used to talk to the harness
(``RELIABILITY_SIGNAL``: written when a test reached its critical point;
``RELIABILITY_GO``: waited for before going on).

``python -m tests.reliability.cases count`` prints, as JSON, the databases on the
server this process would use (the harness's way to look for leftovers).
"""

import faulthandler
import json
import os
import signal
import sys
import time
import unittest
from pathlib import Path

from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select, text

from elefast import MetadataMigrator, PostgresTestCase
from elefast.testcase import AsyncPostgresTestCase

SCHEMA = os.environ.get("RELIABILITY_SCHEMA", "a")
PREFIX = os.environ.get("RELIABILITY_PREFIX", "rel")
METADATA = MetaData()
ITEMS = Table(f"items_{SCHEMA}", METADATA, Column("id", Integer, primary_key=True), Column("label", String(40)))
MIGRATOR = MetadataMigrator(METADATA)
#: What tests leak on purpose stays referenced, so nothing closes it before the process ends.
LEAKED = []


# A child that hangs is asked for its threads' stacks (SIGUSR1) before the harness kills it, so a
# row's note shows where it hung.
faulthandler.register(signal.SIGUSR1, all_threads=True)


def signal_harness(label: str) -> None:
    """Tell the harness this test reached ``label`` (it may now kill or interrupt us)."""
    path = os.environ.get("RELIABILITY_SIGNAL")
    if path:
        Path(path).write_text(label)


def wait_for_harness(timeout: float = 60) -> None:
    """Wait until the harness says go (it has done what it does to us)."""
    path = os.environ.get("RELIABILITY_GO")
    deadline = time.monotonic() + timeout
    while path and not Path(path).exists() and time.monotonic() < deadline:
        time.sleep(0.02)


class Work(PostgresTestCase, unittest.TestCase):
    """Six ordinary tests: insert, commit, count (each must see only its own rows)."""

    schema = MIGRATOR
    database_prefix = PREFIX

    def check(self) -> None:
        self.session.execute(insert(ITEMS).values(label=self.id()[-20:]))
        self.session.commit()
        self.assertEqual(self.session.scalar(select(func.count()).select_from(ITEMS)), 1)

    def test_1(self) -> None:
        self.check()

    def test_2(self) -> None:
        self.check()

    def test_3(self) -> None:
        self.check()

    def test_4(self) -> None:
        self.check()

    def test_5(self) -> None:
        self.check()

    def test_6(self) -> None:
        self.check()


class Hang(PostgresTestCase, unittest.TestCase):
    """A test that writes, tells the harness, then waits to be killed or interrupted."""

    schema = MIGRATOR
    database_prefix = PREFIX

    def test_hang(self) -> None:
        self.session.execute(insert(ITEMS).values(label="hang"))
        self.session.commit()
        self.session.execute(insert(ITEMS).values(label="open transaction"))
        signal_harness("in test")
        time.sleep(120)


class ServerKilled(PostgresTestCase, unittest.TestCase):
    """The harness kills the server during test_1; both tests must fail saying what happened."""

    schema = MIGRATOR
    database_prefix = PREFIX

    def test_1_server_dies_during_the_test(self) -> None:
        self.session.execute(insert(ITEMS).values(label="before"))
        self.session.commit()
        signal_harness("in test")
        wait_for_harness()
        self.session.execute(insert(ITEMS).values(label="after"))
        self.session.commit()

    def test_2_after_the_server_died(self) -> None:
        self.session.execute(insert(ITEMS).values(label="next"))
        self.session.commit()


class AsyncServerKilled(AsyncPostgresTestCase, unittest.IsolatedAsyncioTestCase):
    """The async twin of :class:`ServerKilled`."""

    schema = MIGRATOR
    database_prefix = PREFIX

    async def test_1_server_dies_during_the_test(self) -> None:
        await self.session.execute(insert(ITEMS).values(label="before"))
        await self.session.commit()
        signal_harness("in test")
        wait_for_harness()
        await self.session.execute(insert(ITEMS).values(label="after"))
        await self.session.commit()

    async def test_2_after_the_server_died(self) -> None:
        await self.session.execute(insert(ITEMS).values(label="next"))
        await self.session.commit()


class Leaks(PostgresTestCase, unittest.TestCase):
    """test_1 leaves connections and open transactions behind; test_2 must not notice."""

    schema = MIGRATOR
    database_prefix = PREFIX

    def test_1_leaves_connections_and_transactions(self) -> None:
        connection = self.engine.connect()
        connection.execute(insert(ITEMS).values(label="never committed"))
        connection.execute(text(f"LOCK TABLE {ITEMS.name} IN ACCESS EXCLUSIVE MODE"))
        other = self.database.session()  # a second transaction left open (it cannot touch the locked table)
        other.execute(text("SELECT count(*) FROM pg_class"))
        idle = self.engine.connect()
        idle.execute(text("SELECT 1"))
        LEAKED.extend([connection, other, idle])

    def test_2_is_unaffected(self) -> None:
        self.session.execute(insert(ITEMS).values(label="fresh"))
        self.session.commit()
        self.assertEqual(self.session.scalar(select(func.count()).select_from(ITEMS)), 1)
        others = self.session.scalar(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ))
        self.assertEqual(others, 0)


class LeaksInTransactionMode(PostgresTestCase, unittest.TestCase):
    """The same in transaction mode: the class's database outlives the leaking test."""

    schema = MIGRATOR
    database_prefix = PREFIX
    isolation = "transaction"

    def test_1_leaves_a_transaction(self) -> None:
        self.session.execute(insert(ITEMS).values(label="rolled back"))
        self.session.commit()  # a savepoint: the test's transaction is rolled back after it
        connection = self.engine.connect()
        connection.execute(text("SELECT 1"))
        LEAKED.append(connection)

    def test_2_is_unaffected(self) -> None:
        self.assertEqual(self.session.scalar(select(func.count()).select_from(ITEMS)), 0)


class AsyncWork(AsyncPostgresTestCase, unittest.IsolatedAsyncioTestCase):
    """Two async tests on the same schema (the async path through the same pool)."""

    schema = MIGRATOR
    database_prefix = PREFIX

    async def check(self) -> None:
        await self.session.execute(insert(ITEMS).values(label="async"))
        await self.session.commit()
        self.assertEqual(await self.session.scalar(select(func.count()).select_from(ITEMS)), 1)

    async def test_1(self) -> None:
        await self.check()

    async def test_2(self) -> None:
        await self.check()


class AsyncCreateLoop(unittest.IsolatedAsyncioTestCase):
    """The public async API: ``await server.create_database()`` over and over until killed."""

    async def test_create_until_killed(self) -> None:
        from elefast import AsyncDatabaseServer, provision

        server = AsyncDatabaseServer(provision.resolve(is_async=True, timeout=60), schema=MIGRATOR)
        await server.ensure_is_ready()
        for number in range(10_000):
            await server.create_database(prefix=PREFIX)
            if number == 0:
                signal_harness("creating")


class FailsOnPurpose(PostgresTestCase, unittest.TestCase):
    """A failing and an erroring test: their reports must not show the URL's password."""

    schema = MIGRATOR
    database_prefix = PREFIX

    def test_fails(self) -> None:
        self.assertEqual(str(self.engine.url), "something else")

    def test_errors(self) -> None:
        self.session.execute(text("SELECT * FROM no_such_table"))


class HalfwayMigration(PostgresTestCase, unittest.TestCase):
    """Its Alembic project (``RELIABILITY_ALEMBIC``) fails in its third migration."""

    database_prefix = PREFIX

    @classmethod
    def setUpClass(cls) -> None:
        from elefast.extras.alembic import AlembicMigrator

        cls.schema = AlembicMigrator(os.environ["RELIABILITY_ALEMBIC"])
        super().setUpClass()

    def test_never_runs(self) -> None:
        self.fail("the template cannot be built: this test must not run")


def count() -> None:
    """Print the server's databases (elefast's marks included) as JSON."""
    import psycopg

    from elefast import provision

    url = provision.resolve(timeout=60)
    dsn = _engines_dsn(url)
    with psycopg.connect(dsn, autocommit=True) as connection:
        rows = connection.execute(
            "SELECT datname, datistemplate, coalesce(shobj_description(oid, 'pg_database'), '') "
            "FROM pg_database WHERE datname NOT IN ('postgres', 'template0', 'template1') ORDER BY 1"
        ).fetchall()
    print(json.dumps([{"name": r[0], "template": r[1], "comment": r[2]} for r in rows]))


def _engines_dsn(url: object) -> str:
    from sqlalchemy.engine import make_url

    parsed = make_url(str(url)) if isinstance(url, str) else url
    parsed = parsed.set(drivername="postgresql")  # type: ignore[attr-defined]
    return parsed.render_as_string(hide_password=False)  # type: ignore[no-any-return]


if __name__ == "__main__":
    if sys.argv[1:] == ["count"]:
        count()
    else:
        unittest.main()
