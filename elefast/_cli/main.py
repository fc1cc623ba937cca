"""The command line: ``python -m elefast server|sweep|init|doctor|check|run`` (also the ``elefast`` script).

- ``server start|stop|status|url``: the throwaway local server;
- ``sweep [--dry-run] [--templates]``: drop databases left by test processes that are gone (and the
  kept templates no process uses);
- ``init``: write a base test module for the project in the current directory
  (``init --pytest`` prints a ``conftest.py`` with fixtures on stdout instead);
- ``doctor``: where a test run would get its server, versions, what is missing;
- ``check --alembic alembic.ini --metadata app.models:Base.metadata``: build the
  migrations into a fresh database and list every way it differs from the models;
- ``run --env DATABASE_URL -- python -m unittest``: run a command with the URL of an empty
  scratch database in a variable (for apps that connect when imported), dropped afterwards.

``server start`` starts the throwaway local PostgreSQL and keeps it running
until ``server stop``; test runs in between join it instead of starting their
own. ``status`` and ``url`` report on it (the URL points at a private unix
socket and holds no password).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional

__all__ = ["main"]


def _url_for(driver: str, url: str) -> str:
    if driver == "libpq":
        return "postgresql://" + url.split("://", 1)[1]
    return url.replace("postgresql+psycopg://", f"postgresql+{driver}://", 1)


def _server(args: argparse.Namespace) -> int:
    from elefast.errors import ElefastError
    from elefast.provision import local

    try:
        if args.action == "start":
            url = local.keep_local_server(timeout=args.timeout)
            print(_url_for(args.driver, url.render_as_string(hide_password=True)))
            print("The server keeps running until: python -m elefast server stop", file=sys.stderr)
            return 0
        if args.action == "stop":
            clients = [] if args.force or local.server_status() is None else local.other_clients()
            if clients:  # test processes are using it: do not pull it from under them
                local.stop_when_unused()
                print(f"in use by {len(clients)} test process(es); the server stops on its own about a second "
                      "after the last one ends:")
                for pid, command in clients:
                    print(f"  pid {pid}: {command.strip() or '(command unknown)'}")
                print("To stop it now (their tests fail): python -m elefast server stop --force")
                return 0
            stopped = local.stop_local_server(timeout=args.timeout)
            print("stopped" if stopped else "not running")
            return 0
        status = local.server_status()
        if status is None:
            print("not running (start one with: python -m elefast server start)", file=sys.stderr)
            return 1
        if args.action == "url":
            print(_url_for(args.driver, status["url"]))
        elif args.json:
            print(json.dumps(status, indent=2))
        else:
            print(f"running: PostgreSQL {'.'.join(map(str, status['version']))} from {status['bindir']}")
            print(f"  url:      {_url_for(args.driver, status['url'])}")
            print(f"  pid:      {status['postgres_pid']} (supervisor {status['supervisor_pid']})")
            kept = " (kept running by server start)" if status["keep"] else ""
            print(f"  clients:  {status['clients']}{kept}")
            print(f"  data:     {status['run_dir']}")
        return 0
    except ElefastError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _sweep(args: argparse.Namespace) -> int:
    import os

    from elefast.errors import ElefastError
    from elefast.provision import ENV_URL, local
    from elefast.sync import DatabaseServer

    url = args.url or os.environ.get(ENV_URL, "").strip()
    if not url:
        status = local.server_status()
        if status is None:
            print(f"Nothing to sweep: no --url, no {ENV_URL}, and no local server running.", file=sys.stderr)
            return 1
        url = local.ensure_local_server()
    from elefast._server import ownership
    from elefast._server.core import core_of
    from elefast._server.retention import list_templates

    try:
        server = DatabaseServer(url).ensure_is_ready(timeout=args.timeout)
        names = server.sweep_orphans(dry_run=args.dry_run)
        with core_of(server).connect() as connection:
            kept = ownership.find_kept(connection) if args.dry_run else []
            templates = list_templates(connection, drop=not args.dry_run) if args.templates else []
        server.close()
    except ElefastError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for template in templates:
        state = ("in use: kept" if template["in_use"] else "dropped" if template["dropped"]
                 else "would drop" if args.dry_run else "not dropped")
        print(f"template {template['name']}: {template['mb']} MB, built {template['built']}, "
              f"last used {template['used']}: {state}")
    verb = "would drop" if args.dry_run else "dropped"
    for name in names:
        print(f"{verb} {name}")
    for name in kept:
        print(f"kept {name} (never swept; drop it yourself when done)")
    print(f"{len(names)} orphaned database(s) found; {'none dropped (dry run)' if args.dry_run else 'all dropped'}",
          file=sys.stderr)
    return 0


def _stdout_is_a_python_file() -> bool:
    """``init >> tests/conftest.py`` (upstream's README): stdout is a ``.py`` file."""
    import os

    try:
        return os.readlink("/proc/self/fd/1").endswith(".py")
    except OSError:
        return False


def _init(args: argparse.Namespace) -> int:
    from elefast._cli import scaffold as _scaffold

    upstream_flags = args.async_preference or args.driver or args.no_interaction
    return _scaffold.run(args, pytest_style=bool(args.pytest or upstream_flags or _stdout_is_a_python_file()))


def _doctor(args: argparse.Namespace) -> int:
    from elefast._cli import doctor as _doctor

    report = _doctor.diagnose(timeout=args.timeout)
    print("\n".join(report.lines))
    return 0 if report.server_found else 1


def _check(args: argparse.Namespace) -> int:
    import importlib
    import os

    from elefast import DatabaseServer, provision
    from elefast.errors import ElefastError
    from elefast.extras.alembic import AlembicMigrator, migration_differences

    sys.path.insert(0, os.getcwd())
    module_name, _, attribute = args.metadata.partition(":")
    try:
        target: object = importlib.import_module(module_name)
        for part in attribute.split(".") if attribute else []:
            target = getattr(target, part)
    except (ImportError, AttributeError) as error:
        print(f"error: cannot load the models' MetaData {args.metadata!r}: {error}. "
              "Give it as package.module:attribute, e.g. app.models:Base.metadata.", file=sys.stderr)
        return 2
    metadata = getattr(target, "metadata", target)
    try:
        server = DatabaseServer(provision.resolve(args.url, timeout=args.timeout), schema=AlembicMigrator(args.alembic))
        try:
            with server.create_database(prefix="elefast_check") as database:
                differences = migration_differences(database.url, metadata)
        finally:
            server.close()
    except ElefastError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for line in differences:
        print(line)
    print(f"{len(differences)} differences between the migrations and {args.metadata}")
    return 1 if differences else 0


def _run(args: argparse.Namespace) -> int:
    """Run a command with ``--env NAME`` holding the URL of a scratch database, dropped afterwards."""
    import os
    import subprocess

    from elefast import DatabaseServer, provision
    from elefast.errors import ElefastError

    command = args.command_line[1:] if args.command_line[:1] == ["--"] else args.command_line
    if not command:
        print("error: give the command after --, e.g. python -m elefast run --env DATABASE_URL -- "
              "python -m unittest", file=sys.stderr)
        return 2
    try:
        server_url = provision.resolve(args.url, timeout=args.timeout)
        server = DatabaseServer(server_url)
        database = server.create_database(prefix="elefast_scratch")
    except ElefastError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from elefast.provision.local import tcp_url

    env = dict(os.environ)
    url = tcp_url(database.url) or database.url  # a host in the URL: what apps' settings validators expect
    rendered = url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    env[args.env] = _url_for(args.driver, rendered)
    env.setdefault("ELEFAST_DATABASE_URL", server.url.render_as_string(hide_password=False))  # tests: same server
    try:
        return subprocess.call(command, env=env)
    except OSError as error:
        print(f"error: cannot run {command[0]!r}: {error}", file=sys.stderr)
        return 127
    finally:
        database.drop()
        server.close()


def _checkout(args: argparse.Namespace) -> int:
    """Start a holder for a fresh migrated database; print its URL (or --json) and return."""
    import json

    from elefast._cli import checkout
    from elefast.errors import ElefastError

    argv = ["--hold", str(args.hold), "--timeout", str(args.timeout),
            *(["--schema", args.schema] if args.schema else []), *(["--alembic", args.alembic] if args.alembic else []),
            *[part for path in args.sql or [] for part in ("--sql", path)]]
    try:
        checkout.schema_from(args.schema, args.alembic, args.sql)  # a bad option fails here, before the holder starts
        report = checkout.start_holder(argv, timeout=args.timeout + 600, url=args.url)  # a template may take a while
    except ElefastError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(report) if args.json else report["url"])
    print(f"held until {report['expires']}: python -m elefast release {report['name']}", file=sys.stderr)
    return 0


