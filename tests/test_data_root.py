"""The local server's data directory is the server user's alone: a ``postmaster.pid`` naming some other
process gets nothing signalled.

Real processes: a copy of ``sleep`` named ``postgres`` stands for the server program, started as
the server's user (the ``postgres`` account when the tests run as root, else ourselves).
"""

import io
import os
import shutil
import subprocess
import tempfile
import unittest
from pathlib import Path

from elefast.provision import supervisor
from elefast.provision.binaries import Binaries
from elefast.provision.layout import Layout, server_user
from elefast.provision.locks import pid_alive

SLEEP = shutil.which("sleep") or "/bin/sleep"


class StalePostmasterTests(unittest.TestCase):
    """``_kill_stale_postmaster`` stops what its pid file names only when it is our server program
    run by the server's user."""

    def setUp(self):
        self.base = Path(tempfile.mkdtemp(prefix="eft-stale-"))
        self.addCleanup(shutil.rmtree, self.base, ignore_errors=True)
        os.chmod(self.base, 0o755)  # the server user (as root) runs the program below
        bindir = self.base / "bin"
        bindir.mkdir(mode=0o755)
        shutil.copy(SLEEP, bindir / "postgres")
        os.chmod(bindir / "postgres", 0o755)
        self.user = server_user()
        run_dir = self.base / "run"
        (run_dir / "data").mkdir(parents=True)
        self.layout = Layout(Binaries(bindir, (15,), "test"), self.user, run_dir, self.base / "cache")

    def start(self, command, as_server_user=True):
        options = {}
        if self.user is not None and as_server_user:
            options = dict(user=self.user.uid, group=self.user.gid, extra_groups=[])
        process = subprocess.Popen(command, cwd="/", **options)
        self.addCleanup(process.wait)
        self.addCleanup(lambda: process.poll() is None and process.kill())
        (self.layout.data / "postmaster.pid").write_text(f"{process.pid}\n{self.layout.data}\n")
        return process

    def kill_stale(self):
        log = io.BytesIO()
        supervisor._kill_stale_postmaster(self.layout, log)
        return log.getvalue().decode()

    def test_our_server_program_run_by_the_server_user_is_stopped(self):
        process = self.start([str(self.layout.binaries.postgres), "60"])
        self.assertEqual(self.kill_stale(), "")
        process.wait(5)
        self.assertFalse(pid_alive(process.pid))

    def test_another_program_named_postgres_is_left_and_logged(self):
        process = self.start(["/bin/sh", "-c", f"exec -a postgres-innocent {SLEEP} 60"])
        said = self.kill_stale()
        self.assertIsNone(process.poll())
        self.assertIn(f"not stopping pid {process.pid}", said)
        self.assertIn(f"not {self.layout.binaries.postgres}", said)

    @unittest.skipUnless(os.geteuid() == 0, "needs root: the server program run by another user")
    def test_our_server_program_run_by_another_user_is_left_and_logged(self):
        process = self.start([str(self.layout.binaries.postgres), "60"], as_server_user=False)
        said = self.kill_stale()
        self.assertIsNone(process.poll())
        self.assertIn("it belongs to root (uid 0)", said)


if __name__ == "__main__":
    unittest.main()
