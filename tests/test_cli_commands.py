"""The command line's surface (version, help, --json, --timeout), refused connections, ELEFAST_LOG, Docker errors.

Run as a user runs them: ``python -m elefast`` and pytest in subprocesses.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest
from pathlib import Path

from tests import support


def elefast(*args, env=None, timeout=120):
    """``python -m elefast ARGS`` from the project root, with this worktree's code."""
    full_env = dict(os.environ, PYTHONPATH=str(support.ROOT))
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "elefast", *args], cwd=str(support.ROOT), env=full_env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout)


class ParserTests(unittest.TestCase):
    def test_version(self):
        """``--version`` of ``python -m elefast`` and of the console script (when installed)."""
        from elefast import __version__

        script = Path(sys.executable).parent / "elefast"
        for command in ([sys.executable, "-m", "elefast"], *([[str(script)]] if script.exists() else [])):
            result = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=60,
                                    env=dict(os.environ, PYTHONPATH=str(support.ROOT)))
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertEqual(result.stdout.strip(), f"elefast {__version__}")

    def test_the_internal_command_is_in_no_listing(self):
        """``_hold`` (checkout's holder) is in neither the usage, the help, nor an error's list of choices."""
        from elefast._cli.main import COMMANDS

        helped = elefast("-h")
        wrong = elefast("no-such-command")
        self.assertEqual(helped.returncode, 0)
        self.assertEqual(wrong.returncode, 2)
        self.assertIn("invalid choice", wrong.stderr)
        for text in (helped.stdout, wrong.stderr):
            self.assertNotIn("_hold", text)
        for name, description in COMMANDS.items():
            self.assertIn(name, helped.stdout)
            self.assertIn(description.split()[0], helped.stdout)
            own = elefast(name, "-h")
            self.assertEqual(own.returncode, 0, own.stderr)
            self.assertIn(" ".join(description.split()[:3]), " ".join(own.stdout.split()))

    def test_one_timeout_default(self):
        """Every command with --timeout waits the same default for the server (10 s, as connect_timeout)."""
        from elefast._cli.main import TIMEOUT, build_parser
        from elefast.testcase import PostgresTestCase

        self.assertEqual(TIMEOUT, PostgresTestCase.connect_timeout)
        subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
        with_timeout = []
        for name, parser in subparsers.choices.items():
            for action in parser._actions:
                if "--timeout" in action.option_strings:
                    with_timeout.append(name)
                    self.assertEqual(action.default, TIMEOUT, name)
                    self.assertIn("(default 10)", action.help, name)
        self.assertEqual(sorted(with_timeout), ["check", "checkout", "doctor", "run", "server", "sweep"])

    def test_status_json_of_a_stopped_server(self):
        """``server status --json`` with no server: a JSON object on stdout saying so, exit 1 (as documented)."""
        with tempfile.TemporaryDirectory() as run_dir:
            result = elefast("server", "status", "--json", env={"ELEFAST_RUN_DIR": run_dir})
            self.assertEqual(result.returncode, 1, result.stderr)
            self.assertEqual(json.loads(result.stdout), {"running": False})
            stop = elefast("server", "stop", "--json", env={"ELEFAST_RUN_DIR": run_dir})
            self.assertEqual(stop.returncode, 0, stop.stderr)
            self.assertEqual(json.loads(stop.stdout), {"stopped": False})

    def test_checkout_json_error_is_json(self):
        url = f"postgresql://u@127.0.0.1:{support.free_port()}/postgres"
        result = elefast("checkout", "--json", "--url", url, "--sql", str(support.ROOT / "nonexistent.sql"))
        self.assertEqual(result.returncode, 2)
        self.assertIn("error", json.loads(result.stdout))


