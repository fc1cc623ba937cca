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

Every ``--timeout`` means one thing, with one default (:data:`TIMEOUT`, 10 s, a test class's
``connect_timeout``): how long to wait for the server to answer. Starting the throwaway server
is given at least :data:`elefast.provision.START_TIMEOUT` (30 s), as in a test run. A URL you
configured (``--url``, ``ELEFAST_DATABASE_URL``) at which nothing listens fails within 2 s, saying
where it came from. ``--json`` prints JSON on stdout, errors included (``{"error": ...}``).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, List, Optional

from elefast._cli import servers as _servers

__all__ = ["TIMEOUT", "build_parser", "main"]

#: The default of every command's ``--timeout``: seconds to wait for the server to answer.
TIMEOUT = 10.0
#: The commands ``python -m elefast -h`` lists, with their one-line descriptions (``_hold`` is internal).
COMMANDS = {
    "server": "start, stop or report on the throwaway local PostgreSQL server (start|stop|status|url)",
    "sweep": "drop databases left by test processes that are gone",
    "init": "write a base test module for this project (--pytest: print a conftest.py)",
    "doctor": "check that a test run would get a server it can use; versions; what is missing",
    "check": "build the Alembic migrations and list how they differ from the models",
    "run": "run a command with a scratch database's URL in an environment variable",
    "checkout": "a fresh migrated database for another process, held until release",
    "release": "drop a database checkout handed out",
}


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

    from elefast import DatabaseServer
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
        server = DatabaseServer(_servers.configured_url(args.url, args.timeout), schema=AlembicMigrator(args.alembic))
        try:
            server.ensure_is_ready(timeout=args.timeout)
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

    from elefast import DatabaseServer
    from elefast.errors import ElefastError

    command = args.command_line[1:] if args.command_line[:1] == ["--"] else args.command_line
    if not command:
        print("error: give the command after --, e.g. python -m elefast run --env DATABASE_URL -- "
              "python -m unittest", file=sys.stderr)
        return 2
    try:
        server = DatabaseServer(_servers.configured_url(args.url, args.timeout)).ensure_is_ready(timeout=args.timeout)
        database = server.create_database(prefix="elefast_scratch")
    except ElefastError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from elefast.provision.local import tcp_url

    env = dict(os.environ)
    url = tcp_url(database.url) or database.url  # a host in the URL: what apps' settings validators expect
    rendered = url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    env[args.env] = _servers.url_for(args.driver, rendered)
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
        return _servers.report_error(args, error, 2)
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
    import elefast

    parser = argparse.ArgumentParser(
        prog="python -m elefast", description="elefast's command line: a fresh PostgreSQL database per test.",
        epilog=f"Every --timeout: seconds to wait for the server to answer (default {TIMEOUT:g}). "
               "python -m elefast COMMAND -h: that command's options.")
    parser.add_argument("--version", action="version", version=f"elefast {elefast.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}",
                                     title="commands")

    def command(name: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=COMMANDS[name], description=COMMANDS[name] + ".")

    def timeout(sub: argparse.ArgumentParser, extra: str = "") -> None:
        sub.add_argument("--timeout", type=float, default=TIMEOUT,
                         help=f"seconds to wait for the server to answer (default {TIMEOUT:g}){extra}")

    server = command("server")
    server.add_argument("action", choices=["start", "stop", "status", "url"])
    server.add_argument("--driver", default="psycopg", choices=["psycopg", "asyncpg", "libpq"],
                        help="driver part of printed URLs (libpq: plain postgresql://)")
    server.add_argument("--json", action="store_true",
                        help="print JSON on stdout (status of a stopped server: {\"running\": false}, exit 1)")
    server.add_argument("--force", action="store_true",
                        help="(stop) stop it now, even while test processes use it")
    timeout(server, "; start is given at least 30 s, stop waits this long for it to end")
    server.set_defaults(handler=_servers.server)
    sweep = command("sweep")
    sweep.add_argument("--dry-run", action="store_true", help="list them, drop nothing")
    sweep.add_argument("--templates", action="store_true",
                       help="also drop the kept templates no process uses now (they are rebuilt when next needed)")
    sweep.add_argument("--url", help="the server (default: ELEFAST_DATABASE_URL, else the running local server)")
    timeout(sweep)
    sweep.set_defaults(handler=_servers.sweep)
    init = command("init")
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
    init.add_argument("--no-interaction", action="store_true",
                      help="upstream elefast's flag, accepted so its instructions work: implies --pytest "
                           "(which asks no questions)")
    init.set_defaults(handler=_init)
    doctor = command("doctor")
    timeout(doctor)
    doctor.set_defaults(handler=_doctor)
    check = command("check")
    check.add_argument("--alembic", default="alembic.ini", help="alembic.ini, or the migrations folder")
    check.add_argument("--metadata", required=True, help="the models' MetaData, as package.module:attribute")
    check.add_argument("--url", help="the server (default: ELEFAST_DATABASE_URL, else a throwaway local one)")
    timeout(check)
    check.set_defaults(handler=_check)
    run = command("run")
    run.add_argument("--env", default="DATABASE_URL", help="the variable to set (default DATABASE_URL)")
    run.add_argument("--url", help="the server (default: ELEFAST_DATABASE_URL, else a throwaway local one)")
    timeout(run)
    run.add_argument("--driver", default="psycopg", choices=["psycopg", "asyncpg", "libpq"],
                     help="driver part of the URL in --env (libpq: plain postgresql://; default psycopg)")
    run.add_argument("command_line", nargs=argparse.REMAINDER, help="-- then the command, e.g. python -m unittest")
    run.set_defaults(handler=_run)
    _holder_options(command("checkout"), _checkout)
    release = command("release")
    release.add_argument("name", help="the database's name, as checkout printed it")
    release.set_defaults(handler=_release)
    return parser


def _holder_options(sub: argparse.ArgumentParser, handler: Any) -> None:
    """The options of ``checkout`` and of the holder it starts (``_hold``, internal: in no listing)."""
    sub.add_argument("--schema", help="package.module:attribute: a MetaData, a declarative base or a migrator")
    sub.add_argument("--alembic", help="alembic.ini, or the migrations folder")
    sub.add_argument("--sql", action="append", help="a .sql file or a folder of them (repeat for more)")
    sub.add_argument("--url", help="the server (default: ELEFAST_DATABASE_URL, else a throwaway local one)")
    sub.add_argument("--hold", type=float, default=3600, help="seconds to keep it at most (default 3600)")
    sub.add_argument("--timeout", type=float, default=TIMEOUT,
                     help=f"seconds to wait for the server to answer (default {TIMEOUT:g})")
    sub.add_argument("--json", action="store_true", help="print name, url, host, port, expires as JSON")
    sub.set_defaults(handler=handler)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["_hold"]:  # checkout's holder: parsed apart, so no usage, help or error message names it
        holder = argparse.ArgumentParser(prog="python -m elefast _hold", add_help=False)
        _holder_options(holder, _hold)
        args = holder.parse_args(argv[1:])
    else:
        args = build_parser().parse_args(argv)
    return int(args.handler(args))
