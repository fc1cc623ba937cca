"""Helpers shared by the tests: the server URL, catalog queries, throwaway roles and servers."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional

import psycopg

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def server_url() -> str:
    """The server the tests run against: ``ELEFAST_DATABASE_URL`` or the local default."""
    return os.environ.get("ELEFAST_DATABASE_URL") or DEFAULT_URL


def psycopg_url(url: Optional[str] = None) -> str:
    """``url`` (default :func:`server_url`) with the psycopg 3 driver named, for ``create_engine``.

    A bare ``postgresql://`` URL makes SQLAlchemy pick psycopg2, which is not a dependency.
    """
    return "postgresql+psycopg://" + (url or server_url()).split("://", 1)[1]


def libpq_dsn(url: Optional[str] = None) -> str:
    """``url`` (default :func:`server_url`) without a SQLAlchemy driver, for psycopg."""
    url = url or server_url()
    _scheme, rest = url.split("://", 1)
    return "postgresql://" + rest


def databases(like: str = "%") -> List[str]:
    """Names of the databases on the server whose name is LIKE ``like``."""
    with psycopg.connect(libpq_dsn(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY 1", (like,)
        ).fetchall()
    return [r[0] for r in rows]


def execute(sql: str, params: tuple = ()) -> None:
    """Run one autocommit statement on the server's maintenance database."""
    with psycopg.connect(libpq_dsn(), autocommit=True) as conn:
        conn.execute(sql, params)  # type: ignore[arg-type]


def unique_prefix(label: str = "t") -> str:
    """A database-name prefix no other test uses, to find exactly what one test made."""
    return f"eft_{label}_{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def role(createdb: bool = False) -> Iterator[str]:
    """A throwaway login role on the server (trust auth), dropped afterwards."""
    name = f"eft_role_{uuid.uuid4().hex[:8]}"
    execute(f'CREATE ROLE "{name}" LOGIN {"CREATEDB" if createdb else "NOCREATEDB"}')
    try:
        yield name
    finally:
        execute(f'DROP ROLE IF EXISTS "{name}"')


