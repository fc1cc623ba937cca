"""What a process owns when it ends is dropped behind it by a detached dropper, never by a later run,
and the dropper drops nothing that is not elefast's or that a living process owns."""

import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

import psycopg

from elefast._server import dropper, ownership
from tests import support

COLLECTED = """
import gc, sys, time
from elefast import DatabaseServer
from tests import support

server = DatabaseServer(support.server_url())
names = [server.create_database(prefix=sys.argv[1]).name for _ in range(4)]
started = time.monotonic()
del server
gc.collect()
print(round(time.monotonic() - started, 3), flush=True)
deadline = time.monotonic() + 40
while time.monotonic() < deadline and support.databases(sys.argv[1] + "%"):
    time.sleep(0.1)
print(len(support.databases(sys.argv[1] + "%")), flush=True)
"""

CHILD = """
import sys, time
from elefast import DatabaseServer
from tests import support

server = DatabaseServer(support.server_url())
for _ in range(4):
    server.create_database(prefix=sys.argv[1])  # neither dropped nor closed: left to the exit
print(time.time(), flush=True)
"""


def admin_url() -> str:
    return support.psycopg_url()


class DropperTests(unittest.TestCase):
    def setUp(self):
        self.prefix = support.unique_prefix("drb")
        self.addCleanup(support.drop_templates, self.prefix)

    def run_child(self, **env):
        environment = dict(os.environ, PYTHONPATH=str(support.ROOT), **env)
        result = subprocess.run([sys.executable, "-c", CHILD, self.prefix], cwd=str(support.ROOT), env=environment,
                                capture_output=True, text=True, timeout=120)
        ended = time.time()
        self.assertEqual(result.returncode, 0, result.stderr)
        return ended - float(result.stdout.split()[0])

    def clones(self):
        return [name for name in support.databases(self.prefix + "%") if "_tpl_" not in name]

    def test_the_clones_left_at_exit_are_dropped_behind(self):
        took = self.run_child(ELEFAST_DROP_AT_EXIT="behind")
        deadline = time.monotonic() + dropper.DROPPER_SECONDS + 5
        while self.clones() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual(self.clones(), [])
        self.assertLess(took, 5, "the process should end without waiting for its drops")

    def test_here_drops_them_before_the_process_ends(self):
        self.run_child(ELEFAST_DROP_AT_EXIT="here")
        self.assertEqual(self.clones(), [])

    def test_a_server_collected_unclosed_hands_its_databases_over_while_the_process_goes_on(self):
        environment = dict(os.environ, PYTHONPATH=str(support.ROOT))
        environment.pop("ELEFAST_DROP_AT_EXIT", None)
        result = subprocess.run([sys.executable, "-c", COLLECTED, self.prefix], cwd=str(support.ROOT),
                                env=environment, capture_output=True, text=True, timeout=120)
        self.assertEqual(result.returncode, 0, result.stderr)
        collected_in, left = result.stdout.split()
        self.assertLess(float(collected_in), 2.0, "collecting the server should not wait for its drops")
        self.assertEqual(left, "0", "the dropper drops them while the process still runs")

    def test_on_the_local_server_the_dropper_holds_a_lease_until_it_is_done(self):
        from elefast.provision import locks

        run_dir = Path(tempfile.mkdtemp(prefix="eft-leases-"))  # as the local server's run directory
        self.addCleanup(shutil.rmtree, run_dir, True)
        leases = run_dir / "leases"
        leases.mkdir(mode=0o700)
        name = f"{self.prefix}_leased"
        support.execute(f'CREATE DATABASE "{name}"')
        self.addCleanup(support.execute, f'DROP DATABASE IF EXISTS "{name}"')
        for statement in ownership.mark_owned(name):
            support.execute(statement)
        with psycopg.connect(support.libpq_dsn(), autocommit=True) as owner:  # its owner still lives
            owner.execute("SELECT pg_advisory_lock(%s)", (ownership.owner_key(name),))
            self.assertTrue(dropper.hand_over(admin_url(), [name], leases))
            holders = locks.lease_holders(leases)
            self.assertEqual(len(holders), 1)
            self.assertNotEqual(holders, [os.getpid()], "the lease is named after the dropper, not us")
            self.assertTrue(locks.pid_alive(holders[0]))
        deadline = time.monotonic() + 20
        while locks.live_leases(leases) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(locks.live_leases(leases), 0, "the lease goes when the dropper is done")
        self.assertEqual(support.databases(name), [])

    def test_without_a_lease_on_the_local_server_nothing_is_handed_over(self):
        run_dir = Path(tempfile.mkdtemp(prefix="eft-leases-"))
        self.addCleanup(shutil.rmtree, run_dir, True)
        self.assertFalse(dropper.hand_over(admin_url(), ["elefast_never_made"], run_dir / "leases"))
        self.assertEqual(list(run_dir.iterdir()), [], "nothing is left of the lease it could not take")

    def test_a_sweep_left_unfinished_takes_only_what_was_orphaned_before_it(self):
        """What a process that ended mid-sweep owed: orphans marked before it started; not one
        created since (another run's, or a test's that looks at it), nor one a living process owns,
        nor a shared template (another process may build one of that name again)."""
        from sqlalchemy import create_engine

        from elefast._base import sql as _sql

        old, new, owned = f"{self.prefix}_old", f"{self.prefix}_new", f"{self.prefix}_alive"
        template = f"{self.prefix}_tpl_0123456789abcdef"
        for name, created in ((old, "2000-01-01T00:00:00Z"), (new, "2999-01-01T00:00:00Z"),
                              (owned, "2000-01-01T00:00:00Z"), (template, "2000-01-01T00:00:00Z")):
            support.execute(f'CREATE DATABASE "{name}"')
            self.addCleanup(support.execute, f'DROP DATABASE IF EXISTS "{name}"')
            for statement in _sql.mark_owned(name, created):
                support.execute(statement)
        engine = create_engine(admin_url(), isolation_level="AUTOCOMMIT")
        self.addCleanup(engine.dispose)
        with psycopg.connect(support.libpq_dsn(), autocommit=True) as owner:
            owner.execute("SELECT pg_advisory_lock(%s)", (ownership.owner_key(owned),))
            with engine.connect() as connection:
                found = [n for n in ownership.orphans_created_before(connection, ownership.now())
                         if n.startswith(self.prefix)]
        self.assertEqual(found, [old])
        self.assertEqual(dropper.drop_behind(admin_url(), found, seconds=5), [old])

    def test_a_template_a_living_process_uses_is_never_dropped(self):
        """Even handed over by name: the dropper takes the template's own lock before it drops."""
        from elefast._base import sql as _sql

        name = f"{self.prefix}_tpl_fedcba9876543210"
        support.execute(f'CREATE DATABASE "{name}"')
        self.addCleanup(support.execute, f'DROP DATABASE IF EXISTS "{name}"')
        for statement in ownership.mark_owned(name):
            support.execute(statement)
        with psycopg.connect(support.libpq_dsn(), autocommit=True) as user:
            user.execute("SELECT pg_advisory_lock_shared(%s)", (_sql.advisory_key(name),))
            self.assertEqual(dropper.drop_behind(admin_url(), [name], seconds=1), [])
            self.assertEqual(support.databases(name), [name])
        self.assertEqual(dropper.drop_behind(admin_url(), [name], seconds=5), [name])

    def test_an_unmarked_database_is_never_dropped(self):
        name = f"{self.prefix}_not_elefasts"
        with psycopg.connect(support.libpq_dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.addCleanup(support.execute, f'DROP DATABASE IF EXISTS "{name}"')
        self.assertEqual(dropper.drop_behind(admin_url(), [name], seconds=2), [])
        self.assertEqual(support.databases(name), [name])

    def test_a_database_whose_owner_lives_waits_for_it(self):
        name = f"{self.prefix}_owned"
        with psycopg.connect(support.libpq_dsn(), autocommit=True) as owner:
            owner.execute(f'CREATE DATABASE "{name}"')
            for statement in ownership.mark_owned(name):
                owner.execute(statement)
            owner.execute("SELECT pg_advisory_lock(%s)", (ownership.owner_key(name),))
            started = time.monotonic()
            self.assertEqual(dropper.drop_behind(admin_url(), [name], seconds=1), [])
            self.assertGreaterEqual(time.monotonic() - started, 0.9)
            self.assertEqual(support.databases(name), [name])
        # its owner has gone: now it is dropped
        self.assertEqual(dropper.drop_behind(admin_url(), [name], seconds=10), [name])
        self.assertEqual(support.databases(name), [])


if __name__ == "__main__":
    unittest.main()
