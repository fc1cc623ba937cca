"""Disk room on the throwaway local server: the pool and the templates never fill it.

The throwaway server keeps its data on tmpfs (``/dev/shm``) where it can, whose size is a
share of the machine's memory; a pool that keeps clones ahead of a 1 GB template, or the
templates of many old schemas kept across runs, could fill it. :class:`DiskRoom` watches the
filesystem of the data directory (one ``statvfs`` call): clones are made ahead only while
there is room for them beside a reserve, old unused templates are dropped by size when room
runs short, and a clone that still cannot fit fails with :class:`~elefast.errors.DiskFullError`
naming the directory and the fix. Servers elefast did not start are not watched (their disk
is not ours to see); PostgreSQL's own error reaches the caller there.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Dict, Optional

from sqlalchemy import URL, Connection, text

from elefast._base import sql as _sql
from elefast._base.log import logger
from elefast._server import ownership
from elefast._server.pool import shed_ready
from elefast.errors import DiskFullError

__all__ = ["RESERVE_BYTES", "RESERVE_SHARE", "CloneRoom", "DiskRoom"]

#: Room always left free on the data directory's filesystem: at least this many bytes ...
RESERVE_BYTES = 64 * 1024 * 1024
#: ... and at least this share of its size.
RESERVE_SHARE = 0.05


class DiskRoom:
    """The free space of one local server's data directory."""

    def __init__(self, data_dir: Path, run_dir: Optional[Path] = None) -> None:
        self.data_dir = data_dir
        #: The local server's lease directory (``Layout.leases``): a process holding a lease there
        #: keeps the server up; None when not known.
        self.leases = run_dir / "leases" if run_dir is not None else None

    @classmethod
    def for_url(cls, url: URL) -> Optional[DiskRoom]:
        """The room of the throwaway local server ``url`` points at (its unix socket), else None."""
        host = url.query.get("host") or url.host or ""
        if isinstance(host, tuple):
            host = host[0] if host else ""
        if not host.startswith("/"):
            return None
        run_dir = Path(host).parent  # <run dir>/sock is where elefast's server listens
        config = run_dir / "config.json"
        if not config.is_file():
            return None
        try:
            import json

            data_root = json.loads(config.read_text()).get("data_root")
        except (OSError, ValueError):
            return None
        data_dir = (Path(data_root) if data_root else run_dir) / "data"
        return cls(data_dir, run_dir) if data_dir.is_dir() else None

    def free(self) -> int:
        """Bytes free for unprivileged writers on the data directory's filesystem."""
        stat = os.statvfs(self.data_dir)
        return stat.f_bavail * stat.f_frsize

    def reserve(self) -> int:
        """Bytes kept free: the larger of :data:`RESERVE_BYTES` and :data:`RESERVE_SHARE` of the size."""
        stat = os.statvfs(self.data_dir)
        return max(RESERVE_BYTES, int(stat.f_blocks * stat.f_frsize * RESERVE_SHARE))

    def room_for(self, size: int) -> bool:
        """Whether ``size`` more bytes fit beside the reserve."""
        try:
            return self.free() - size >= self.reserve()
        except OSError:
            return True  # cannot tell: let PostgreSQL say

    def describe(self) -> str:
        """'<dir>: N MB free of M MB' for messages."""
        try:
            stat = os.statvfs(self.data_dir)
            return (f"{self.data_dir}: {stat.f_bavail * stat.f_frsize // 2**20} MB free of "
                    f"{stat.f_blocks * stat.f_frsize // 2**20} MB")
        except OSError:
            return str(self.data_dir)


