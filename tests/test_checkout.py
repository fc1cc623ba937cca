"""``python -m elefast checkout`` / ``release``: a fresh migrated database for another process (an
end-to-end run), held by a detached holder until released or its time is up; a killed holder's
database is swept by the next run; bad options fail before anything starts."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

import psycopg

from tests import support


def elefast(*args, timeout=300, env=None):
    env = dict(os.environ, PYTHONPATH=str(support.ROOT), ELEFAST_DATABASE_URL=support.server_url(), **(env or {}))
    return subprocess.run([sys.executable, "-m", "elefast", *args], cwd=str(support.ROOT), env=env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout)


def gone(name, within=15.0):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if name not in support.databases("elefast_checkout%"):
            return True
        time.sleep(0.1)
    return False


@support.once_per_ci
class CheckoutTests(unittest.TestCase):
    def checkout(self, *extra):
        result = elefast("checkout", "--schema", "examples.legacy_shop.db:Base", "--json", *extra)
        self.assertEqual(result.returncode, 0, result.stderr)
        report = json.loads(result.stdout)
        self.addCleanup(lambda: elefast("release", report["name"]))
        return report, result

    def test_a_migrated_database_held_until_release(self):
        report, result = self.checkout()
        self.assertIn(f"python -m elefast release {report['name']}", result.stderr)
        self.assertEqual(report["database"], report["name"])
        with psycopg.connect(support.libpq_dsn(report["url"])) as conn:  # another process uses it
            conn.execute("insert into items (name) values ('lamp')")
        time.sleep(0.5)
        self.assertIn(report["name"], support.databases("elefast_checkout%"))  # still held
        released = elefast("release", report["name"])
        self.assertEqual(released.returncode, 0, released.stderr)
        self.assertIn("released", released.stdout)
        self.assertTrue(gone(report["name"]))

    def test_the_hold_time_runs_out(self):
        report, _ = self.checkout("--hold", "1")
        self.assertTrue(gone(report["name"], within=20))

    def test_a_killed_holder_leaves_a_database_the_sweep_drops(self):
        report, _ = self.checkout()
        os.kill(report["holder_pid"], signal.SIGKILL)
        time.sleep(0.5)
        swept = elefast("sweep")
        self.assertEqual(swept.returncode, 0, swept.stderr)
        self.assertTrue(gone(report["name"]))

    def test_bad_options_fail_before_a_holder_starts(self):
        result = elefast("checkout", "--schema", "no_such_module:Base")
        self.assertEqual(result.returncode, 2)
        self.assertIn("--schema 'no_such_module:Base' does not load", result.stderr)
        both = elefast("checkout", "--schema", "examples.legacy_shop.db:Base", "--sql", "schema.sql")
        self.assertEqual(both.returncode, 2)
        self.assertIn("Give one of --schema, --alembic and --sql", both.stderr)

    def test_release_of_an_unknown_name(self):
        result = elefast("release", "elefast_checkout_0000000000000000")
        self.assertEqual(result.returncode, 1)
        self.assertIn("No checkout named", result.stderr)

    def test_a_record_without_the_holders_start_time_signals_nothing(self):
        tmpdir = tempfile.mkdtemp(prefix="eft-checkouts-")
        self.addCleanup(shutil.rmtree, tmpdir, ignore_errors=True)
        registry = Path(tmpdir) / f"elefast-checkouts-{os.getuid()}"
        registry.mkdir(mode=0o700)
        bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        self.addCleanup(bystander.wait)
        self.addCleanup(bystander.kill)
        name = "elefast_checkout_0000000000000001"
        (registry / f"{name}.json").write_text(json.dumps({"pid": bystander.pid, "expires": time.time() + 60}))
        result = elefast("release", name, env={"TMPDIR": tmpdir})
        self.assertEqual(result.returncode, 1)
        self.assertIn(f"Not signalling pid {bystander.pid}", result.stderr)
        self.assertIn("cannot be matched (the record has none)", result.stderr)
        time.sleep(0.2)
        self.assertIsNone(bystander.poll())


if __name__ == "__main__":
    unittest.main()
