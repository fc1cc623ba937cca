"""Tests of elefast._server.ownership: only orphans are swept, on a real server, with real killed processes."""

import os
import signal
import subprocess
import sys
import time
import unittest

from elefast import DatabaseServer
from elefast._base import sql as _sql
from elefast._server import ownership
from elefast._server.core import core_of
from tests import support

KILLED = """
import os, signal, sys
from elefast import DatabaseServer
from tests import support
server = DatabaseServer(support.server_url())
database = server.create_database(prefix=sys.argv[1])
print(database.name, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # no cleanup of any kind runs
"""


def kill_a_process_holding_a_database(prefix):
    """Start a process that creates a database and dies by SIGKILL; return the database's name."""
    out = subprocess.run([sys.executable, "-c", KILLED, prefix], cwd=str(support.ROOT), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == -signal.SIGKILL, out.stderr
    return out.stdout.strip()


class OwnershipTests(unittest.TestCase):
    def setUp(self):
        self.prefix = support.unique_prefix("own")
        self.server = DatabaseServer(support.server_url())
        self.addCleanup(self.cleanup)

    def cleanup(self):
        self.server.close()
        for name in support.databases(self.prefix + "%"):  # kept ones, made on purpose by a test
            support.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def test_killed_process_leaves_an_orphan_that_is_swept(self):
        """SIGKILL leaves the database; the next sweep drops it, and only it."""
        name = kill_a_process_holding_a_database(self.prefix)
        self.assertEqual(support.databases(name), [name])
        with core_of(self.server).connect() as connection:
            self.assertIn(name, ownership.find_orphans(connection))
        self.assertIn(name, self.server.sweep_orphans())
        self.assertEqual(support.databases(name), [])

    def test_a_living_owner_keeps_its_database(self):
        """A database whose process lives is never swept, even from another server object."""
        database = self.server.create_database(prefix=self.prefix)
        other = DatabaseServer(support.server_url())
        self.addCleanup(other.close)
        self.assertNotIn(database.name, other.sweep_orphans())
        self.assertEqual(support.databases(database.name), [database.name])
        database.drop()

    def test_unmarked_databases_are_never_swept(self):
        """A database elefast did not make (no mark) is left alone, even with an elefast-like name."""
        name = f"{self.prefix}_0123456789abcdef"
        support.execute(f'CREATE DATABASE "{name}"')
        self.server.sweep_orphans()
        self.assertEqual(support.databases(name), [name])

    def test_a_template_half_marked_by_a_killed_builder_is_swept(self):
        """The shape an earlier version's builder left when killed between making the template read-only
        and marking it ready: a template still carrying the ownership mark. Sweep, not keep forever."""
        name = f"{self.prefix}_tpl_0123456789abcdef"
        support.execute(f'CREATE DATABASE "{name}"')
        support.execute(f"COMMENT ON DATABASE \"{name}\" IS 'elefast database created 2026-01-01T00:00:00Z'")
        support.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false')
        with core_of(self.server).connect() as connection:
            self.assertIn(name, ownership.find_orphans(connection))
        self.assertIn(name, self.server.sweep_orphans())
        self.assertEqual(support.databases(name), [])

    def make_template_leftover(self, name, ready):
        """A database noted as a ready elefast template; with ``ready`` False, the shape a process
        killed between a template's ``IS_TEMPLATE false`` and its ``DROP`` leaves."""
        built = ownership.now().replace("Z", ".000000Z")  # recent: other runs' pruning keeps it
        support.execute(f'CREATE DATABASE "{name}"')
        support.execute(f"COMMENT ON DATABASE \"{name}\" IS 'elefast template v2 built {built} fingerprint {'0' * 32}'")
        support.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE {str(ready).lower()} ALLOW_CONNECTIONS false')

    def test_a_template_half_dropped_by_a_killed_process_is_swept(self):
        """A template noted ready but no template any more is swept, unless a living process holds its
        template lock (a pruner between its two steps); a ready template is never swept."""
        leftover, ready = f"{self.prefix}_tpl_0123456789abcdef", f"{self.prefix}_tpl_fedcba9876543210"
        self.addCleanup(support.drop_templates, self.prefix)
        self.make_template_leftover(leftover, ready=False)
        self.make_template_leftover(ready, ready=True)
        with core_of(self.server).connect() as connection:
            orphans = ownership.find_orphans(connection)
        self.assertIn(leftover, orphans)
        self.assertNotIn(ready, orphans)
        with support.psycopg.connect(support.libpq_dsn(), autocommit=True) as conn:
            conn.execute("select pg_advisory_lock(%s)", (_sql.advisory_key(leftover),))  # a pruner mid-drop
            self.assertNotIn(leftover, self.server.sweep_orphans())
            self.assertEqual(support.databases(leftover), [leftover])
        self.assertIn(leftover, self.server.sweep_orphans())
        self.assertEqual(support.databases(leftover), [])
        self.assertEqual(support.databases(ready), [ready])

    def test_cli_sweep_templates_dry_run_lists_a_half_dropped_template(self):
        """``sweep --templates --dry-run`` names the half-dropped template and drops nothing."""
        leftover = f"{self.prefix}_tpl_0123456789abcdef"
        self.make_template_leftover(leftover, ready=False)
        env = dict(os.environ, ELEFAST_DATABASE_URL=support.server_url())
        dry = subprocess.run([sys.executable, "-m", "elefast", "sweep", "--templates", "--dry-run"],
                             cwd=str(support.ROOT), env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(dry.returncode, 0, dry.stderr)
        self.assertIn(f"would drop {leftover}", dry.stdout)
        self.assertEqual(support.databases(leftover), [leftover])

    def test_a_template_is_marked_ready_in_one_transaction(self):
        statements = _sql.mark_template_ready("t", "2026-01-01T00:00:00Z", "f" * 32)
        self.assertEqual((statements[0], statements[-1]), ("BEGIN", "COMMIT"))
        self.assertTrue(any(s.startswith("COMMENT ON DATABASE") for s in statements))
        self.assertTrue(any("IS_TEMPLATE true" in s for s in statements))

    def test_create_marked_sends_create_and_mark_together(self):
        """The mark lands with the CREATE; a CREATE that fails (the name exists) marks nothing."""
        from sqlalchemy import text

        name = f"{self.prefix}_pipeline"
        comment = "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = :n"
        with core_of(self.server).connect() as connection:
            ownership.create_marked(connection, f'CREATE DATABASE "{name}"', name)
            self.assertIn("elefast", connection.execute(text(comment), {"n": name}).scalar())
            ownership.drop(connection, name)
            support.execute(f'CREATE DATABASE "{name}"')  # someone else's database of that name
            with self.assertRaisesRegex(Exception, "already exists"):
                ownership.create_marked(connection, f'CREATE DATABASE "{name}"', name)
            self.assertIsNone(connection.execute(text(comment), {"n": name}).scalar())
            self.assertEqual(connection.execute(text("SELECT 1")).scalar(), 1)  # the connection is usable

    def test_create_database_keep_outlives_the_server_and_is_listed(self):
        """Upstream's "persistent databases" recipe: keep=True survives close(), a sweep, and the CLI lists it."""
        database = self.server.create_database(prefix=self.prefix, keep=True)
        self.server.close()
        self.assertEqual(support.databases(database.name), [database.name])
        out = subprocess.run([sys.executable, "-m", "elefast", "sweep", "--dry-run", "--url", support.server_url()],
                             cwd=str(support.ROOT), capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn(f"kept {database.name}", out.stdout)
        self.assertNotIn(f"would drop {database.name}", out.stdout)
        database.drop()  # after keep(), only the engine is disposed
        self.assertEqual(support.databases(database.name), [database.name])

    def test_drop_database_is_gone_by_name_and_dropped_behind_even_after_a_kill(self):
        """drop_database(name) renames to an owned elefast_gone_* and drops it in the background; a
        process killed before that leaves a marked orphan that the next sweep takes."""
        code = (
            "import logging, os, signal, sys\n"
            "from elefast import DatabaseServer\n"
            "from tests import support\n"
            "logging.basicConfig(level=logging.INFO, stream=sys.stdout, format='%(message)s')\n"
            "server = DatabaseServer(support.server_url(), debug=True)\n"
            "database = server.create_database(prefix=sys.argv[1])\n"
            "server.drop_database(database.name)\n"
            "print('gone', database.name, flush=True)\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n"
        )
        out = self.killed(code)
        name = out.stdout.split("gone ", 1)[1].split()[0]
        renamed = [line for line in out.stdout.splitlines() if "RENAME TO" in line]
        self.assertEqual(len(renamed), 1, out.stdout)
        gone = renamed[0].rsplit('"', 2)[1]
        self.assertTrue(gone.startswith("elefast_gone_"), gone)
        self.assertEqual(support.databases(name), [])  # gone by its name when drop_database() returned
        self.assertEqual(self.swept(gone), [])  # dropped behind, or swept now

    def test_drop_returns_at_once_and_a_kill_before_the_drop_leaves_it_to_the_sweep(self):
        """Database.drop() hands the clone to the pool's dropper (no rename, no wait); a process killed
        right after leaves a marked orphan, under its own name, that the next sweep takes."""
        code = (
            "import os, signal, sys\n"
            "from elefast import DatabaseServer\n"
            "from tests import support\n"
            "server = DatabaseServer(support.server_url())\n"
            "database = server.create_database(prefix=sys.argv[1])\n"
            "with database.engine.connect() as connection:\n"
            "    connection.exec_driver_sql('SELECT 1')\n"
            "database.drop()\n"
            "print('dropped', database.name, flush=True)\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n"
        )
        name = self.killed(code).stdout.split("dropped ", 1)[1].split()[0]
        self.assertEqual(self.swept(name), [])  # dropped behind before the kill, or an orphan swept now
        self.assertEqual(support.databases(self.prefix + "%"), [])

    def killed(self, code):
        """Run ``code`` (given this test's prefix) in a process that ends itself with SIGKILL."""
        out = subprocess.run([sys.executable, "-c", code, self.prefix], cwd=str(support.ROOT), capture_output=True,
                             text=True, timeout=60)
        self.assertEqual(out.returncode, -signal.SIGKILL, out.stderr)
        return out

    def swept(self, name):
        """Sweep until ``name`` is gone (see :func:`tests.support.swept`)."""
        return support.swept(self.server, lambda: support.databases(name))

    def test_kept_databases_are_never_swept(self):
        """A database kept for inspection is not an orphan."""
        database = self.server.create_database(prefix=self.prefix)
        database.keep()
        database.drop()  # after keep(): the engine goes, the database stays
        self.server.sweep_orphans()
        self.assertEqual(support.databases(database.name), [database.name])

    def test_dry_run(self):
        """sweep_orphans(dry_run=True) names the orphans and drops nothing."""
        name = kill_a_process_holding_a_database(self.prefix)
        self.assertIn(name, self.server.sweep_orphans(dry_run=True))
        self.assertEqual(support.databases(name), [name])
        self.server.sweep_orphans()

    def test_cli_sweep(self):
        """python -m elefast sweep --dry-run lists orphans; sweep drops them."""
        name = kill_a_process_holding_a_database(self.prefix)
        env = dict(os.environ, ELEFAST_DATABASE_URL=support.server_url())

        def cli(*args):
            return subprocess.run([sys.executable, "-m", "elefast", "sweep", *args], cwd=str(support.ROOT),
                                  env=env, capture_output=True, text=True, timeout=60)

        dry = cli("--dry-run")
        self.assertEqual(dry.returncode, 0, dry.stderr)
        self.assertIn(f"would drop {name}", dry.stdout)
        self.assertEqual(support.databases(name), [name])
        real = cli()
        self.assertIn(f"dropped {name}", real.stdout)
        self.assertEqual(support.databases(name), [])

    def test_cli_sweep_templates(self):
        """sweep --templates lists the kept templates; one in use stays, the others are dropped."""
        from sqlalchemy import Column, Integer, MetaData, Table

        from elefast import MetadataMigrator

        def build(table):
            metadata = MetaData()
            Table(table, metadata, Column("id", Integer, primary_key=True))
            server = DatabaseServer(support.server_url(), schema=MetadataMigrator(metadata))
            server.create_database(prefix=self.prefix).drop()
            return server, core_of(server).templates.slot("utf8").name

        unused_server, unused = build("unused_here")
        unused_server.close()
        in_use_server, in_use = build("in_use_here")
        self.addCleanup(support.drop_templates, self.prefix)
        env = dict(os.environ, ELEFAST_DATABASE_URL=support.server_url())

        def cli(*args):
            return subprocess.run([sys.executable, "-m", "elefast", "sweep", "--templates", *args],
                                  cwd=str(support.ROOT), env=env, capture_output=True, text=True, timeout=60)

        dry = cli("--dry-run")
        self.assertEqual(dry.returncode, 0, dry.stderr)
        self.assertIn(f"template {unused}: ", dry.stdout)
        self.assertRegex(dry.stdout, f"template {unused}: .* MB, built .*: would drop")
        self.assertRegex(dry.stdout, f"template {in_use}: .*: in use: kept")
        self.assertEqual(len(support.databases(self.prefix + "_tpl_%")), 2)
        real = cli()
        self.assertRegex(real.stdout, f"template {unused}: .*: dropped")
        self.assertEqual(support.databases(self.prefix + "_tpl_%"), [in_use])
        in_use_server.close()

    def test_killed_runs_repeatedly(self):
        """Five killed processes in a row: the next run (its pool's first sweep) leaves none of theirs."""
        names = [kill_a_process_holding_a_database(self.prefix) for _ in range(5)]
        # each killed run's create_database() started its pool, whose first sweep may have taken
        # the earlier runs' orphans already: the last one's is certainly there
        self.assertEqual(support.databases(names[-1]), [names[-1]])
        server = DatabaseServer(support.server_url())
        self.addCleanup(server.close)
        pool = core_of(server).pool
        pool.release(server.create_database(prefix=self.prefix + "x").name)  # starts the workers
        deadline = time.monotonic() + 20
        while any(support.databases(n) for n in names) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual([n for n in names if support.databases(n)], [])

    def test_ownership_lock_is_held_while_owned(self):
        """While a server owns a database, its lock cannot be taken; after the drop it can."""
        database = self.server.create_database(prefix=self.prefix)
        key = ownership.owner_key(database.name)
        with support.psycopg.connect(support.libpq_dsn(), autocommit=True) as conn:
            self.assertFalse(conn.execute("select pg_try_advisory_lock(%s)", (key,)).fetchone()[0])
            database.drop()  # dropped behind: the lock goes with the database
            deadline = time.monotonic() + 15
            while not conn.execute("select pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
                self.assertLess(time.monotonic(), deadline, "the lock outlived the drop")
                time.sleep(0.02)
            conn.execute("select pg_advisory_unlock(%s)", (key,))


class KeepFailedTests(unittest.TestCase):
    def test_failing_test_database_is_kept_and_printed(self):
        """ELEFAST_KEEP_FAILED=1: a failing test's database stays, named with a psql line; passing ones go."""
        result, kept = support.run_keeping_failed(self, support.unique_prefix("kf"), (
            "    def test_fails(self):\n"
            "        self.fail('on purpose')\n"
            "    def test_passes(self):\n"
            "        pass\n"))
        self.assertEqual(len(kept), 1, result.stderr[-2000:])
        self.assertIn(f"elefast kept the database of the failing test __main__.T.test_fails: {kept[0]}",
                      result.stderr)
        self.assertIn(f"psql 'postgresql://postgres@127.0.0.1:5432/{kept[0]}'", result.stderr)
        server = DatabaseServer(support.server_url())
        self.addCleanup(server.close)
        server.sweep_orphans()
        self.assertEqual(support.databases(kept[0]), kept)


if __name__ == "__main__":
    unittest.main()
