"""The example suite under parallel runners, on one private local server: unittest-parallel -j 4,
stestr --concurrency 4 and pytest -n 4 all pass, build the template once, leave nothing behind."""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
from unittest import mock

import psycopg

from elefast.provision.binaries import BinariesNotFoundError, find_binaries
from tests import support


def have(module):
    import importlib.util

    return importlib.util.find_spec(module) is not None


def have_binaries():
    try:
        find_binaries()
    except BinariesNotFoundError:
        return False
    return True


@unittest.skipUnless(have_binaries(), "no PostgreSQL binaries for a private local server")
class ParallelRunnerTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        base = tempfile.mkdtemp(prefix="eft-par-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        os.chmod(base, 0o711)  # ours; as root the server user must traverse it
        cls.addClassCleanup(shutil.rmtree, base, True)
        cls.env = {k: v for k, v in os.environ.items() if k not in ("ELEFAST_DATABASE_URL", "ELEFAST_SERVER")}
        cls.env["ELEFAST_RUN_DIR"] = base
        cls.env["PYTHON"] = sys.executable  # stestr's workers: this venv's Python, not a resolved base one
        patcher = mock.patch.dict(os.environ, cls.env, clear=True)
        patcher.start()
        cls.addClassCleanup(patcher.stop)
        from elefast.provision.local import ensure_local_server, local_layout, stop_local_server

        url = ensure_local_server()  # this process holds a lease: the server lives across the runs
        cls.layout = local_layout()
        cls.addClassCleanup(stop_local_server, 30, cls.layout)
        cls.conninfo = dict(host=url.query["host"], port=url.port, user="postgres", dbname="postgres",
                            autocommit=True)

    def databases(self):
        with psycopg.connect(**self.conninfo) as conn:
            return [r[0] for r in conn.execute("select datname from pg_database where datname like 'elefast%'")]

    def drop_templates(self):
        with psycopg.connect(**self.conninfo) as conn:
            for (name,) in conn.execute("select datname from pg_database where datistemplate "
                                        "and datname like 'elefast!_tpl!_%' escape '!'").fetchall():
                conn.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE false')
                conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')

    def run_or_explain_hang(self, command, timeout=300):
        """Run ``command``; if it hangs, fail with what every process and session was waiting on."""
        env = dict(self.env, PYTHONFAULTHANDLER="1")
        with tempfile.TemporaryFile("w+") as log:
            process = subprocess.Popen(command, cwd=str(support.ROOT), env=env, stdout=log, stderr=subprocess.STDOUT,
                                       text=True, start_new_session=True)
            try:
                returncode = process.wait(timeout)
            except subprocess.TimeoutExpired:
                sessions = self.sessions()
                os.killpg(process.pid, signal.SIGABRT)  # faulthandler prints every thread's stack
                time.sleep(2)
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                log.seek(0)
                self.fail(f"{command[2]} hung for {timeout} s.\nServer sessions:\n{sessions}\n"
                          f"Output and stacks:\n{log.read()[-20000:]}")
            log.seek(0)
            return returncode, log.read()

    def sessions(self):
        with psycopg.connect(**self.conninfo) as conn:
            rows = conn.execute("select pid, datname, state, wait_event_type, wait_event, left(query, 120), "
                                "(select string_agg(locktype || ':' || mode || ':' || granted::text, ',') "
                                "from pg_locks l where l.pid = a.pid) from pg_stat_activity a "
                                "where backend_type = 'client backend' and pid <> pg_backend_pid()").fetchall()
        return "\n".join(" | ".join(map(str, row)) for row in rows)

    def run_runner(self, command, check_leftovers=True):
        self.drop_templates()  # a fresh start: the run must build the template exactly once
        started = time.monotonic()
        returncode, output = self.run_or_explain_hang(command)
        self.assertEqual(returncode, 0, output[-3000:])
        self.assertNotIn("being accessed by other users", output)
        if not check_leftovers:
            return output, time.monotonic() - started
        deadline = time.monotonic() + 15  # the workers' exit drops their clones; give it a moment
        while time.monotonic() < deadline:
            left = [n for n in self.databases() if re.fullmatch(r"elefast_[0-9a-f]{16}", n)]
            if not left:
                break
            time.sleep(0.1)
        if left:  # workers killed by their runner (unittest-parallel terminates its pool) skip every
            # cleanup; what they left must be orphans that the next run's sweep removes
            from elefast import DatabaseServer
            from elefast.provision.local import ensure_local_server

            server = DatabaseServer(ensure_local_server())
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:  # a worker may still be exiting: sweep until none is left
                server.sweep_orphans()
                left = [n for n in self.databases() if re.fullmatch(r"elefast_[0-9a-f]{16}", n)]
                if not left:
                    break
                time.sleep(0.2)
            server.close()
        left = [n for n in self.databases() if re.fullmatch(r"elefast_[0-9a-f]{16}", n)]
        self.assertEqual(left, [], "clones left behind")
        templates = [n for n in self.databases() if "_tpl_" in n]
        self.assertEqual(len(templates), 1, templates)
        return output, time.monotonic() - started

    @unittest.skipUnless(have("unittest_parallel"), "unittest-parallel is not installed")
    def test_unittest_parallel(self):
        """unittest-parallel -j 4 runs the example suite green and leaves nothing.

        It ends its workers with SIGTERM (``Pool.terminate()``); elefast lets that run their
        exit handlers, so their clones are dropped at once, not by the next run's sweep.
        """
        self.run_runner([sys.executable, "-m", "unittest_parallel", "-j", "4", "-t", ".",
                         "-s", "examples/legacy_app/tests"])

    @unittest.skipUnless(have("stestr"), "stestr is not installed")
    def test_stestr(self):
        """stestr run --concurrency 4 (the project's .stestr.conf) runs the example suite green."""
        try:
            output, _ = self.run_runner([sys.executable, "-m", "stestr", "--here", str(support.ROOT), "run",
                                         "--concurrency", "4"])
        finally:
            shutil.rmtree(support.ROOT / ".stestr", ignore_errors=True)
        self.assertRegex(output, r"Passed: \d+")

    @unittest.skipUnless(have("xdist"), "pytest-xdist is not installed")
    def test_pytest_xdist(self):
        """pytest -n 4 runs the unittest classes of the example suite green."""
        self.run_runner([sys.executable, "-m", "pytest", "-q", "-n", "4", "-p", "no:cacheprovider",
                         "examples/legacy_app/tests"])


if __name__ == "__main__":
    unittest.main()
