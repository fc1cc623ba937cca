"""Tests of elefast._server.pool and the template machinery: fingerprints, reuse across processes,
sweeping, the background clone pool (fork included) and the CREATE DATABASE strategy."""

import asyncio
import os
import threading
import time
import unittest
from unittest import mock

import psycopg
from sqlalchemy import select, text

from elefast import DatabaseServer, MetadataMigrator
from elefast._server.clone_strategy import choose_strategy
from elefast._server.core import core_of
from elefast._server.pool import ClonePool
from elefast._server.retention import note_times
from elefast._server.templates import shared_name
from elefast._testing.provider import SyncProvider
from elefast.extras.alembic import AlembicMigrator
from tests import support
from tests.test_alembic import INI
from tests.test_sync import metadata, users

RUNS_FILE_CODE = """
import os, sys
from elefast import DatabaseServer, MetadataMigrator
from elefast._server.core import core_of
from tests.test_sync import metadata, users
from tests import support

class Counting:
    def fingerprint(self):
        return os.environ["EFT_FINGERPRINT"]
    def migrate(self, connection):
        with open(os.environ["EFT_RUNS"], "a") as f:
            f.write("run\\n")
        MetadataMigrator(metadata).migrate(connection)
        connection.execute(users.insert().values(name="seed"))

server = DatabaseServer(support.server_url(), schema=Counting())
with server.create_database(prefix=os.environ["EFT_PREFIX"]) as db:
    pass
print("reused" if core_of(server).templates.slot("utf8").reused else "built")
"""


class Fingerprinted:
    """A migrator with a chosen fingerprint that counts its runs."""

    def __init__(self, fingerprint: str) -> None:
        self.value, self.runs = fingerprint, 0

    def fingerprint(self) -> str:
        return self.value

    def migrate(self, connection):
        self.runs += 1
        MetadataMigrator(metadata).migrate(connection)
        connection.execute(users.insert().values(name=self.value[:40]))