def _hold(args: argparse.Namespace) -> int:
    from elefast._cli import checkout

    url = args.url or os.environ.pop(checkout.URL_VARIABLE, None)  # checkout's --url, passed out of sight
    return checkout.hold(url, checkout.schema_from(args.schema, args.alembic, args.sql), args.hold, args.timeout)


def _release(args: argparse.Namespace) -> int:
    from elefast._cli import checkout
    from elefast.errors import ElefastError

    try:
        print(checkout.release(args.name))
    except ElefastError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m elefast``."""
    parser = argparse.ArgumentParser(prog="python -m elefast", description="elefast's command line.")
    commands = parser.add_subparsers(dest="command", required=True)
    server = commands.add_parser("server", help="the throwaway local PostgreSQL server")
    server.add_argument("action", choices=["start", "stop", "status", "url"])
    server.add_argument("--driver", default="psycopg", choices=["psycopg", "asyncpg", "libpq"],
                        help="driver part of printed URLs (libpq: plain postgresql://)")
    server.add_argument("--json", action="store_true", help="status as JSON")
    server.add_argument("--force", action="store_true",
                        help="(stop) stop it now, even while test processes use it")
    server.add_argument("--timeout", type=float, default=60, help="seconds to wait (default 60)")
    server.set_defaults(handler=_server)
    sweep = commands.add_parser("sweep", help="drop databases left by test processes that are gone")
    sweep.add_argument("--dry-run", action="store_true", help="list them, drop nothing")
    sweep.add_argument("--templates", action="store_true",
                       help="also drop the kept templates no process uses now (they are rebuilt when next needed)")
    sweep.add_argument("--url", help="the server (default: ELEFAST_DATABASE_URL, else the running local server)")
    sweep.add_argument("--timeout", type=float, default=10, help="seconds to wait for the server (default 10)")
    sweep.set_defaults(handler=_sweep)
    init = commands.add_parser("init", help="write a base test module for this project")
    init.add_argument("--path", default="tests/base.py", help="where to write it (default tests/base.py)")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.add_argument("--yes", action="store_true", help="ask nothing, even on a terminal")
    init.add_argument("--schema", metavar="MODULE:ATTR",
                      help="the MetaData to build the tests' template from, e.g. myapp.models:Base.metadata "
                           "(needed when init finds several; it lists them)")
    init.add_argument("--pytest", action="store_true",
                      help="print a conftest.py with pytest fixtures (db_server, db, db_connection, db_session) "
                           "on stdout instead: python -m elefast init --pytest >> tests/conftest.py")
    init.add_argument("--async", action="append_const", dest="async_preference", const=True,
                      help="(--pytest) async fixtures (AsyncDatabaseServer, pytest-asyncio)")
    init.add_argument("--sync", action="append_const", dest="async_preference", const=False,
                      help="(--pytest) sync fixtures (the default, unless --driver is async-only)")
    init.add_argument("--driver", help="(--pytest) the driver you use: asyncpg implies --async")
    init.add_argument("--no-interaction", action="store_true", help="(--pytest) ask nothing (it never asks)")
    init.set_defaults(handler=_init)
    doctor = commands.add_parser("doctor", help="where tests would get a server; versions; what is missing")
    doctor.add_argument("--timeout", type=float, default=3, help="seconds to wait for a configured URL (default 3)")
    doctor.set_defaults(handler=_doctor)
    check = commands.add_parser("check", help="do the Alembic migrations build what the models declare?")
    check.add_argument("--alembic", default="alembic.ini", help="alembic.ini, or the migrations folder")
    check.add_argument("--metadata", required=True, help="the models' MetaData, as package.module:attribute")
    check.add_argument("--url", help="the server (default: ELEFAST_DATABASE_URL, else a throwaway local one)")
    check.add_argument("--timeout", type=float, default=30, help="seconds to wait for the server (default 30)")
    check.set_defaults(handler=_check)
    run = commands.add_parser("run", help="run a command with a scratch database's URL in an environment variable")
    run.add_argument("--env", default="DATABASE_URL", help="the variable to set (default DATABASE_URL)")
    run.add_argument("--url", help="the server (default: ELEFAST_DATABASE_URL, else a throwaway local one)")
    run.add_argument("--timeout", type=float, default=30, help="seconds to wait for the server (default 30)")
    run.add_argument("--driver", default="psycopg", choices=["psycopg", "asyncpg", "libpq"],
                     help="driver part of the URL in --env (libpq: plain postgresql://; default psycopg)")
    run.add_argument("command_line", nargs=argparse.REMAINDER, help="-- then the command, e.g. python -m unittest")
    run.set_defaults(handler=_run)
    for name, handler, text in (("checkout", _checkout, "a fresh migrated database for another process, held "
                                 "until release"), ("_hold", _hold, argparse.SUPPRESS)):
        sub = commands.add_parser(name, help=text) if text != argparse.SUPPRESS else commands.add_parser(name)
        sub.add_argument("--schema", help="package.module:attribute: a MetaData, a declarative base or a migrator")
        sub.add_argument("--alembic", help="alembic.ini, or the migrations folder")
        sub.add_argument("--sql", action="append", help="a .sql file or a folder of them (repeat for more)")
        sub.add_argument("--url", help="the server (default: ELEFAST_DATABASE_URL, else a throwaway local one)")
        sub.add_argument("--hold", type=float, default=3600, help="seconds to keep it at most (default 3600)")
        sub.add_argument("--timeout", type=float, default=30, help="seconds to wait for the server (default 30)")
        sub.add_argument("--json", action="store_true", help="print name, url, host, port, expires as JSON")
        sub.set_defaults(handler=handler)
    release = commands.add_parser("release", help="drop a database checkout handed out")
    release.add_argument("name", help="the database's name, as checkout printed it")
    release.set_defaults(handler=_release)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    args = build_parser().parse_args(argv)
    return int(args.handler(args))
