"""How long a test process takes to end after its last test, and when its databases are gone.

A ``unittest`` suite of N do-nothing tests in database mode (a one-table template) runs as a
fresh process; ``tearDownModule`` notes the time the last test (and its class) ended. Measured:

- *exit*: from then to the process's end (what a developer waits for after the last dot);
- *all dropped*: from then until no database of the run is left on the server (the drops
  elefast leaves for a dropper that outlives the process count here, not in *exit*).

Side by side, alternating, per round: ``ELEFAST_DROP_AT_EXIT=here`` (the process drops what is
left itself before it ends) and the default (``behind``: what is left is dropped by a detached
dropper). The floor beside them: the same suite with no database (plain ``unittest.TestCase``,
importing every module an elefast run loads), which is the interpreter's own exit. On a disk
server with ``fsync = on`` each ``DROP DATABASE`` waits for a checkpoint, which is what makes
dropping at exit slow there.

    python benchmarks/exit_time.py [--url URL] [--tests 30] [--rounds 5]

Without ``--url`` it uses ``ELEFAST_DATABASE_URL``, else the throwaway local server.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent

SUITE = '''
import os, time, unittest
from sqlalchemy import Column, Integer, MetaData, Table

metadata = MetaData()
Table("t", metadata, Column("id", Integer, primary_key=True))

if os.environ["BENCH_KIND"] == "floor":
    import importlib

    for name in open(os.environ["BENCH_MODULES"]).read().split():  # every module an elefast run loads
        try:
            importlib.import_module(name)
        except Exception:
            pass

    class Base(unittest.TestCase):
        pass
else:
    from elefast import MetadataMigrator, PostgresTestCase

    class Base(PostgresTestCase, unittest.TestCase):
        schema = MetadataMigrator(metadata)
        database_prefix = os.environ["BENCH_PREFIX"]


class Tests(Base):
    pass


for number in range(int(os.environ["BENCH_TESTS"])):
    setattr(Tests, f"test_{number:03d}", lambda self: None)


def tearDownModule():
    import sys

    if os.environ["BENCH_KIND"] != "floor":
        with open(os.environ["BENCH_MODULES"], "w") as modules:
            modules.write(" ".join(sorted(sys.modules)))
    with open(os.environ["BENCH_MARK"], "w") as mark:
        mark.write(repr(time.time()))
'''


def left(url: str, prefix: str) -> int:
    """How many databases of this run are on the server."""
    import psycopg

    with psycopg.connect(url.replace("+psycopg", "").replace("+asyncpg", ""), autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE %s AND datname NOT LIKE %s",
                           (prefix + "%", prefix + "_tpl_%")).fetchone()
    return int(row[0]) if row else 0


def admin_url(url: Optional[str]) -> str:
    """The URL to watch the server with (the throwaway local server's, when no URL is given)."""
    if url:
        return url
    from elefast.provision.local import ensure_local_server

    return str(ensure_local_server(timeout=60, driver="psycopg"))


def one_run(folder: Path, kind: str, tests: int, url: Optional[str], watch: str) -> Dict[str, float]:
    prefix = f"bx{uuid.uuid4().hex[:8]}"
    mark = folder / "mark"
    if mark.exists():
        mark.unlink()
    env = dict(os.environ, BENCH_KIND=kind, BENCH_PREFIX=prefix, BENCH_TESTS=str(tests), BENCH_MARK=str(mark),
               BENCH_MODULES=str(folder / "modules"),
               PYTHONPATH=f"{ROOT}{os.pathsep}{folder}")
    env.pop("ELEFAST_DROP_AT_EXIT", None)
    if kind == "here":
        env["ELEFAST_DROP_AT_EXIT"] = "here"
    if url:
        env["ELEFAST_DATABASE_URL"] = url
    result = subprocess.run([sys.executable, "-m", "unittest", "-q", "suite"], cwd=str(folder), env=env,
                            capture_output=True, text=True, timeout=600)
    ended = time.time()
    if result.returncode != 0:
        raise SystemExit(f"the {kind} run failed:\n{result.stderr[-2000:]}")
    last = float(mark.read_text())
    figures = {"exit": ended - last}
    if kind != "floor":
        deadline = time.monotonic() + 60
        while left(watch, prefix) and time.monotonic() < deadline:
            time.sleep(0.02)
        figures["gone"] = time.time() - last
        figures["left"] = float(left(watch, prefix))
    return figures


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("ELEFAST_DATABASE_URL"))
    parser.add_argument("--tests", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    watch = admin_url(args.url)
    where = args.url or "the throwaway local server"
    import psycopg

    with psycopg.connect(watch.replace("+psycopg", ""), autocommit=True) as conn:
        fsync = conn.execute("SHOW fsync").fetchone()
    runs: Dict[str, List[Dict[str, float]]] = {"floor": [], "here": [], "behind": []}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        (folder / "suite.py").write_text(SUITE)
        one_run(folder, "behind", 2, args.url, watch)  # the template, built once
        for _ in range(args.rounds):
            for kind in ("floor", "here", "behind"):
                runs[kind].append(one_run(folder, kind, args.tests, args.url, watch))
    print(f"# exit after the last test: {args.tests} database-mode tests, {args.rounds} rounds (alternating)")
    print(f"{where}; fsync = {fsync[0] if fsync else '?'}; Python {sys.version.split()[0]}; "
          f"{os.cpu_count()} CPUs\n")
    print("| ending | exit ms (median) | exit ms (max) | all dropped ms (median) | left after 60 s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    labels = {"floor": "no database, every module a run loads (the interpreter's own exit: the floor)",
              "here": "ELEFAST_DROP_AT_EXIT=here (the process drops before it ends)",
              "behind": "default: dropped behind by a detached dropper"}
    for kind, figures in runs.items():
        exits = [f["exit"] * 1000 for f in figures]
        gone = [f["gone"] * 1000 for f in figures if "gone" in f]
        leftover = sum(f.get("left", 0) for f in figures)
        print(f"| {labels[kind]} | {statistics.median(exits):.0f} | {max(exits):.0f} | "
              f"{statistics.median(gone):.0f} | {leftover:.0f} |" if gone else
              f"| {labels[kind]} | {statistics.median(exits):.0f} | {max(exits):.0f} | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
