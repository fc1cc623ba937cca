"""Waits for a clone when clones are slow: the pool kept 2 deep vs deepened by clone time.

A template holding ~100 MB of rows (one table), 60 tests that each take 50 ms, database mode,
as fresh ``unittest`` processes, alternating ``ELEFAST_POOL_MAX_DEPTH=2`` (the pool as it was:
two clones kept ready) and the default (more kept ready while clones take over 40 ms, up to 6).
Per run: the median and p95 of each test's wait for its database (set-up), and the suite's wall
time; beside them, the server's own time to clone the template (the limit a test waits for when
the pool is empty).

    python benchmarks/slow_clones.py [--url URL] [--tests 60] [--rounds 3] [--megabytes 100]

Without ``--url`` it uses the throwaway local server (tmpfs, fsync off).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from database_mode_runs import server_arguments  # noqa: E402

SUITE = r'''
import json, os, sys, time, unittest
import sqlalchemy as sa
from elefast import PostgresTestCase

MEGABYTES, TESTS = int(sys.argv[2]), int(sys.argv[3])


class Rows:
    """One table of ~MEGABYTES of rows."""

    def migrate(self, connection):
        connection.execute(sa.text("CREATE TABLE fill (id int PRIMARY KEY, pad text)"))
        rows = MEGABYTES * 1024 * 1024 // 300
        connection.execute(sa.text(f"INSERT INTO fill SELECT g, repeat('x', 250) FROM generate_series(1, {rows}) g"))

    def fingerprint(self):
        return f"slow-clones-{MEGABYTES}"


WAITS = []


class Slow(PostgresTestCase, unittest.TestCase):
    database_url = sys.argv[1]
    database_prefix = "bench_slow"
    schema = Rows()

    def _elefast_set_up(self):
        start = time.perf_counter()
        super()._elefast_set_up()
        WAITS.append(time.perf_counter() - start)


for number in range(TESTS):
    setattr(Slow, f"test_{number:03d}", lambda self: time.sleep(0.05))
start = time.perf_counter()
result = unittest.TextTestRunner(stream=open(os.devnull, "w")).run(
    unittest.defaultTestLoader.loadTestsFromTestCase(Slow))
print(json.dumps({"ok": result.wasSuccessful(), "waits": WAITS[1:], "wall": time.perf_counter() - start,
                  "errors": [str(e[1])[-500:] for e in result.errors + result.failures]}))
'''


def run(url: str, megabytes: int, tests: int, depth: Optional[str]) -> Dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(HERE.parent))
    env.pop("ELEFAST_POOL_MAX_DEPTH", None)
    if depth is not None:
        env["ELEFAST_POOL_MAX_DEPTH"] = depth
    out = subprocess.run([sys.executable, "-c", SUITE, url, str(megabytes), str(tests)],
                         capture_output=True, text=True, check=False, env=env)
    if out.returncode != 0:
        raise SystemExit(f"the suite failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if not result["ok"]:
        raise SystemExit(f"the suite failed: {result['errors']}")
    waits = sorted(result["waits"])
    return {"p50": waits[len(waits) // 2] * 1000, "p95": waits[int(len(waits) * 0.95)] * 1000, "wall": result["wall"]}


def server_clone_ms(url: str, megabytes: int) -> float:
    """The server's own time to clone the benchmark's template (median of 5, each dropped after)."""
    from elefast._base import sql as _sql
    from elefast._server import clone_strategy as _clone_strategy

    engine = sa.create_engine(sa.make_url(url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            fsync, version, copy_method = connection.execute(sa.text(_sql.SERVER_SETTINGS)).one()[:3]
            strategy = _clone_strategy.choose_strategy(int(version), str(fsync), str(copy_method))
            template = connection.execute(sa.text(
                "SELECT datname FROM pg_database WHERE datistemplate AND datname LIKE 'bench_slow%' "
                "ORDER BY oid DESC LIMIT 1")).scalar_one()
            times: List[float] = []
            for number in range(5):
                name = f"bench_slow_limit_{os.getpid()}_{number}"
                start = time.perf_counter()
                connection.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'
                                           + (f" STRATEGY {strategy}" if strategy else "")))
                times.append((time.perf_counter() - start) * 1000)
                connection.execute(sa.text(f'DROP DATABASE "{name}"'))
    finally:
        engine.dispose()
    return statistics.median(times)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    megabytes = 100
    if "--megabytes" in argv:
        at = argv.index("--megabytes")
        megabytes = int(argv[at + 1])
        del argv[at:at + 2]
    args, url, label = server_arguments(__doc__ or "", 60, argv)
    run(url, megabytes, 3, None)  # builds the template once
    variants = (("kept 2 deep (ELEFAST_POOL_MAX_DEPTH=2)", "2"), ("deepened by clone time (default)", None))
    results: Dict[str, List[Dict[str, float]]] = {name: [] for name, _ in variants}
    for _ in range(args.rounds):
        for name, depth in variants:
            results[name].append(run(url, megabytes, args.tests, depth))
    limit = server_clone_ms(url, megabytes)

    print(f"# slow clones: {args.tests} tests of 50 ms on a template with ~{megabytes} MB of rows, database mode, "
          f"{args.rounds} rounds (alternating), medians of the per-run figures")
    print(f"{label}; Python {platform.python_version()}, {os.cpu_count()} CPUs\n")
    print("| pool | wait p50 ms | wait p95 ms | suite wall s | the server's clone of the template, ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, _ in variants:
        rows = results[name]
        print(f"| {name} | {statistics.median(r['p50'] for r in rows):.2f} | "
              f"{statistics.median(r['p95'] for r in rows):.2f} | {statistics.median(r['wall'] for r in rows):.2f} | "
              f"{limit:.1f} |")
    print("\nA test that finds no ready clone waits for one being made: up to the server's clone time.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
