"""Bad input and security: every mistake gets its own error, in time, with the fix and no password.

Each bad-input row calls elefast the way a user would, on real servers: the
machine's (``ELEFAST_DATABASE_URL``, default 127.0.0.1:5432, trust) for roles and
permissions, and the scenario's local server (TCP with a password) for a wrong password.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple
from unittest import mock

from tests.reliability.harness import CASES, Harness, Row

PASSWORD = "pw-never-shown-9f3a"
MACHINE_URL = os.environ.get("ELEFAST_DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"


def _machine(**parts: Any) -> str:
    from sqlalchemy.engine import make_url

    return make_url(MACHINE_URL).set(**parts).render_as_string(hide_password=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ready(url: str, timeout: float = 3) -> None:
    from elefast import DatabaseServer

    server = DatabaseServer(url)
    try:
        server.ensure_is_ready(timeout=timeout)
    finally:
        server.close()


def _create(url: str, prefix: str = "relbad", schema: Any = None) -> None:
    from elefast import DatabaseServer

    server = DatabaseServer(url, schema=schema)
    try:
        server.ensure_is_ready(timeout=5)
        server.create_database(prefix=prefix).drop()
    finally:
        server.close()


def _no_createdb() -> None:
    import psycopg

    dsn = _machine(drivername="postgresql")
    role = "elefast_reliability_nocreatedb"
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(f'DROP ROLE IF EXISTS "{role}"')
        connection.execute(f'CREATE ROLE "{role}" LOGIN NOCREATEDB PASSWORD \'{PASSWORD}\'')
    try:
        _create(_machine(username=role, password=PASSWORD))
    finally:
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute(f'DROP ROLE IF EXISTS "{role}"')


def _made_safe(prefix: str) -> Optional[str]:
    """Not an error (issue 14): unsafe characters become '_'; the database is made, named safely, dropped."""
    import re

    from elefast import DatabaseServer

    server = DatabaseServer(MACHINE_URL)
    try:
        with server.create_database(prefix=prefix) as database:
            name = database.name
    finally:
        server.close()
    if re.fullmatch(r"[A-Za-z0-9_-]+_[0-9a-f]{16}", name):
        return None
    return f"unexpected name {name!r}"


def _long_prefix() -> Optional[str]:
    """Not an error (DESIGN.md): a long prefix is shortened and the random part kept whole."""
    from elefast._base import sql as _sql

    name = _sql.database_name("p" * 200)
    if len(name.encode()) == 63 and name[-17] == "_" and all(c in "0123456789abcdef" for c in name[-16:]):
        return None
    return f"unexpected name {name!r}"


def _binaries_not_found() -> None:
    from elefast.provision import binaries

    with mock.patch.object(binaries, "_DISTRO_GLOBS", ()), mock.patch.object(binaries, "wheel_bindir", lambda: None), \
            mock.patch.dict(os.environ, {"PATH": "/nonexistent", "ELEFAST_POSTGRES_BINDIR": ""}):
        binaries.find_binaries()


def _schema_not_a_migrator() -> None:
    from sqlalchemy import MetaData

    from elefast import DatabaseServer

    DatabaseServer(MACHINE_URL, schema=MetaData())  # type: ignore[arg-type]


def _alembic(ini: Path) -> Any:
    from elefast.extras.alembic import AlembicMigrator

    return AlembicMigrator(ini)


#: (what is wrong, how to provoke it, expected error class name, words the message must hold, seconds allowed)
Case = Tuple[str, Callable[[], Any], str, Sequence[str], float]


def cases(wrong_password_url: str) -> List[Case]:
    """Every row of the bad-input table."""
    from tests import support

    broken_ini = support.ROOT / "tests" / "alembic_broken" / "alembic.ini"
    return [
        ("malformed URL (port)", lambda: _ready(f"postgresql://u:{PASSWORD}@h:port/db"),
         "InvalidURLError", ["postgresql://user:password@host:5432"], 1),
        ("not a URL", lambda: _ready("just some words"), "InvalidURLError", ["postgresql://"], 1),
        ("non-PostgreSQL dialect", lambda: _ready(f"mysql://u:{PASSWORD}@h/db"),
         "InvalidURLError", ["postgresql://"], 1),
        ("unknown driver", lambda: _ready(f"postgresql+nosuch://u:{PASSWORD}@h/db"),
         "InvalidURLError", ["postgresql+psycopg://"], 1),
        ("driver not installed", lambda: _ready(f"postgresql+pg8000://u:{PASSWORD}@h/db"),
         "DriverNotInstalledError", ["pip install pg8000"], 1),
        ("unreachable host (refused)", lambda: _ready(f"postgresql://u:{PASSWORD}@127.0.0.1:{_free_port()}/db"),
         "DatabaseNotReadyError", ["127.0.0.1"], 3 + 2),
        ("unroutable host (timeout 3 s)", lambda: _ready(f"postgresql://u:{PASSWORD}@10.255.255.1:5432/db"),
         "DatabaseNotReadyError", ["10.255.255.1"], 3 + 2),
        ("wrong password", lambda: _ready(wrong_password_url, timeout=30),
         "ServerRejectedError", ["password"], 3),
        ("missing role", lambda: _ready(_machine(username="no_such_role_elefast", password=PASSWORD), timeout=30),
         "ServerRejectedError", ["no_such_role_elefast"], 3),
        ("no CREATEDB permission", _no_createdb, "ServerRejectedError", ["CREATEDB"], 5),
        ("prefix with quotes: made safe", lambda: _made_safe('relbad"; DROP DATABASE postgres; --'), "", [], 5),
        ("prefix with unicode: made safe", lambda: _made_safe("relbad_données"), "", [], 5),
        ("prefix with nothing safe", lambda: _create(MACHINE_URL, prefix='"[]"'),
         "InvalidPrefixError", ["ASCII letters"], 5),
        ("prefix too long (200 chars): shortened", _long_prefix, "", [], 1),
        ("schema that is not a migrator", _schema_not_a_migrator,
         "ConfigurationError", ["MetadataMigrator(metadata)"], 1),
        ("Alembic config that does not exist", lambda: _alembic(Path("/nonexistent/alembic.ini")),
         "ConfigurationError", ["/nonexistent/alembic.ini"], 1),
        ("broken env.py", lambda: _create(MACHINE_URL, schema=_alembic(broken_ini)),
         "MigrationError", ["env.py is broken on purpose"], 10),
        ("PostgreSQL binaries not found", _binaries_not_found,
         "BinariesNotFoundError", ["Searched:", "PATH", "pip install"], 5),
    ]


def bad_input_rows(wrong_password_url: str) -> List[Row]:
    """One row per bad input: the right error class, in time, naming the fix, password hidden."""
    rows = []
    for label, provoke, expected, words, seconds in cases(wrong_password_url):
        row = Row(f"bad input: {label}", runs=1)
        rows.append(row)
        started = time.monotonic()
        error: Optional[BaseException] = None
        try:
            outcome = provoke()
        except Exception as caught:
            error, outcome = caught, None
        took = time.monotonic() - started
        if not expected:  # not an error: the check returned its own complaint, if any
            if error is not None or outcome is not None:
                row.fail(f"{error or outcome!r}")
            continue
        names = [cls.__name__ for cls in type(error).__mro__] if error is not None else []
        text = f"{error}"
        if error is None:
            row.fail("no error was raised")
        elif expected not in names or "ElefastError" not in names:
            row.fail(f"expected {expected}, got {type(error).__name__}: {text}")
        elif any(word not in text for word in words):
            row.fail(f"the message lacks {words}: {text}")
        elif PASSWORD in text or PASSWORD in repr(error):
            row.fail(f"the password is shown: {text}")
        elif took > seconds:
            row.fail(f"took {took:.1f} s (allowed {seconds} s)")
    return rows


def security(h: Harness) -> List[Row]:
    """A suite on a password URL shows the password nowhere; the server listens on 127.0.0.1 only.

    Also runs the bad-input rows, while the scenario server is kept up for the wrong password.
    """
    import subprocess
    import sys

    row = Row("password never shown; listens on socket + 127.0.0.1 only")
    keep = subprocess.run([sys.executable, "-m", "elefast", "server", "start"], env=h.env,
                          capture_output=True, text=True, timeout=120)
    rows = [row]
    try:
        state, password = h.state() or {}, _server_password(h)
        if keep.returncode != 0 or not state or not password:
            row.fail(f"could not start the scenario server: {keep.stdout}{keep.stderr}")
            return rows
        port = int(str(state["port"]))
        url = f"postgresql://postgres:{password}@127.0.0.1:{port}/postgres"
        env = {k: v for k, v in h.env.items() if k != "ELEFAST_SERVER"}
        env.update(ELEFAST_DATABASE_URL=url, ELEFAST_LOG="debug", RELIABILITY_PREFIX="relsec")
        result = h.run(f"{CASES}.Work {CASES}.AsyncWork {CASES}.FailsOnPurpose", env)
        row.runs += 1
        if "FAIL: test_fails" not in result.stdout or "ERROR: test_errors" not in result.stdout:
            row.fail(f"the suite did not run as expected:\n{result.stdout[-2000:]}")
        logs = "".join(p.read_text(errors="replace") for p in Path(h.run_base).glob("elefast-*/*.log"))
        for where, text in (("the run's output", result.stdout), ("the server's logs", logs)):
            if password in text:
                row.fail(f"the password appears in {where}")
        listening = _listening_addresses(port)
        if listening != {"127.0.0.1"}:
            row.fail(f"the server listens on {sorted(listening)}, not only 127.0.0.1")
        socket_dir = Path(str(state["socket_dir"]))
        if socket_dir.stat().st_mode & 0o077:
            row.fail(f"the socket directory {socket_dir} is open to other users")
        left = h.leftovers("relsec")
        row.leftovers += len(left)
        wrong = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{port}/postgres"
        rows.extend(bad_input_rows(wrong))
    finally:
        subprocess.run([sys.executable, "-m", "elefast", "server", "stop"], env=h.env,
                       capture_output=True, text=True, timeout=60)
    row.leftovers += h.servers_left_after()
    return rows


def _server_password(h: Harness) -> str:
    for path in Path(h.run_base).glob("elefast-*/password"):
        return path.read_text().strip()
    return ""


def _listening_addresses(port: int) -> set:  # type: ignore[type-arg]
    """Addresses with a listening TCP socket on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table, size in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] != "0A" or int(port_hex, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)
            if size == 8:
                found.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
            else:
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                found.add(socket.inet_ntop(socket.AF_INET6, words))
    return found

