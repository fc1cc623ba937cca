"""What throughput.py and clone_engines.py share: the server to use, and one workload process.

:func:`server_arguments` parses ``--url``, ``--tests`` and ``--rounds`` and resolves the server
(the throwaway local one, leased by this process, when no URL is given); :func:`run_suite` runs
``workload.py elefast-database`` as a fresh ``unittest`` process and returns its JSON result,
with when it ended and the CPU it used.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent


def server_arguments(doc: str, tests: int, argv: Optional[List[str]] = None) -> Tuple[argparse.Namespace, str, str]:
    """(arguments, URL with its password, label to print) for a benchmark described by ``doc``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--url", help="a server (default: the throwaway local server)")
    parser.add_argument("--tests", type=int, default=tests)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if args.url:
        import sqlalchemy as sa

        return args, args.url, sa.make_url(args.url).render_as_string(hide_password=True)
    sys.path.insert(0, str(HERE.parent))
    from elefast.provision.local import ensure_local_server

    url = ensure_local_server().render_as_string(hide_password=False)  # held by this process's lease
    return args, url, "the throwaway local server (tmpfs, fsync off)"


def run_suite(url: str, tests: int, body: str, env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """One database-mode workload process: its result plus ``ended`` (time.time()) and ``cpu_s``."""
    before = os.times()
    out = subprocess.run([sys.executable, str(HERE / "workload.py"), "elefast-database", url, str(tests), body],
                         capture_output=True, text=True, check=False,
                         env=dict(os.environ, PYTHONPATH=str(HERE.parent), **(env or {})))
    ended, after = time.time(), os.times()
    if out.returncode != 0:
        raise SystemExit(f"workload failed:\n{out.stderr[-3000:]}")
    result: Dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    if not result["ok"]:
        raise SystemExit(f"the elefast suite failed: {result['errors']}")
    result["ended"] = ended
    result["cpu_s"] = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return result