class TemplateTests(unittest.TestCase):
    def setUp(self):
        self.prefix = support.unique_prefix("fp")
        self.addCleanup(self.cleanup)

    def cleanup(self):
        # what a child process left to its detached dropper is gone within its 30 s
        self.assertEqual(support.left_after_exit(self.prefix), [])

    def server(self, schema):
        server = DatabaseServer(support.server_url(), schema=schema)
        self.addCleanup(server.close)
        return server

    def test_fingerprints_follow_the_schema(self):
        """MetadataMigrator and AlembicMigrator fingerprints are stable and change with the schema."""
        self.assertEqual(MetadataMigrator(metadata).fingerprint(), MetadataMigrator(metadata).fingerprint())
        from sqlalchemy import Column, Integer, MetaData, Table

        other = MetaData()
        Table("users", other, Column("id", Integer, primary_key=True))
        self.assertNotEqual(MetadataMigrator(metadata).fingerprint(), MetadataMigrator(other).fingerprint())
        self.assertEqual(AlembicMigrator(INI).fingerprint(), AlembicMigrator(INI).fingerprint())

    def test_template_reused_across_processes(self):
        """A second process finds the first one's template: it runs no migration at all."""
        runs = os.path.join(support.ROOT, f".eft-runs-{self.prefix}")
        self.addCleanup(lambda: os.path.exists(runs) and os.remove(runs))
        env = {"EFT_FINGERPRINT": self.prefix, "EFT_RUNS": runs, "EFT_PREFIX": self.prefix}
        first = support.run_python(RUNS_FILE_CODE, env=env)
        second = support.run_python(RUNS_FILE_CODE, env=env)
        self.assertEqual(first.returncode, 0, first.stderr[-2000:])
        self.assertEqual(second.returncode, 0, second.stderr[-2000:])
        self.assertEqual((first.stdout.strip(), second.stdout.strip()), ("built", "reused"))
        with open(runs) as handle:
            self.assertEqual(handle.read().count("run"), 1)
        templates = support.databases(self.prefix + "_tpl_%")
        self.assertEqual(len(templates), 1)  # kept for the next run, ready and read-only

    def test_template_is_read_only_and_named_by_hash(self):
        """The template is <prefix>_tpl_<16 hex>, marked as a template that refuses connections."""
        server = self.server(Fingerprinted(self.prefix))
        server.create_database(prefix=self.prefix).drop()
        (name,) = support.databases(self.prefix + "_tpl_%")
        self.assertRegex(name, rf"^{self.prefix}_tpl_[0-9a-f]{{16}}$")
        with support.psycopg.connect(support.libpq_dsn()) as connection:
            row = connection.execute("select datistemplate, datallowconn from pg_database where datname = %s",
                                     (name,)).fetchone()
        self.assertEqual(row, (True, False))

    def test_half_built_leftover_is_replaced(self):
        """A database with the template's name that was never marked ready is dropped and rebuilt."""
        migrator = Fingerprinted(self.prefix)
        server = self.server(migrator)
        with core_of(server).connect() as connection:
            name = shared_name(connection, self.prefix, "utf8", _identity(migrator))
        support.execute(f'CREATE DATABASE "{name}"')  # what a crashed builder would leave
        with server.create_database(prefix=self.prefix) as database, database.engine.connect() as c:
            self.assertEqual(c.execute(select(users.c.name)).scalars().all(), [self.prefix[:40]])
        self.assertEqual(migrator.runs, 1)

    def test_templates_nobody_used_lately_are_dropped(self):
        """Building a new template drops those not used within ELEFAST_TEMPLATE_DAYS (here 0: any
        other), least recently used first; the new one stays."""
        with mock.patch.dict(os.environ, {"ELEFAST_TEMPLATE_DAYS": "0"}):
            for number in range(4):
                server = self.server(Fingerprinted(f"{self.prefix}-v{number}"))
                server.create_database(prefix=self.prefix).drop()
                server.close()  # a template some living process still uses is never dropped
        self.assertEqual(len(support.databases(self.prefix + "_tpl_%")), 1)

    def test_async_server_prunes_old_templates_too(self):
        """The async server prunes like the sync one."""
        from elefast.asyncio import AsyncDatabaseServer

        async def build(number):
            server = AsyncDatabaseServer(support.server_url(), schema=Fingerprinted(f"{self.prefix}-a{number}"))
            await (await server.create_database(prefix=self.prefix)).drop()
            await server.close()

        with mock.patch.dict(os.environ, {"ELEFAST_TEMPLATE_DAYS": "0"}):
            for number in range(3):
                asyncio.run(build(number))
        self.assertEqual(len(support.databases(self.prefix + "_tpl_%")), 1)

    def test_projects_sharing_a_server_keep_their_templates(self):
        """Two projects on one server with the same (default-like) prefix: one building five new
        templates (branches, schema changes) never evicts the other's (the old rule, the newest
        three per prefix, did: they rebuilt each other's turn about)."""
        other = self.server(Fingerprinted(f"{self.prefix}-other-project"))
        other.create_database(prefix=self.prefix).drop()
        theirs = core_of(other).templates.slot("utf8").name
        other.close()
        for number in range(5):
            server = self.server(Fingerprinted(f"{self.prefix}-b{number}"))
            server.create_database(prefix=self.prefix).drop()
            server.close()
        self.assertIn(theirs, support.databases(self.prefix + "_tpl_%"))
        again = self.server(Fingerprinted(f"{self.prefix}-other-project"))
        again.create_database(prefix=self.prefix).drop()
        self.assertTrue(core_of(again).templates.slot("utf8").reused)
        again.close()

    def test_the_size_budget_drops_the_least_recently_used(self):
        first = self.server(Fingerprinted(f"{self.prefix}-s0"))
        first.create_database(prefix=self.prefix).drop()
        oldest = core_of(first).templates.slot("utf8").name
        first.close()
        with mock.patch.dict(os.environ, {"ELEFAST_TEMPLATE_BUDGET_MB": "0"}):
            server = self.server(Fingerprinted(f"{self.prefix}-s1"))
            server.create_database(prefix=self.prefix).drop()
            newest = core_of(server).templates.slot("utf8").name
            server.close()
        left = support.databases(self.prefix + "_tpl_%")
        self.assertNotIn(oldest, left)
        self.assertIn(newest, left)

    def test_a_use_is_recorded_in_the_note(self):
        server = self.server(Fingerprinted(f"{self.prefix}-u"))
        server.create_database(prefix=self.prefix).drop()
        name = core_of(server).templates.slot("utf8").name
        server.close()
        with psycopg.connect(support.libpq_dsn(), autocommit=True) as connection:
            old = "elefast template v2 built 2026-01-01T00:00:00.000000Z fingerprint x"
            connection.execute(f'COMMENT ON DATABASE "{name}" IS \'{old}\'')
        again = self.server(Fingerprinted(f"{self.prefix}-u"))
        again.create_database(prefix=self.prefix).drop()
        again.close()
        with psycopg.connect(support.libpq_dsn(), autocommit=True) as connection:
            note = connection.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                                      "WHERE datname = %s", (name,)).fetchone()[0]
        built, used = note_times(note)
        self.assertEqual(built, "2026-01-01T00:00:00.000000Z")
        self.assertGreater(used, built)

    def test_template_in_use_is_not_swept(self):
        """A template another process (here: another server object) still uses survives the pruning."""
        in_use = self.server(Fingerprinted(f"{self.prefix}-in-use"))
        in_use.create_database(prefix=self.prefix).drop()
        kept = core_of(in_use).templates.slot("utf8").name
        with mock.patch.dict(os.environ, {"ELEFAST_TEMPLATE_DAYS": "0"}):
            for number in range(2):
                server = self.server(Fingerprinted(f"{self.prefix}-v{number}"))
                server.create_database(prefix=self.prefix).drop()
                server.close()
            self.assertIn(kept, support.databases(self.prefix + "_tpl_%"))
            with in_use.create_database(prefix=self.prefix) as database, database.engine.connect() as c:
                self.assertEqual(c.execute(select(users.c.name)).scalars().all(), [f"{self.prefix}-in-use"[:40]])
            in_use.close()
            server = self.server(Fingerprinted(f"{self.prefix}-w0"))
            server.create_database(prefix=self.prefix).drop()
            server.close()
        self.assertNotIn(kept, support.databases(self.prefix + "_tpl_%"), "released: dropped like any unused one")

    def test_concurrent_processes_build_once(self):
        """Three processes starting at once on a fresh fingerprint: one migration in all."""
        import subprocess
        import sys

        runs = os.path.join(support.ROOT, f".eft-runs-{self.prefix}")
        self.addCleanup(lambda: os.path.exists(runs) and os.remove(runs))
        env = dict(os.environ, EFT_FINGERPRINT=self.prefix, EFT_RUNS=runs, EFT_PREFIX=self.prefix)
        processes = [subprocess.Popen([sys.executable, "-c", RUNS_FILE_CODE], cwd=str(support.ROOT), env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for _ in range(3)]
        outcomes = [p.communicate(timeout=120) for p in processes]
        for process, (_, err) in zip(processes, outcomes):
            self.assertEqual(process.returncode, 0, err[-2000:])
        with open(runs) as handle:
            self.assertEqual(handle.read().count("run"), 1)


def _identity(migrator):
    from elefast._schema.fingerprints import identity

    digest, why = identity(migrator)
    assert digest is not None, why
    return digest


class ClonePoolTests(unittest.TestCase):
    def setUp(self):
        self.prefix = support.unique_prefix("pl")
        self.server = DatabaseServer(support.server_url(), schema=Fingerprinted(self.prefix))
        self.addCleanup(self.cleanup)
        self.template = core_of(self.server).templates.get(self.prefix, "utf8")

    def pooled(self):
        """A database from the pool, the way the mixins take one."""
        return SyncProvider(self.server).database(self.template, self.prefix, "utf8", self.server.sessionmaker_factory)

    def cleanup(self):
        self.server.close()
        support.drop_templates(self.prefix)
        self.assertEqual(support.databases(self.prefix + "%"), [])

    def wait_for(self, condition, seconds=20):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(0.02)
        return condition()

    def clones(self):
        return [n for n in support.databases(self.prefix + "_%") if "_tpl_" not in n]

    def test_fills_ahead_and_drops_behind(self):
        """After a take the pool keeps `size` clones ready; released ones are dropped in the background."""
        pool = core_of(self.server).pool
        database = self.pooled()
        with database.session() as session:  # a real clone of the template, with its rows
            self.assertEqual(session.execute(select(users.c.name)).scalars().all(), [self.prefix[:40]])
        self.assertTrue(self.wait_for(lambda: len(self.clones()) >= 1 + pool.size))  # more if clones were slow
        database.drop()
        self.assertTrue(self.wait_for(lambda: database.name not in self.clones()))
        second = self.pooled()
        self.assertGreaterEqual(pool.stats["taken_ready"], 1)
        second.drop()
        pool.drain()
        self.assertEqual(self.clones(), [])

    def test_close_leaves_nothing(self):
        """Closing the server stops the thread and drops ready and pending clones."""
        pool = core_of(self.server).pool
        self.pooled().drop()
        self.assertTrue(self.wait_for(lambda: len(self.clones()) >= pool.size))
        self.server.close()
        self.assertEqual(self.clones(), [])

    def test_close_drops_many_over_two_connections_and_leaves_nothing(self):
        """Several databases still owned at the end (used ones not dropped yet, ready ones) all go."""
        held = [self.pooled() for _ in range(5)]  # never dropped by the test: the end drops them
        self.assertGreaterEqual(len(self.clones()), 5)
        self.server.close()
        self.assertEqual(self.clones(), [])
        self.assertEqual([n for n in support.databases(self.prefix + "%") if n in {d.name for d in held}], [])

    @unittest.skipUnless(hasattr(os, "fork"), "needs fork()")
    def test_refill_after_fork(self):
        """A forked child gets a pool of its own: new clones, none of the parent's, nothing of the parent's dropped."""
        pool = core_of(self.server).pool
        self.pooled().drop()
        self.assertTrue(self.wait_for(lambda: len(pool._ready.get((self.template, self.prefix, "utf8"), ())) >= 1))
        parents = {name for name, _ in pool._ready[(self.template, self.prefix, "utf8")]}
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: take two clones, report them, clean up its own, exit
            code = 1
            try:
                names = []
                for _ in range(2):
                    db = SyncProvider(self.server).database(self.template, self.prefix, "utf8",
                                                      self.server.sessionmaker_factory)
                    with db.engine.connect() as connection:
                        connection.execute(text("select 1"))
                    names.append(db.name)
                    db.drop()
                self.server.close()
                os.write(write, " ".join(names).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        _, status = os.waitpid(pid, 0)
        child_names = set(os.read(read, 4096).decode().split())
        os.close(read)
        self.assertEqual(os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else status, 0)
        self.assertEqual(len(child_names), 2)
        self.assertFalse(child_names & parents)
        still = set(self.clones())
        self.assertTrue(parents <= still, "the child dropped the parent's ready clones")
        self.assertFalse(child_names & still, "the child left its clones behind")

    def test_slow_clones_are_kept_deeper_the_extra_ones_without_a_connection(self):
        """Clones taking ~80 ms (a template with many rows, as the pool sees it) are kept more than
        `size` deep; only `size` of them hold a connection, so the connection budget is unchanged."""
        support.process_lean(self, False)  # a lean process keeps pools shallow
        core = core_of(self.server)

        def slow(name, template, encoding):
            time.sleep(0.08)
            core.create(name, template, encoding)

        pool = ClonePool(slow, self.server.drop_database, lambda n, t, warm: core._prepare(n, t, warm), size=2)
        self.addCleanup(lambda: [self.server.drop_database(name) for name in pool.close()])
        taken = set()
        for _ in range(3):  # a few tests' worth, each taking a ready clone: the pool times those it makes
            name, engine = pool.take(self.template, self.prefix, "utf8")
            taken.add(name)
            self.addCleanup(self.server.drop_database, name)
            self.addCleanup(engine.dispose)
            self.assertTrue(self.wait_for(lambda: len(set(self.clones()) - taken) >= 2), self.clones())
        self.assertTrue(self.wait_for(lambda: len(set(self.clones()) - taken) >= 4), self.clones())
        ready = [name for name in self.clones() if name not in taken]

        def connected():
            with psycopg.connect(support.libpq_dsn(), autocommit=True) as connection:
                return {row[0] for row in connection.execute(
                    "SELECT DISTINCT datname FROM pg_stat_activity WHERE datname = ANY(%s)", (ready,))}

        self.wait_for(lambda: len(connected()) >= 2)  # a warm clone's connection may still be opening
        time.sleep(0.3)  # and no third one comes
        self.assertEqual(len(connected()), 2, (ready, connected()))

    def test_pool_size_zero_creates_on_demand(self):
        """With size 0 nothing is made ahead and drops happen at once."""
        made = []
        core = core_of(self.server)
        pool = ClonePool(lambda n, t, e: (made.append(n), core.create(n, t, e)), self.server.drop_database, size=0)
        name, _ = pool.take(self.template, self.prefix, "utf8")
        self.assertEqual(made, [name])
        pool.release(name)
        self.assertNotIn(name, self.clones())
        self.assertEqual(pool.close(), [])


class StrategyTests(unittest.TestCase):
    def test_rule(self):
        """FILE_COPY with fsync off on PostgreSQL 15+, or where the server clones files; else the default."""
        self.assertEqual(choose_strategy(150004, "off"), "FILE_COPY")
        self.assertIsNone(choose_strategy(150004, "on"))
        self.assertIsNone(choose_strategy(140010, "off"))
        self.assertEqual(choose_strategy(180001, "on", "clone"), "FILE_COPY")  # reflinks: cheap whatever fsync
        self.assertIsNone(choose_strategy(180001, "on", "copy"))

    def test_strategy_read_from_the_server(self):
        """The server at 127.0.0.1:5432 runs with fsync on: its default strategy is kept."""
        server = DatabaseServer(support.server_url())
        self.addCleanup(server.close)
        with core_of(server).connect() as connection:
            fsync = connection.execute(text("show fsync")).scalar()
            version = connection.execute(text("show server_version_num")).scalar()
        self.assertEqual(core_of(server).strategy(), choose_strategy(int(version), fsync))


class ConcurrencyTests(unittest.TestCase):
    def test_threads_share_the_pool(self):
        """8 threads taking pooled databases at once: 8 distinct working clones."""
        prefix = support.unique_prefix("pt")
        server = DatabaseServer(support.server_url(), schema=Fingerprinted(prefix))
        self.addCleanup(support.drop_templates, prefix)
        self.addCleanup(server.close)
        template = core_of(server).templates.get(prefix, "utf8")
        names, errors = [], []

        def work():
            try:
                db = SyncProvider(server).database(template, prefix, "utf8", server.sessionmaker_factory)
                with db.engine.connect() as connection:
                    connection.execute(text("select 1"))
                names.append(db.name)
                db.drop()
            except Exception as error:  # asserted below
                errors.append(error)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(errors, [])
        self.assertEqual(len(set(names)), 8)


if __name__ == "__main__":
    unittest.main()
