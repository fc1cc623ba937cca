"""File locks and client leases for sharing one local server between processes (POSIX).

A *lease* is a file in the leases directory that its client process holds an
exclusive ``flock`` on for as long as it lives. The kernel drops the lock when
the process dies, however it dies, so anyone who can take the lock knows the
client is gone. Forked children share their parent's lock.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Dict, List, Optional, Tuple, Type

__all__ = ["FileLock", "Lease", "cmdline", "lease_holders", "live_leases", "pid_alive"]


class FileLock:
    """An exclusive ``flock`` on ``path`` as a context manager, with an optional timeout."""

    def __init__(self, path: Path, timeout: Optional[float] = None) -> None:
        self.path = path
        self.timeout = timeout
        self._file: Optional[IO[bytes]] = None

    def __enter__(self) -> FileLock:
        self._file = os.fdopen(os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600), "ab")
        if self.timeout is None:
            fcntl.flock(self._file, fcntl.LOCK_EX)
            return self
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self._file.close()
                    raise TimeoutError(f"could not lock {self.path} within {self.timeout:g} s") from None
                time.sleep(0.01)

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        assert self._file is not None
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
        self._file = None


class Lease:
    """This process's lease on one local server: a locked file, held until the process exits."""

    _held: Dict[str, Lease] = {}

    def __init__(self, directory: Path) -> None:
        directory.mkdir(mode=0o700, exist_ok=True)
        self.path = directory / f"{os.getpid()}-{time.monotonic_ns()}"
        # A bare descriptor, never closed by us: the kernel drops the lock when the process
        # ends, after every atexit handler and finalizer (which may still need the server).
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(self._fd, str(os.getpid()).encode())

    @classmethod
    def hold(cls, directory: Path) -> Lease:
        """This process's lease in ``directory``, created on first call."""
        key = str(directory)
        lease = cls._held.get(key)
        if lease is None or lease.pid != os.getpid() or not lease.path.exists():
            lease = cls(directory)
            cls._held[key] = lease
        return lease

    @property
    def pid(self) -> int:
        """The process that took the lease."""
        return int(self.path.name.split("-")[0])

    def release(self) -> None:
        """Give the lease up now instead of at exit."""
        try:
            self.path.unlink()
        except OSError:
            pass
        try:
            os.close(self._fd)
        except OSError:
            pass
        self._held.pop(str(self.path.parent), None)


def _leases(directory: Path) -> List[Tuple[Path, bool]]:
    """Every lease file in ``directory`` and whether its process still holds it."""
    found = []
    try:
        entries = list(directory.iterdir())
    except FileNotFoundError:
        return []
    for entry in entries:
        try:
            with open(entry, "rb") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    found.append((entry, True))
                    continue
                found.append((entry, False))
        except FileNotFoundError:
            continue
    return found


def live_leases(directory: Path) -> int:
    """Count leases whose process still lives; remove the others."""
    alive = 0
    for entry, held in _leases(directory):
        if held:
            alive += 1
        else:
            entry.unlink(missing_ok=True)
    return alive


def lease_holders(directory: Path) -> List[int]:
    """The pids of the processes whose lease in ``directory`` is alive (held)."""
    return sorted({int(entry.name.split("-")[0]) for entry, held in _leases(directory)
                   if held and entry.name.split("-")[0].isdigit()})


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): trust kill()
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def cmdline(pid: int) -> str:
    """The command line of ``pid`` (Linux ``/proc``; empty string when unknown)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
