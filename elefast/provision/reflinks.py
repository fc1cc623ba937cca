"""Does a directory's filesystem share blocks between copies (reflinks: XFS, btrfs, ...)?

PostgreSQL 18's ``file_copy_method = clone`` makes ``CREATE DATABASE ... STRATEGY FILE_COPY``
clone the template's files instead of copying them, in time that does not grow with the
template's size; on a filesystem without reflinks the server would fail every clone, so the
throwaway server asks for it only where :func:`supported` says a clone works.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

__all__ = ["supported"]

#: ``FICLONE`` (``_IOW(0x94, 9, int)``): clone a whole file, Linux 4.5+.
_FICLONE = 0x40049409


def supported(directory: Path) -> bool:
    """True if a file made in ``directory`` can be cloned there (Linux ``FICLONE``); False otherwise."""
    if not sys.platform.startswith("linux"):
        return False  # macOS's clonefile is not probed: PostgreSQL copies there, as before
    import fcntl

    try:
        with tempfile.TemporaryDirectory(dir=directory, prefix=".elefast-reflink-") as scratch:
            source, target = Path(scratch) / "a", Path(scratch) / "b"
            source.write_bytes(b"elefast" * 1024)
            with open(source, "rb") as read, open(target, "wb") as write:
                fcntl.ioctl(write.fileno(), _FICLONE, read.fileno())
            return target.read_bytes() == source.read_bytes()
    except OSError:
        return False


if __name__ == "__main__":  # python -m elefast.provision.reflinks DIR
    print(supported(Path(sys.argv[1] if len(sys.argv) > 1 else os.getcwd())))
