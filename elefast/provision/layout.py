"""Where the throwaway local server keeps its files, and as whom it runs.

Two places:

- the *cache* (persistent): the output of ``initdb`` per binaries version, and copies
  of binaries the server user could not read. ``$ELEFAST_CACHE_DIR``, else
  ``$XDG_CACHE_HOME/elefast`` or ``~/.cache/elefast``; as root ``/var/tmp/elefast-0``,
  since the server user must read it and root's home is private.
- the *run directory*, one per user and configuration: the data directory (kept
  between runs, with its templates), the unix socket directory, the log, the
  state file, the lock file and the client leases. On ``/dev/shm`` when it is a
  tmpfs with room, else in the temp directory. ``ELEFAST_DATA_DIR`` puts the data
  directory alone elsewhere, e.g. on a filesystem with reflinks (XFS, btrfs), where
  PostgreSQL 18 clones a template's files instead of copying them.

Both are created private to the user running elefast, and refused when another user owns them or
may write to them (:mod:`elefast.provision.private`); nothing else is chmod-ed.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from elefast.errors import UnsafePathError
from elefast.provision.binaries import Binaries
from elefast.provision.cache import cache_dir
from elefast.provision.private import check_private_dir, read_private

#: Bump when the server settings or the layout change, so old run directories are not reused.
LAYOUT_VERSION = "1"
#: Minimum free space on /dev/shm for the run directory to go there.
SHM_MIN_FREE = 512 * 1024 * 1024


@dataclass(frozen=True)
class ServerUser:
    """The account the server runs as when elefast runs as root."""

    name: str
    uid: int
    gid: int


def server_user() -> Optional[ServerUser]:
    """``postgres``, else ``nobody``, when running as root; None otherwise (run as ourselves)."""
    if os.name != "posix" or os.geteuid() != 0:
        return None
    import pwd

    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return ServerUser(name, entry.pw_uid, entry.pw_gid)
    raise RuntimeError(
        "elefast runs as root, and PostgreSQL refuses to; neither a 'postgres' nor a 'nobody' "
        "user exists to run it as. Run the tests as a normal user, or set ELEFAST_DATABASE_URL."
    )


def _run_base() -> Path:
    configured = os.environ.get("ELEFAST_RUN_DIR", "").strip()
    if configured:
        return Path(configured)
    shm = Path("/dev/shm")
    try:
        stat = os.statvfs(shm)
        if shm.is_dir() and stat.f_bavail * stat.f_frsize >= SHM_MIN_FREE and os.access(shm, os.W_OK):
            return shm
    except (OSError, AttributeError):
        pass
    return Path(tempfile.gettempdir())


def data_root_setting() -> Optional[Path]:
    """``ELEFAST_DATA_DIR`` as an absolute path, or None when unset."""
    configured = os.environ.get("ELEFAST_DATA_DIR", "").strip()
    return Path(configured).expanduser().resolve() if configured else None


@dataclass(frozen=True)
class Layout:
    """Every path of one local server configuration."""

    binaries: Binaries
    user: Optional[ServerUser]
    run_dir: Path
    cache: Path
    #: Where the data directory lives when not in the run directory (``ELEFAST_DATA_DIR``).
    data_root: Optional[Path] = None

    @classmethod
    def for_binaries(cls, binaries: Binaries) -> Layout:
        """The layout for ``binaries`` and the current user."""
        user = server_user()
        data_root = data_root_setting()
        key = f"{LAYOUT_VERSION}|{binaries.fingerprint()}|{user.name if user else ''}"
        if data_root is not None:  # another data directory is another server
            key += f"|{data_root}"
        digest = hashlib.sha256(key.encode()).hexdigest()[:10]
        uid = os.geteuid() if os.name == "posix" else 0
        name = f"elefast-{uid}-{digest}"
        return cls(binaries, user, _run_base() / name, cache_dir(), data_root / name if data_root else None)

    # files of the run directory
    @property
    def data(self) -> Path:
        """The data directory (kept between runs)."""
        return (self.data_root or self.run_dir) / "data"

    @property
    def socket_dir(self) -> Path:
        """The private directory holding the unix socket."""
        return self.run_dir / "sock"

    @property
    def log(self) -> Path:
        """The server's log file."""
        return self.run_dir / "postgres.log"

    @property
    def state(self) -> Path:
        """JSON written by the supervisor once the server is ready."""
        return self.run_dir / "state.json"

    @property
    def lock(self) -> Path:
        """Lock file taken around starting, joining and stopping."""
        return self.run_dir / "lock"

    @property
    def leases(self) -> Path:
        """One locked file per client process."""
        return self.run_dir / "leases"

    @property
    def keep(self) -> Path:
        """Present while ``python -m elefast server start`` wants the server kept running."""
        return self.run_dir / "keep"

    @property
    def password_file(self) -> Path:
        """The TCP password of the ``postgres`` role (unix socket connections need none)."""
        return self.run_dir / "password"

    # files of the cache
    @property
    def initdb_cache(self) -> Path:
        """The cached ``initdb`` output for these binaries."""
        return self.cache / f"initdb-{self.binaries.fingerprint()}"

    def read_state(self) -> Optional[Dict[str, Any]]:
        """The state file's content, or None when absent or unreadable."""
        if not self.run_dir.exists():
            return None
        check_private_dir(self.run_dir, "the local server's run directory")  # another user's: refused
        try:
            text = read_private(self.state, "the local server's state file")
            return json.loads(text) if text else None
        except UnsafePathError:
            raise
        except (OSError, ValueError):
            return None