def url_with(**parts: str) -> str:
    """:func:`server_url` with some of user, password, host, port, database replaced."""
    from sqlalchemy import make_url

    url = make_url(server_url())
    mapping = {"user": "username", "database": "database", "password": "password",
               "host": "host", "port": "port"}
    return url.set(**{mapping[k]: (int(v) if k == "port" else v) for k, v in parts.items()}).render_as_string(
        hide_password=False
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def postgres_bindir() -> Optional[Path]:
    """The newest ``/usr/lib/postgresql/*/bin`` with initdb, or None."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    return candidates[-1].parent if candidates else None


@contextlib.contextmanager
def password_server(password: str, **settings: str) -> Iterator[str]:
    """A private PostgreSQL that requires ``password`` (scram) for user ``postgres``.

    Yields its URL. ``settings`` are server settings (``max_connections="6"``). Needs the
    server binaries; runs them as the ``postgres``
    user when the tests run as root. Raises ``unittest.SkipTest`` otherwise.
    """
    import unittest

    bindir = postgres_bindir()
    if bindir is None:
        raise unittest.SkipTest("no PostgreSQL server binaries under /usr/lib/postgresql")
    as_user = {}
    if os.geteuid() == 0:
        import pwd

        try:
            entry = pwd.getpwnam("postgres")
        except KeyError:
            raise unittest.SkipTest("running as root and there is no 'postgres' user") from None
        as_user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    base = Path(tempfile.mkdtemp(prefix="eft-pw-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    data = base / "data"
    pwfile = base / "pw"
    pwfile.write_text(password + "\n")
    if as_user:
        os.chown(base, as_user["user"], as_user["group"])
        os.chown(pwfile, as_user["user"], as_user["group"])
    port = free_port()
    proc = None
    try:
        subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=scram-sha-256",
             f"--pwfile={pwfile}", "--no-sync", "-E", "UTF8", "--locale=C"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **as_user,  # type: ignore[arg-type]
        )
        with open(base / "log", "wb") as log:
            proc = subprocess.Popen(
                [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(base),
                 "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                 *[part for key, value in settings.items() for part in ("-c", f"{key}={value}")]],
                stdout=log, stderr=subprocess.STDOUT, **as_user,  # type: ignore[arg-type]
            )
        url = f"postgresql://postgres:{password}@127.0.0.1:{port}/postgres"
        deadline = time.monotonic() + 15
        while True:
            try:
                psycopg.connect(url, connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the password test server did not start: "
                                       + (base / "log").read_text()[-2000:])
                time.sleep(0.05)
        yield url
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(base, ignore_errors=True)


def run_python(code: str, env: Optional[dict] = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter from the project root; capture its output."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", code], cwd=str(ROOT), env=full_env, capture_output=True, text=True,
        timeout=timeout,
    )


def drop_templates(prefix: str) -> None:
    """Drop the fingerprinted templates whose name starts with ``prefix`` (elefast keeps them on purpose)."""
    with psycopg.connect(libpq_dsn(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datistemplate AND datname LIKE %s "
            "AND coalesce(shobj_description(oid, 'pg_database'), '') LIKE 'elefast template%%'",
            (prefix.replace("_", "\\_") + "%",),
        ).fetchall()
        for (name,) in rows:
            conn.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE false')
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


FAILING_REVISION = '''"""Fails halfway: the first statement works, the second does not."""
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    op.execute("CREATE TABLE halfway (id integer)")
    op.execute("INSERT INTO no_such_table VALUES (1)")


def downgrade():
    op.execute("DROP TABLE halfway")
'''


def alembic_project_failing_halfway(directory):
    """A copy of tests/alembic_project in ``directory`` whose third migration fails halfway."""
    target = Path(directory) / "alembic_project"
    shutil.copytree(ROOT / "tests" / "alembic_project", target,
                    ignore=shutil.ignore_patterns("__pycache__"))
    (target / "migrations" / "versions" / "0003_halfway.py").write_text(FAILING_REVISION)
    return target / "alembic.ini"


#: Set by CI (``.ci/run``) for its runs on the oldest and newest Python: the tests marked
#: :func:`once_per_ci` are skipped there and run once, in the README's run.
SECONDARY_RUN = os.environ.get("EFT_SECONDARY_PYTHON") == "1"


def once_per_ci(cls: Any) -> Any:
    """Mark a test class that checks the server, the machine or the docs rather than the Python
    version (a full server, a full disk, detached checkouts, the docs site, init's scaffolds):
    skipped on CI's extra Python runs, which would only repeat it."""
    return unittest.skipIf(SECONDARY_RUN, "run once per CI, on the README's run (EFT_SECONDARY_PYTHON=1)")(cls)


def gone_soon(name: str, seconds: float = 15.0) -> List[str]:
    """``[]`` once database ``name`` is gone (dropped behind by a pool), else what is still there."""
    deadline = time.monotonic() + seconds
    while databases(name) and time.monotonic() < deadline:
        time.sleep(0.02)
    return databases(name)


def swept(server: Any, left: Callable[[], List[str]], seconds: float = 15.0) -> List[str]:
    """Sweep with ``server`` until ``left()`` is empty: ``[]``, else what is still there. After a SIGKILL
    the server may finish a clone the process was making, and the killed client's backend may hold
    its ownership lock, a moment after the process is gone."""
    deadline = time.monotonic() + seconds
    while True:
        server.sweep_orphans()
        names = left()
        if not names or time.monotonic() > deadline:
            return names
        time.sleep(0.05)


def left_after_exit(prefix: str, seconds: float = 35.0) -> List[str]:
    """The databases of ``prefix`` still there once a process that ended has had them dropped.

    A process ending on a server that is not the throwaway local one leaves what it owned to its
    detached dropper (``ELEFAST_DROP_AT_EXIT``, at most 30 s); fingerprinted templates, which
    elefast keeps on purpose, are dropped here. Returns at once when nothing is left."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            drop_templates(prefix)
        except psycopg.Error:
            pass  # the dropper dropped one meanwhile
        names = databases(prefix + "%")
        if not names or time.monotonic() > deadline:
            return names
        time.sleep(0.1)


def run_keeping_failed(test: Any, prefix: str, class_body: str) -> tuple:
    """Run, with ``ELEFAST_KEEP_FAILED=1``, a module whose class ``T`` (``database_prefix = prefix``
    plus ``class_body``) has a test that fails; (the run, the databases it kept), each kept one
    dropped at ``test``'s cleanup."""
    code = ("import unittest\nfrom elefast import PostgresTestCase\n"
            "class T(PostgresTestCase, unittest.TestCase):\n"
            f"    database_prefix = {prefix!r}\n{class_body}"
            "unittest.main(exit=False)\n")
    result = run_python(code, env={"ELEFAST_KEEP_FAILED": "1", "ELEFAST_DATABASE_URL": server_url(),
                                   "ELEFAST_DROP_AT_EXIT": "here"})  # what it did not keep is gone at its end
    kept = databases(prefix + "%")
    for name in kept:
        test.addCleanup(execute, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return result, kept


def process_lean(test: Any, lean: bool) -> None:
    """Put this process in the mode of a server with few connections (``lean``) or out of it, for
    ``test`` only (an earlier test that found a server full leaves the process lean)."""
    from elefast._engines import budget as _budget

    if _budget.is_lean() != lean:
        (_budget._lean.set if lean else _budget._lean.clear)()
        test.addCleanup(_budget._lean.clear if lean else _budget._lean.set)