class CloneRoom:
    """One server's clones against its disk: sizes of its templates, room ahead, room now.

    ``disk`` is None for a server elefast did not start: then every check passes.
    """

    #: Assumed size of a clone of a template not measured yet (an empty database is ~7.5 MB).
    UNKNOWN_SIZE = 8 * 1024 * 1024

    def __init__(self, disk: Optional[DiskRoom], connect: Callable[[], Connection]) -> None:
        self.disk = disk
        self._connect = connect
        self._sizes: Dict[str, int] = {}

    def measure(self, template: str, connection: Connection) -> None:
        """Remember ``template``'s size, when the disk is ours to watch."""
        if self.disk is not None:
            size = connection.execute(text(_sql.DATABASE_SIZE), {"name": template}).scalar()
            self._sizes[template] = int(size or 0)

    def size_of(self, template: Optional[str]) -> int:
        """Bytes a clone of ``template`` takes (as measured; a guess until then)."""
        return int(self._sizes.get(template or "", self.UNKNOWN_SIZE))

    def ahead(self, template: Optional[str], pending: int = 0) -> bool:
        """Whether a clone may be made ahead while ``pending`` others are being made: room for all
        of them and for the one a test may still need (``template`` None: the largest known)."""
        size = self.size_of(template) if template is not None else max(self._sizes.values(), default=0)
        return self.disk is None or self.disk.room_for((pending + 2) * max(size, self.UNKNOWN_SIZE))

    def make(self, template: Optional[str]) -> None:
        """Before a clone: if it would not fit, drop old templates no process uses, largest first;
        :class:`~elefast.errors.DiskFullError` if it still does not fit."""
        if self.disk is None or self.disk.room_for(self.size_of(template)):
            return
        shed_ready(template)  # this process's clones kept ahead for other schemas go first
        deadline = time.monotonic() + 10  # used clones on their way out (the pool drops them first now)
        while time.monotonic() < deadline:
            time.sleep(0.05)
            if self.disk.room_for(self.size_of(template)):
                return
        with self._connect() as connection:
            prune_for_space(self.disk, connection, self.size_of(template))
        if not self.disk.room_for(self.size_of(template)):
            raise DiskFullError(self.no_room(f"a clone of {template}" if template else "a new database"))

    def no_room(self, what: str) -> str:
        """The message when ``what`` does not fit."""
        where, reserve = "the server's data directory", 0
        if self.disk is not None:
            where = self.disk.describe()
            try:
                reserve = self.disk.reserve() // 2**20
            except OSError:
                pass
        return (f"No room for {what} on the throwaway server's disk ({where}; elefast keeps {reserve} MB free and "
                f"has dropped the old templates no process uses). Free space there, run fewer test processes at "
                f"once, or keep the server's data on a larger filesystem: ELEFAST_DATA_DIR=/path/with/room.")


def prune_for_space(disk: DiskRoom, connection: Connection, needed: int) -> None:
    """Drop elefast's fingerprinted templates that no process uses, largest first, until ``needed``
    bytes fit on the local server's disk. Templates in use hold a shared lock, so they are skipped."""
    rows = connection.execute(text(_sql.LIST_TEMPLATES), {"pattern": "%"}).all()
    ours = [(str(name), str(note)) for name, note in rows if str(note).startswith(_sql.TEMPLATE_MARK)]
    size_of = text(_sql.DATABASE_SIZE)
    sized = [(int(connection.execute(size_of, {"name": name}).scalar() or 0), name) for name, _ in ours]
    for size, name in sorted(sized, reverse=True):
        if disk.room_for(needed):
            return
        key = _sql.advisory_key(name)
        if not connection.execute(text(_sql.ADVISORY_TRY_LOCK), {"key": key}).scalar():
            continue  # in use by a process, or being built
        try:
            connection.execute(text(_sql.unmark_template(name)))
            ownership.drop(connection, name)
            logger.info("elefast dropped the unused template %s (%d MB) to make room on the server's disk",
                        name, size // 2**20)
        except Exception as error:
            say = logger.debug if _sql.is_gone(error) else logger.warning  # gone: another process dropped it
            say("elefast could not drop the old template %s: %s", name, error)
        finally:
            connection.execute(text(_sql.ADVISORY_UNLOCK), {"key": key})
