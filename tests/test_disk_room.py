"""The throwaway server's disk never fills: clones ahead only with room, old templates dropped by
size, and a clone that cannot fit fails with DiskFullError naming the directory and the fix.

Runs a real throwaway server whose data directory is on a small tmpfs mounted here (root only;
skipped with the reason otherwise), in a child process with a run directory of its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import unittest
from pathlib import Path

from tests import support

CHILD = """
import sqlalchemy as sa
from elefast import DatabaseServer, MetadataMigrator
from elefast._server.core import core_of
from elefast.errors import DiskFullError
from elefast.provision.local import ensure_local_server, stop_local_server


class Filled(MetadataMigrator):
    def __init__(self, metadata, megabytes):
        super().__init__(metadata)
        self.megabytes = megabytes

    def migrate(self, connection):
        super().migrate(connection)
        connection.execute(sa.text(
            "INSERT INTO rows (body) SELECT repeat('x', 1000) FROM generate_series(1, :n)"),
            {"n": self.megabytes * 900})


def schema(label):
    metadata = sa.MetaData()
    sa.Table("rows", metadata, sa.Column("id", sa.Integer, primary_key=True), sa.Column("body", sa.Text),
             comment=label)
    return metadata


url = ensure_local_server()
for label in "ABCD":  # four schemas of ~60 MB each, one after the other, as four test runs would
    server = DatabaseServer(url, schema=Filled(schema(label), 60))
    for _ in range(4):
        with server.create_database("disk") as database:
            with database.engine.connect() as connection:
                assert connection.execute(sa.text("select count(*) from rows")).scalar() > 0
    room = core_of(server).room
    print("free-above-reserve", room.disk.free() - room.disk.reserve() >= 0)
    server.close()

# two schemas used in turn by one process, both servers open (two test classes): the clones each
# keeps ahead must give way to the other's, never fill the disk
servers = [DatabaseServer(url, schema=Filled(schema(label), 50)) for label in "EF"]
for _ in range(3):
    for server in servers:
        with server.create_database("turns") as database:
            with database.engine.connect() as connection:
                assert connection.execute(sa.text("select count(*) from rows")).scalar() > 0
room = core_of(servers[0]).room
print("turns-free-above-reserve", room.disk.free() - room.disk.reserve() >= 0)
for server in servers:
    server.close()

server = DatabaseServer(url, schema=Filled(schema("big"), 170))
try:
    with server.create_database("disk") as database:
        print("big clone made")
except DiskFullError as error:
    print("DiskFullError", error)
server.close()
stop_local_server()
"""


@support.once_per_ci
class DiskRoomTests(unittest.TestCase):
    def test_a_small_tmpfs_is_never_filled(self):
        if os.name != "posix" or os.geteuid() != 0:
            self.skipTest("needs root to mount a small tmpfs")
        if support.postgres_bindir() is None:
            self.skipTest("no PostgreSQL server binaries under /usr/lib/postgresql")
        base = tempfile.mkdtemp(prefix="elefast-disk-", dir="/var/tmp")
        os.chmod(base, 0o711)
        self.addCleanup(shutil.rmtree, base, True)
        mount, run_dir = Path(base) / "small", Path(base) / "run"
        mount.mkdir()
        run_dir.mkdir(mode=0o711)
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400m,mode=0711", "tmpfs", str(mount)],
                                 capture_output=True, text=True)
        if mounted.returncode != 0:
            self.skipTest(f"could not mount a tmpfs: {mounted.stderr.strip()}")
        self.addCleanup(subprocess.run, ["umount", "-l", str(mount)], capture_output=True)
        result = support.run_python(CHILD, env={
            "ELEFAST_DATABASE_URL": "", "ELEFAST_SERVER": "local", "ELEFAST_RUN_DIR": str(run_dir),
            "ELEFAST_DATA_DIR": str(mount), "ELEFAST_POSTGRES_BINDIR": str(support.postgres_bindir()),
            "ELEFAST_LOG": "info"}, timeout=600)
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        self.assertNotIn("No space left on device", result.stdout + result.stderr)
        self.assertEqual(result.stdout.splitlines().count("free-above-reserve True"), 4, result.stdout)
        self.assertIn("to make room on the server's disk", result.stderr)  # old templates went, by size
        self.assertIn("turns-free-above-reserve True", result.stdout)
        self.assertIn("DiskFullError No room for a clone of", result.stdout)
        self.assertIn(f"{mount}", result.stdout)
        self.assertIn("ELEFAST_DATA_DIR=/path/with/room", result.stdout)


if __name__ == "__main__":
    unittest.main()
