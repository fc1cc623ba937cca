"""Databases for other processes: ``python -m elefast checkout`` and ``release``.

``checkout`` starts a holder: a small detached process that builds (or reuses) the template,
takes a fresh clone and owns it, as a test process would, until ``release NAME``, or until its
``--hold`` time is up. Ownership is elefast's usual lease (an advisory lock held by the holder's
connection), so a holder that is killed leaves a database the next run's sweep drops. The
holder's pid is recorded in a small file per database, which ``release`` reads.

``checkout`` prints one line for the caller: the database's URL (the throwaway server's needs no
password; a password of a server you gave is shown as ``***``), or with ``--json`` an object
with ``name``, ``url``, ``host``, ``port``, ``database``, ``holder_pid`` and ``expires``.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from elefast.errors import ConfigurationError
from elefast.provision.locks import pid_alive
from elefast.provision.private import private_dir, process_start, read_private, write_private

#: How ``checkout`` hands the server URL to its holder: in that child's environment alone, never on a
#: command line (which every user of the machine can read in ``ps``).
URL_VARIABLE = "ELEFAST_HOLD_URL"

__all__ = ["hold", "registry_dir", "release", "schema_from", "start_holder"]


def registry_dir() -> Path:
    """Where holders record themselves (one ``NAME.json`` per database), private to this user."""
    path = Path(tempfile.gettempdir()) / f"elefast-checkouts-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    return private_dir(path, "the checkout registry")


def schema_from(schema: Optional[str], alembic: Optional[str], sql: Optional[List[str]]) -> Any:
    """The migrator the options name: ``--schema module:attribute`` (a MetaData, a declarative base
    or a migrator), ``--alembic`` (alembic.ini or a migrations folder), or ``--sql`` files/folders."""
    given = [option for option in (schema, alembic, sql) if option]
    if len(given) > 1:
        raise ConfigurationError("Give one of --schema, --alembic and --sql.")
    if alembic:
        from elefast.extras.alembic import AlembicMigrator

        return AlembicMigrator(alembic)
    if sql:
        from elefast.sql_files import SQLFileMigrator

        return SQLFileMigrator(*sql)
    if not schema:
        return None
    from elefast.migrators import MetadataMigrator, check_schema

    module_name, _, attribute = schema.partition(":")
    sys.path.insert(0, os.getcwd())
    try:
        value: Any = importlib.import_module(module_name)
        for part in attribute.split(".") if attribute else []:
            value = getattr(value, part)
    except (ImportError, AttributeError) as error:
        raise ConfigurationError(f"--schema {schema!r} does not load ({error}): give package.module:attribute, "
                                 "e.g. app.models:Base.metadata.") from error
    if hasattr(value, "migrate") or hasattr(value, "migrate_async"):
        return check_schema(value, is_async=False)
    metadata = getattr(value, "metadata", value)
    return MetadataMigrator(metadata)


def start_holder(argv: List[str], timeout: float, url: Optional[str] = None) -> Dict[str, Any]:
    """Start the holder (``python -m elefast _hold ARGV``), detached; return what it reported.

    ``url`` (the server, which may hold a password) reaches the holder in its environment only.
    """
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    env.pop(URL_VARIABLE, None)
    if url:
        env[URL_VARIABLE] = url
    holder = subprocess.Popen([sys.executable, "-m", "elefast", "_hold", *argv], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                              text=True)
    assert holder.stdout is not None and holder.stderr is not None
    found: List[str] = []
    reader = threading.Thread(target=lambda: found.append(holder.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    line = found[0] if found else ""
    if not line.strip():
        if holder.poll() is None:
            holder.kill()
        error = holder.stderr.read().strip().splitlines()
        raise ConfigurationError(error[-1] if error else f"the holder gave no database within {timeout:g} s.")
    holder.stdout.close()
    holder.stderr.close()
    return json.loads(line)  # type: ignore[no-any-return]


def hold(url: Any, schema: Any, hold_for: float, timeout: float) -> int:
    """The holder's body: make the database, report it on stdout, keep it until released or expired."""
    from elefast import DatabaseServer, provision
    from elefast._engines.urls import safe_url
    from elefast._server import readiness

    try:
        found = provision.resolve(url, timeout=max(timeout, provision.START_TIMEOUT))
    except Exception as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if url:
        readiness.configured(url, "--url")
    server = DatabaseServer(found, schema=schema)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        server.ensure_is_ready(timeout=timeout)
        database = server.create_database(prefix="elefast_checkout")
    except Exception as error:
        print(f"error: {error}", file=sys.stderr)
        server.close()
        return 2
    record = registry_dir() / f"{database.name}.json"
    expires = time.time() + hold_for
    target = database.url
    report = {"name": database.name, "url": safe_url(target), "host": target.host or target.query.get("host"),
              "port": target.port, "database": database.name, "holder_pid": os.getpid(),
              "expires": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))}
    try:
        write_private(record, json.dumps({"pid": os.getpid(), "start": process_start(os.getpid()),
                                          "expires": expires}))
        print(json.dumps(report), flush=True)
        quiet = os.open(os.devnull, os.O_WRONLY)  # the caller has gone: nothing may write to its pipes
        os.dup2(quiet, 1)
        os.dup2(quiet, 2)
        stop.wait(hold_for)
    finally:
        database.drop()
        server.close()
        record.unlink(missing_ok=True)
    return 0


def release(name: str, timeout: float = 30) -> str:
    """Tell the holder of ``name`` to drop it; return what happened (raise ConfigurationError if unknown)."""
    record = registry_dir() / f"{Path(name).name}.json"
    try:
        entry = json.loads(read_private(record, "the checkout record") or "")
        pid, started = int(entry["pid"]), entry.get("start")
    except (OSError, KeyError, TypeError, json.JSONDecodeError):
        raise ConfigurationError(f"No checkout named {name!r} here: it was released, its time ran out, or it was "
                                 "checked out by another user or machine.") from None
    if not pid_alive(pid):
        record.unlink(missing_ok=True)
        return f"{name}: its holder was gone; the next run's sweep drops the database"
    now = process_start(pid)
    if started is None or now is None:
        raise ConfigurationError(f"Not signalling pid {pid}: the record of {name} names it, but its start time "
                                 f"cannot be matched ({'the record has none' if started is None else 'no /proc here'})"
                                 f", and a pid alone may name another process. Check `ps -p {pid} -o pid,user,lstart,"
                                 f"args` and stop the holder by hand if it is one; the database stays until its hold "
                                 f"ends, and the next run's sweep drops it after that.")
    if now != str(started):
        raise ConfigurationError(f"Not signalling pid {pid}: the record of {name} names it, but it is not that "
                                 f"checkout's holder (it started at another time, or the record was altered). The "
                                 f"database stays until its hold ends; the next run's sweep drops it after that.")
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        record.unlink(missing_ok=True)
        return f"{name}: its holder was gone; the next run's sweep drops the database"
    deadline = time.monotonic() + timeout
    while record.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return f"released {name}" if not record.exists() else f"{name}: asked its holder (pid {pid}) to drop it"
