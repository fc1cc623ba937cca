"""The local server's data directory is the server user's alone: the directory of ours in
``ELEFAST_DATA_DIR`` is made private and never followed through a symbolic link another user planted,
and a ``postmaster.pid`` naming some other process gets nothing signalled.

Real processes: a copy of ``sleep`` named ``postgres`` stands for the server program, started as
the server's user (the ``postgres`` account when the tests run as root, else ourselves).
"""

import io
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import unittest
from pathlib import Path

from elefast.errors import UnsafePathError
from elefast.provision import supervisor
from elefast.provision.binaries import Binaries
from elefast.provision.layout import Layout, server_user
from elefast.provision.locks import pid_alive

SLEEP = shutil.which("sleep") or "/bin/sleep"


def _default_signals():
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


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

    def start(self, command, as_server_user=True, executable=None):
        # the child starts with no signal blocked or ignored, whatever the runner's threads left
        options = dict(executable=executable, preexec_fn=_default_signals)
        if self.user is not None and as_server_user:
            options.update(user=self.user.uid, group=self.user.gid, extra_groups=[])
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
        process = self.start(["postgres-innocent", "60"], executable=SLEEP)
        self.assertIn("postgres-innocent", Path(f"/proc/{process.pid}/cmdline").read_text())
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


class DataRootTests(unittest.TestCase):
    """``prepare_data_root``: the directory of ours in a shared (``1777``) ``ELEFAST_DATA_DIR``."""

    def setUp(self):
        self.shared = Path(tempfile.mkdtemp(prefix="eft-data-dir-"))
        self.addCleanup(shutil.rmtree, self.shared, ignore_errors=True)
        os.chmod(self.shared, 0o1777)
        self.user = server_user()
        self.layout = Layout(Binaries(Path(SLEEP).parent, (15,), "test"), self.user, self.shared / "run",
                             self.shared / "cache", self.shared / "elefast-0-abc")

    def refused(self, pattern):
        with self.assertRaisesRegex(UnsafePathError, pattern) as caught:
            supervisor.prepare_data_root(self.layout)
        self.assertIn(str(self.layout.data_root), str(caught.exception))

    def test_made_0700_for_the_server_user(self):
        supervisor.prepare_data_root(self.layout)
        info = os.lstat(self.layout.data_root)
        self.assertEqual(stat.S_IMODE(info.st_mode), 0o700)
        self.assertEqual(info.st_uid, self.user.uid if self.user else os.geteuid())
        supervisor.prepare_data_root(self.layout)  # the next run takes it as it is

    def test_a_symbolic_link_there_is_refused_and_its_target_left_as_it_was(self):
        target = Path(tempfile.mkdtemp(prefix="eft-target-"))
        self.addCleanup(shutil.rmtree, target, ignore_errors=True)
        os.chmod(target, 0o755)
        before = os.stat(target)
        self.layout.data_root.symlink_to(target)
        self.refused("not a plain directory")
        after = os.stat(target)
        self.assertEqual((after.st_uid, after.st_gid, after.st_mode), (before.st_uid, before.st_gid, before.st_mode))
        self.assertEqual(list(target.iterdir()), [])

    def test_one_others_may_write_is_refused(self):
        self.layout.data_root.mkdir()
        os.chmod(self.layout.data_root, 0o777)
        self.refused("other users may write")

    @unittest.skipUnless(os.geteuid() == 0, "needs root: a directory of another user")
    def test_another_users_is_refused(self):
        other = next(entry for entry in pwd.getpwall() if entry.pw_uid not in (0, self.user.uid))
        self.layout.data_root.mkdir(mode=0o700)
        os.chown(self.layout.data_root, other.pw_uid, other.pw_gid)
        self.refused("belongs to another user")
        self.assertEqual(os.stat(self.layout.data_root).st_uid, other.pw_uid)

    def test_a_data_dir_others_may_write_without_the_sticky_bit_is_refused(self):
        os.chmod(self.shared, 0o777)
        self.refused("another user could swap it")
        self.assertFalse(self.layout.data_root.exists())


if __name__ == "__main__":
    unittest.main()
