"""``python -m elefast doctor`` says OK exactly when a test run would get a server it can use.

Each case runs ``doctor`` as a user does (a subprocess, no class ``database_url``), and the
cases where it must fail are checked against a real test run in the same environment.
"""

import subprocess
import sys
import textwrap
import time
import unittest

from tests import support

OK = "OK: tests would use the"
FAIL = "A test run would fail"

A_TEST = textwrap.dedent('''
    import unittest

    from sqlalchemy import text

    from elefast import PostgresTestCase


    class One(PostgresTestCase, unittest.TestCase):
        def test_one(self):
            self.assertEqual(self.session.execute(text("SELECT 1")).scalar(), 1)


    unittest.main(module=__name__, verbosity=0)
''')


def elefast(*args, env=None, timeout=180):
    """``python -m elefast ARGS`` from the project root, with this worktree's code."""
    full_env = dict(support.os.environ, PYTHONPATH=str(support.ROOT))
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "elefast", *args], cwd=str(support.ROOT), env=full_env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout)


def a_test_run(env):
    """A one-test unittest run with ``env``: what doctor predicts."""
    return support.run_python(A_TEST, env=dict(env, PYTHONPATH=str(support.ROOT)), timeout=180)


class DoctorTests(unittest.TestCase):
    def assertFails(self, result, *expected):
        out = result.stdout + result.stderr
        self.assertEqual(result.returncode, 1, out)
        self.assertNotIn(OK, out)
        self.assertIn(FAIL, result.stdout)
        for text in expected:
            self.assertIn(text, result.stdout)

    def test_a_url_that_works(self):
        """Versions, the URL (no password), the role's right, a template built and cloned; exit 0; nothing left."""
        result = elefast("doctor", env={"ELEFAST_DATABASE_URL": support.server_url()})
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        for expected in ("Python", "SQLAlchemy", "psycopg", "asyncpg", "using the server from ELEFAST_DATABASE_URL",
                         "role 'postgres': superuser", "a template was built and cloned", OK + " url server."):
            self.assertIn(expected, result.stdout)
        self.assertEqual(support.databases("elefast\\_doctor%"), [])
        run = a_test_run({"ELEFAST_DATABASE_URL": support.server_url()})  # and the run passes
        self.assertEqual(run.returncode, 0, run.stderr)

    def test_nothing_listens_at_the_url(self):
        """No fallback to the local server (a run does not fall back); said at once, naming the variable."""
        url = f"postgresql://u:hunter2@127.0.0.1:{support.free_port()}/db"
        started = time.monotonic()
        result = elefast("doctor", env={"ELEFAST_DATABASE_URL": url})
        self.assertLess(time.monotonic() - started, 8)  # not the 10 s timeout: the refusal is final
        self.assertFails(result, "from ELEFAST_DATABASE_URL", "refused")
        self.assertNotIn("hunter2", result.stdout + result.stderr)
        self.assertNotIn("throwaway local server", result.stdout.split("Where a test run")[1].split("\n", 2)[2])
        run = a_test_run({"ELEFAST_DATABASE_URL": url})
        self.assertNotEqual(run.returncode, 0)  # the run fails too, with the same words
        self.assertIn("from ELEFAST_DATABASE_URL", run.stderr)

    def test_a_url_that_is_not_postgresql(self):
        result = elefast("doctor", env={"ELEFAST_DATABASE_URL": "sqlite://"})
        self.assertFails(result, "InvalidURLError", "postgresql://")
        run = a_test_run({"ELEFAST_DATABASE_URL": "sqlite://"})
        self.assertNotEqual(run.returncode, 0)
        self.assertIn("InvalidURLError", run.stderr)

    def test_a_wrong_password(self):
        with support.password_server("right-one") as url:
            wrong = url.replace("right-one", "wrong-one")
            result = elefast("doctor", env={"ELEFAST_DATABASE_URL": wrong})
            self.assertFails(result, "ServerRejectedError", "password")
            self.assertNotIn("wrong-one", result.stdout + result.stderr)
            right = elefast("doctor", env={"ELEFAST_DATABASE_URL": url})
            self.assertEqual(right.returncode, 0, right.stdout + right.stderr)
            self.assertNotIn("right-one", right.stdout + right.stderr)

    def test_a_role_without_createdb(self):
        """A role that may connect but not create databases: the run cannot work, doctor says so with the fix."""
        with support.role(createdb=False) as name:
            url = support.url_with(user=name)
            result = elefast("doctor", env={"ELEFAST_DATABASE_URL": url})
            self.assertFails(result, "neither superuser nor CREATEDB", f'ALTER ROLE "{name}" CREATEDB')
            run = a_test_run({"ELEFAST_DATABASE_URL": url})
            self.assertNotEqual(run.returncode, 0)
            self.assertIn("permission denied to create database", run.stderr)
        with support.role(createdb=True) as name:
            result = elefast("doctor", env={"ELEFAST_DATABASE_URL": support.url_with(user=name)})
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
            self.assertIn(f"role '{name}': CREATEDB", result.stdout)

    def test_the_local_way(self):
        """Without a URL: the throwaway local server, started or joined as a run does; OK."""
        result = elefast("doctor", env={"ELEFAST_DATABASE_URL": "", "ELEFAST_SERVER": "local"})
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("using the throwaway local server (ELEFAST_SERVER=local): PostgreSQL", result.stdout)
        self.assertIn(OK + " local server.", result.stdout)

    def test_docker_without_a_daemon(self):
        """ELEFAST_SERVER=docker and no daemon: exit 1 with elefast's error and its fix."""
        env = {"ELEFAST_DATABASE_URL": "", "ELEFAST_SERVER": "docker", "DOCKER_HOST": "unix:///nonexistent.sock"}
        result = elefast("doctor", env=env)
        self.assertFails(result, "DockerUnavailableError", "Start Docker")


if __name__ == "__main__":
    unittest.main()
