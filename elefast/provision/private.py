"""Files and directories private to the user running elefast: nobody else on the machine gets in.

Every directory elefast makes or reuses (the cache, the run directories, the checkout registry)
goes through :func:`private_dir`: created with its mode from the start (``mkdir`` with the mode,
never widened afterwards), then opened without following a symbolic link and checked on the open
descriptor: it must belong to this user and be writable by nobody else. One that another user
made first (a fixed name in ``/var/tmp`` or ``/dev/shm`` can be taken by anyone) is refused with
:class:`~elefast.errors.UnsafePathError`, naming it, its owner and mode, and the fix. The directories
the server user gets (data, socket) go through :func:`server_dir`: the same, then given their owner
and mode on the open descriptor.

Files that hold secrets or data (password files, logs, state, checkout records, remembered
program lookups) are written by :func:`write_private`: a new file made ``0600`` by ``open`` itself
(no window where it is readable), then renamed into place. :func:`read_private` reads one only
after checking, on the open descriptor, that this user owns it and nobody else may write it.

The anchors: PostgreSQL refuses a data directory with group or other permissions; OpenSSH refuses
keys and configs with loose modes; :func:`tempfile.mkdtemp` makes ``0700`` directories.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Optional, Tuple, Union

from elefast.errors import UnsafePathError

__all__ = ["check_private_dir", "describe", "foreign_process", "open_private", "private_dir", "process_start",
           "read_private", "server_dir", "write_private"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _me() -> int:
    return os.geteuid() if hasattr(os, "geteuid") else -1


def _owner_name(uid: int) -> str:
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def describe(path: Union[str, Path], info: os.stat_result) -> str:
    """``path``, its owner and mode, for an error message."""
    return f"{path} (owner {_owner_name(info.st_uid)}, mode {oct(stat.S_IMODE(info.st_mode))})"


def _check(path: Union[str, Path], info: os.stat_result, what: str, owners: Tuple[int, ...] = ()) -> None:
    if os.name != "posix":
        return
    if info.st_uid not in (owners or (_me(),)):
        raise UnsafePathError(
            f"elefast will not use {what} {describe(path, info)}: it belongs to another user, who could plant or "
            f"read what elefast keeps there. Remove it (as its owner or root), or point elefast elsewhere "
            f"(ELEFAST_CACHE_DIR, ELEFAST_RUN_DIR, ELEFAST_DATA_DIR or TMPDIR at a directory of your own)."
        )
    if info.st_mode & 0o022:
        raise UnsafePathError(
            f"elefast will not use {what} {describe(path, info)}: other users may write to it. "
            f"Make it private (chmod go-w {path}), or remove it and let elefast make it again."
        )


def private_dir(path: Path, what: str = "the directory", mode: int = 0o700) -> Path:
    """Make ``path`` (missing parents too) with ``mode``, or check the one there: this user's, not a
    symbolic link, writable by nobody else. ``mode`` may grant others search (``0o711``: a server user
    entering the run directory), never write. Returns ``path``."""
    if mode & 0o022:
        raise ValueError(f"a private directory's mode may not let others write: {oct(mode)}")
    if not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(path, mode)  # the umask can only take bits away
    except FileExistsError:
        pass
    return check_private_dir(path, what)


def _open_dir(path: Path, what: str) -> int:
    """A descriptor on the directory at ``path`` itself, never what a symbolic link there points to."""
    try:
        return os.open(path, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC)
    except OSError as error:  # ELOOP / ENOTDIR: a symbolic link or a file planted under the name
        if isinstance(error, FileNotFoundError):
            raise
        info = os.lstat(path)
        raise UnsafePathError(
            f"elefast will not use {what} {describe(path, info)}: it is not a plain directory ({error.strerror}). "
            f"Remove it, and let elefast make it again."
        ) from None


def check_private_dir(path: Path, what: str = "the directory") -> Path:
    """Check the directory at ``path`` as :func:`private_dir` does, on an open descriptor; returns ``path``."""
    if os.name != "posix":
        return path
    fd = _open_dir(path, what)
    try:
        _check(path, os.fstat(fd), what)
    finally:
        os.close(fd)
    return path


def server_dir(path: Path, uid: int, gid: int, what: str = "the directory") -> Path:
    """Make ``path`` a directory ``0700`` of ``uid:gid`` (the server user when we are root, else us), or
    take the one there when it is ours or theirs and writable by nobody else: created with its mode,
    then opened without following a symbolic link, checked, and given its owner and mode on that
    descriptor. Its parent (which must exist) must not let another user swap it: owned by root, us or
    ``uid``, and writable by nobody else unless sticky (``/tmp``'s ``1777``). Returns ``path``."""
    if os.name != "posix":
        path.mkdir(exist_ok=True)
        return path
    owners = (_me(), uid)
    parent = os.stat(path.parent)
    if parent.st_uid not in (0, *owners) or (parent.st_mode & 0o022 and not parent.st_mode & stat.S_ISVTX):
        raise UnsafePathError(
            f"elefast will not make {what} {path} in {describe(path.parent, parent)}: another user could swap "
            f"it there. Use a directory that is yours (or root's), writable by nobody else or sticky "
            f"(chmod +t, as /tmp is)."
        )
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    fd = _open_dir(path, what)
    try:
        info = os.fstat(fd)
        _check(path, info, what, owners)
        if (info.st_uid, info.st_gid) != (uid, gid):
            os.fchown(fd, uid, gid)
        if stat.S_IMODE(info.st_mode) != 0o700:
            os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
    return path


def open_private(path: Path, flags: int = os.O_WRONLY | os.O_APPEND) -> int:
    """Open (create ``0600``) a file of ours for writing, e.g. a log; checked like :func:`read_private`."""
    fd = os.open(path, flags | os.O_CREAT | _NOFOLLOW | _CLOEXEC, 0o600)
    try:
        info = os.fstat(fd)
        _check(path, info, "the file")
        if info.st_mode & 0o077:  # made by an earlier version with the umask's mode
            os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_private(path: Path, data: Union[str, bytes]) -> None:
    """Replace ``path`` with ``data`` in a file that is ``0600`` from the moment it exists."""
    payload = data.encode() if isinstance(data, str) else data
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        os.unlink(temporary)
    except FileNotFoundError:
        pass
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def read_private(path: Path, what: str = "the file") -> Optional[str]:
    """``path``'s text, or None when it does not exist; :class:`~elefast.errors.UnsafePathError` when
    another user owns it or may write it (or it is a symbolic link)."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as error:
        if not path.is_symlink():
            raise
        raise UnsafePathError(f"elefast will not read {what} {path}: it is a symbolic link. Remove it.") from error
    with os.fdopen(fd, "rb") as handle:
        _check(path, os.fstat(handle.fileno()), what)
        return handle.read().decode()


def process_start(pid: int) -> Optional[str]:
    """What tells process ``pid`` from a later one given the same number: its start time (Linux:
    ``/proc/PID/stat``'s 22nd field, in clock ticks since boot), or None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read().decode(errors="replace")
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()  # after "pid (comm) ": state is field 3
    return fields[19] if len(fields) > 19 else None


def foreign_process(pid: int, uid: int, program: Path) -> Optional[str]:
    """Why process ``pid`` is not ``program`` run by ``uid`` (Linux: ``/proc/PID``'s owner and ``exe``
    link), or None when it is. Where that cannot be read, the answer is a reason too."""
    try:
        owner = os.stat(f"/proc/{pid}").st_uid
        running = os.readlink(f"/proc/{pid}/exe")
    except OSError as error:
        return f"its owner and program cannot be read from /proc ({error.strerror})"
    if owner != uid:
        return f"it belongs to {_owner_name(owner)}, not {_owner_name(uid)}"
    if running != os.path.realpath(program):
        return f"it runs {running}, not {program}"
    return None