class RefusedTests(unittest.TestCase):
    """Nothing listens at a configured URL: said at once, with where the URL came from."""

    def setUp(self):
        self.url = f"postgresql://postgres@127.0.0.1:{support.free_port()}/postgres"

    def assertSaidAtOnce(self, result, started, source):
        self.assertLess(time.monotonic() - started, 8)  # the timeout is 10 s
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(f"(from {source})", result.stdout + result.stderr)
        self.assertIn("refused", result.stdout + result.stderr)

    def test_commands(self):
        for args, env, source in ((["sweep", "--url", self.url], {}, "--url"),
                                  (["sweep"], {"ELEFAST_DATABASE_URL": self.url}, "ELEFAST_DATABASE_URL"),
                                  (["run", "--url", self.url, "--", "true"], {}, "--url")):
            with self.subTest(args=args):
                started = time.monotonic()
                self.assertSaidAtOnce(elefast(*args, env=env), started, source)

    def test_a_test_run(self):
        code = textwrap.dedent('''
            import unittest
            from elefast import PostgresTestCase

            class One(PostgresTestCase, unittest.TestCase):
                def test_one(self):
                    pass

            unittest.main(module=__name__, verbosity=0)
        ''')
        started = time.monotonic()
        result = support.run_python(code, env={"ELEFAST_DATABASE_URL": self.url, "PYTHONPATH": str(support.ROOT)})
        self.assertSaidAtOnce(result, started, "ELEFAST_DATABASE_URL")

    def test_the_api_still_waits_for_a_url_it_was_given(self):
        """``ensure_is_ready`` on a URL no configuration named keeps waiting (a server may be coming up)."""
        from elefast.errors import DatabaseNotReadyError
        from elefast.sync import DatabaseServer

        url = f"postgresql://someone@127.0.0.1:{support.free_port()}/postgres"
        started = time.monotonic()
        with self.assertRaises(DatabaseNotReadyError) as caught:
            DatabaseServer(url).ensure_is_ready(timeout=1.2, interval=0.2)
        self.assertGreaterEqual(time.monotonic() - started, 1.0)
        self.assertIn("did not answer within the timeout", str(caught.exception))


PASSING = textwrap.dedent('''
    import unittest

    from sqlalchemy import text

    from elefast import PostgresTestCase


    class One(PostgresTestCase, unittest.TestCase):
        def test_one(self):
            self.assertEqual(self.session.execute(text("SELECT 1")).scalar(), 1)
''')


class LogTests(unittest.TestCase):
    def pytest(self, *args, log="info"):
        folder = Path(tempfile.mkdtemp(prefix="elefast-log-"))
        self.addCleanup(__import__("shutil").rmtree, folder, ignore_errors=True)
        (folder / "test_passing.py").write_text(PASSING)
        env = dict(os.environ, ELEFAST_LOG=log, PYTHONPATH=str(support.ROOT), ELEFAST_DATABASE_URL=support.server_url())
        return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", *args,
                               "test_passing.py"], cwd=str(folder), env=env, capture_output=True, text=True,
                              timeout=180)

    def test_elefast_log_shows_under_pytest(self):
        """A passing run with ELEFAST_LOG=info prints elefast's lines in a section of the summary."""
        result = self.pytest("-q")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("elefast log (ELEFAST_LOG=info)", result.stdout)
        self.assertIn("elefast INFO: using the server from ELEFAST_DATABASE_URL", result.stdout)

    def test_live_logging_shows_them_once(self):
        """With --log-cli-level=INFO pytest prints them as they come; no section repeats them."""
        result = self.pytest("--log-cli-level=INFO")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertEqual(result.stdout.count("using the server from ELEFAST_DATABASE_URL"), 1, result.stdout)
        self.assertNotIn("elefast log (ELEFAST_LOG", result.stdout)

    def test_an_unknown_value_is_warned_about_once(self):
        result = support.run_python("import elefast._base.log, importlib; importlib.reload(elefast._base.log)",
                                    env={"ELEFAST_LOG": "verbose", "PYTHONPATH": str(support.ROOT)})
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("ELEFAST_LOG='verbose' is not a level elefast knows: use one of debug, info, warning, error",
                      result.stderr)
        plain = support.run_python("import elefast._base.log",
                                   env={"ELEFAST_LOG": "debug", "PYTHONPATH": str(support.ROOT)})
        self.assertEqual(plain.stderr, "")


class DockerTests(unittest.TestCase):
    def test_no_daemon_is_elefasts_error(self):
        """An upstream-style ``docker.postgres()`` with no daemon raises DockerUnavailableError with the fix."""
        code = textwrap.dedent('''
            from elefast.errors import DockerUnavailableError, ElefastError
            from elefast.extras.docker import postgres
            try:
                postgres("psycopg")
            except DockerUnavailableError as error:
                assert isinstance(error, ElefastError)
                print("raised:", error)
        ''')
        result = support.run_python(code, env={"DOCKER_HOST": "unix:///nonexistent/docker.sock",
                                               "PYTHONPATH": str(support.ROOT)})
        if "needs the Docker SDK" in result.stderr:
            self.skipTest("the docker extra is not installed")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("raised: No Docker daemon answers", result.stdout)
        self.assertIn("Start Docker", result.stdout)


if __name__ == "__main__":
    unittest.main()
