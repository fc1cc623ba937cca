"""Private directories and files (elefast.provision.private): another user's, loose or swapped ones are refused.

"Another user" here is a real account of the machine (``postgres``, or ``nobody``) that root hands
a directory to; the attacks by a second login user run in ``make reliability`` (tests/reliability/intruder.py).
"""

import os
import pwd
import stat
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

from elefast.errors import UnsafePathError
from elefast.provision.private import (
    open_private,
    private_dir,
    process_start,
    read_private,
    write_private,
)


def other_uid():
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name).pw_uid
        except KeyError:
            continue
    return None


class PrivateDirTests(unittest.TestCase):
    def setUp(self):
        self.base = Path(tempfile.mkdtemp(prefix="elefast-private-"))
        self.addCleanup(subprocess.run, ["rm", "-rf", str(self.base)])

    def test_made_private_from_the_start(self):
        made = private_dir(self.base / "a" / "cache", "the cache directory")
        self.assertEqual(stat.S_IMODE(made.stat().st_mode) & 0o077, 0)
        self.assertEqual(stat.S_IMODE(private_dir(self.base / "run", mode=0o711).stat().st_mode) & 0o022, 0)

    def test_a_mode_that_lets_others_write_is_not_asked_for(self):
        with self.assertRaises(ValueError):
            private_dir(self.base / "x", mode=0o777)

    def test_group_or_other_writable_is_refused_with_the_fix(self):
        loose = self.base / "loose"
        loose.mkdir()
        os.chmod(loose, 0o777)
        with self.assertRaises(UnsafePathError) as caught:
            private_dir(loose, "the run directory")
        self.assertIn(str(loose), str(caught.exception))
        self.assertIn("0o777", str(caught.exception))
        self.assertIn("chmod go-w", str(caught.exception))

    def test_a_symbolic_link_is_refused(self):
        target = self.base / "elsewhere"
        target.mkdir(mode=0o700)
        (self.base / "link").symlink_to(target)
        with self.assertRaisesRegex(UnsafePathError, "not a plain directory"):
            private_dir(self.base / "link")

    @unittest.skipUnless(hasattr(os, "geteuid") and os.geteuid() == 0 and other_uid() is not None,
                         "needs root and a second account to hand a directory to")
    def test_another_users_directory_and_files_are_refused_and_named(self):
        theirs = self.base / "theirs"
        theirs.mkdir(mode=0o755)
        os.chown(theirs, other_uid(), -1)
        with self.assertRaises(UnsafePathError) as caught:
            private_dir(theirs, "the cache directory")
        message = str(caught.exception)
        self.assertIn(str(theirs), message)
        self.assertIn(f"uid {other_uid()}", message)
        planted = self.base / "programs.json"
        planted.write_text("{}")
        os.chown(planted, other_uid(), -1)
        with self.assertRaisesRegex(UnsafePathError, "belongs to another user"):
            read_private(planted, "the remembered program lookups")


class PrivateFileTests(unittest.TestCase):
    def setUp(self):
        self.base = private_dir(Path(tempfile.mkdtemp(prefix="elefast-private-")))
        self.addCleanup(subprocess.run, ["rm", "-rf", str(self.base)])

    def test_written_0600_and_read_back(self):
        path = self.base / "password"
        old = os.umask(0)  # the loosest umask: the mode still comes from open itself
        try:
            write_private(path, "s3cret")
        finally:
            os.umask(old)
        self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600)
        self.assertEqual(read_private(path), "s3cret")
        self.assertIsNone(read_private(self.base / "missing"))
        self.assertEqual([p.name for p in self.base.iterdir()], ["password"])  # no temporary left

    def test_a_log_left_0644_by_an_earlier_version_is_tightened(self):
        log = self.base / "postgres.log"
        log.write_text("old lines\n")
        os.chmod(log, 0o644)
        with os.fdopen(open_private(log), "ab") as handle:
            handle.write(b"new line\n")
        self.assertEqual(stat.S_IMODE(log.stat().st_mode), 0o600)
        self.assertEqual(log.read_text(), "old lines\nnew line\n")

    def test_a_writable_by_others_file_is_not_read(self):
        path = self.base / "state.json"
        path.write_text("{}")
        os.chmod(path, 0o666)
        with self.assertRaisesRegex(UnsafePathError, "other users may write"):
            read_private(path, "the state file")


class ProcessStartTests(unittest.TestCase):
    @unittest.skipUnless(Path("/proc/self/stat").exists(), "reads /proc")
    def test_a_process_is_told_from_another_with_its_start(self):
        mine = process_start(os.getpid())
        self.assertIsNotNone(mine)
        self.assertEqual(mine, process_start(os.getpid()))
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            other = process_start(child.pid)
            self.assertIsNotNone(other)
            self.assertNotEqual(other, mine)
        finally:
            child.kill()
            child.wait()
        self.assertIsNone(process_start(child.pid))


if __name__ == "__main__":
    unittest.main()
