"""What a process owns when it ends is dropped behind it by a detached dropper, never by a later run,
and the dropper drops nothing that is not elefast's or that a living process owns."""

import os
import subprocess
import sys
import time
import unittest

import psycopg

from elefast._server import dropper, ownership
from tests import support

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
