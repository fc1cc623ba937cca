"""The ``server`` and ``sweep`` commands, and what every command shares: the server's URL, errors, ``--json``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Optional

__all__ = ["configured_url", "report_error", "server", "sweep", "url_for"]


def configured_url(option: Optional[str], timeout: float) -> Any:
    """The server a command uses: ``--url``, else what a test run would use (:func:`elefast.provision.resolve`)."""
    from elefast import provision
    from elefast._server import readiness

    found = provision.resolve(option, timeout=max(timeout, provision.START_TIMEOUT))
    if option:
        readiness.configured(option, "--url")  # not "the test class's database_url", as resolve notes it
    return found


def report_error(args: argparse.Namespace, error: BaseException, code: int) -> int:
    """Say what failed: ``{"error": ...}`` on stdout with ``--json``, else ``error: ...`` on stderr."""
    if getattr(args, "json", False):
        print(json.dumps({"error": str(error), "type": type(error).__name__}))
    else:
        print(f"error: {error}", file=sys.stderr)
    return code


def url_for(driver: str, url: str) -> str:
    if driver == "libpq":
        return "postgresql://" + url.split("://", 1)[1]
    return url.replace("postgresql+psycopg://", f"postgresql+{driver}://", 1)


def server(args: argparse.Namespace) -> int:
    from elefast.errors import ElefastError
    from elefast.provision import local

    try:
        if args.action == "start":
            from elefast.provision import START_TIMEOUT

            url = local.keep_local_server(timeout=max(args.timeout, START_TIMEOUT))
            shown = url_for(args.driver, url.render_as_string(hide_password=True))
            print(json.dumps({"running": True, "url": shown}) if args.json else shown)
            print("The server keeps running until: python -m elefast server stop", file=sys.stderr)
            return 0
        if args.action == "stop":
            clients = [] if args.force or local.server_status() is None else local.other_clients()
            if clients:  # test processes are using it: do not pull it from under them
                local.stop_when_unused()
                if args.json:
                    print(json.dumps({"stopped": False, "stops_when_unused": True,
                                      "clients": [{"pid": pid, "command": command} for pid, command in clients]}))
                    return 0
                print(f"in use by {len(clients)} test process(es); the server stops on its own about a second "
                      "after the last one ends:")
                for pid, command in clients:
                    print(f"  pid {pid}: {command.strip() or '(command unknown)'}")
                print("To stop it now (their tests fail): python -m elefast server stop --force")
                return 0
            stopped = local.stop_local_server(timeout=args.timeout)
            print(json.dumps({"stopped": stopped}) if args.json
                  else "stopped" if stopped else "not running")
            return 0
        status = local.server_status()
        if status is None:  # exit code 1, as documented: scripts test it
            if args.json:
                print(json.dumps({"running": False}))
            else:
                print("not running (start one with: python -m elefast server start)", file=sys.stderr)
            return 1
        if args.action == "url":
            shown = url_for(args.driver, status["url"])
            print(json.dumps({"running": True, "url": shown}) if args.json else shown)
        elif args.json:
            print(json.dumps({"running": True, **status}, indent=2))
        else:
            print(f"running: PostgreSQL {'.'.join(map(str, status['version']))} from {status['bindir']}")
            print(f"  url:      {url_for(args.driver, status['url'])}")
            print(f"  pid:      {status['postgres_pid']} (supervisor {status['supervisor_pid']})")
            kept = " (kept running by server start)" if status["keep"] else ""
            print(f"  clients:  {status['clients']}{kept}")
            print(f"  data:     {status['run_dir']}")
        return 0
    except ElefastError as error:
        return report_error(args, error, 2)


def sweep(args: argparse.Namespace) -> int:
    import os

    from elefast.errors import ElefastError
    from elefast.provision import ENV_URL, START_TIMEOUT, local
    from elefast.sync import DatabaseServer

    url = args.url or os.environ.get(ENV_URL, "").strip()
    if url:
        from elefast._server import readiness

        readiness.configured(url, "--url" if args.url else ENV_URL)
    else:
        status = local.server_status()
        if status is None:
            print(f"Nothing to sweep: no --url, no {ENV_URL}, and no local server running.", file=sys.stderr)
            return 1
        url = local.ensure_local_server(timeout=max(args.timeout, START_TIMEOUT))
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
