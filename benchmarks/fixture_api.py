"""A pytest suite whose fixture calls ``create_database()`` per test: this package vs upstream elefast.

The same suite (N tests, each inserting into 3 of the 20 indexed tables of ``workload.py``,
committing and counting) runs under pytest twice per round, once on this package and once on
upstream elefast 0.1.0a5 (its own venv, see ``bench.py``), on the same server, alternating,
``--rounds`` times. Each suite's fixture is the one upstream's README shows::

    @pytest.fixture
    def db(db_server):
        with db_server.create_database() as database:
            yield database

Printed per server: the median wall time of each suite (process start to exit), per test, the
ratio, the floor (the same pytest run with tests that take no database), and the server's own
limit for a per-test clone in the foreground: sequential ``CREATE DATABASE ... TEMPLATE`` +
``DROP DATABASE`` pairs per second from one client on the same template; and its throughput with
clones made in the background (the best of 2 and 3 clients at once), which bounds any package that
gives each test a fresh clone: the most it can gain over upstream is printed beside the ratio.

A second table splits one process into its steps, each timed inside the process (medians over
``--rounds`` processes per package, alternating): importing the package (beside the import of
SQLAlchemy and the driver alone, the floor), the server object and its readiness check, the first
``create_database()`` (template lookup, the pool's start) with its first query and drop, then per
test: ``create_database()``, the body (its first connection included), ``drop()``; and the exit
after the last test (nobody calls ``close()``, as in a fixture).

    python benchmarks/fixture_api.py [--tests 100] [--rounds 3] [--url URL] [--local] [--body sleep50]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bench import DEFAULT_URL, settle, upstream_python  # noqa: E402

CONFTEST = '''
import os

import pytest
from workload import metadata

URL = os.environ["BENCH_URL"]

if os.environ["BENCH_IMPL"] == "upstream":
    from elefast import DatabaseServer

    def make_server():
        return DatabaseServer(URL, metadata=metadata)
else:
    from elefast import DatabaseServer, MetadataMigrator

    def make_server():
        return DatabaseServer(URL, schema=MetadataMigrator(metadata))


@pytest.fixture(scope="session")
def db_server():
    server = make_server()
    server.ensure_is_ready()  # upstream's returns None, this package's the server
    return server


@pytest.fixture
def db(db_server):
    with db_server.create_database() as database:
        yield database


@pytest.fixture
def db_session(db):
    with db.session() as session:
        yield session
'''

TESTS = '''
import pytest
from workload import body


@pytest.mark.parametrize("number", range(int(__import__("os").environ["BENCH_TESTS"])))
def test_work(db_session, number):
    body(db_session, __import__("os").environ["BENCH_BODY"])
'''

FLOOR_TESTS = '''
import pytest


@pytest.mark.parametrize("number", range(int(__import__("os").environ["BENCH_TESTS"])))
def test_nothing(number):
    assert number >= 0
'''


# One process's steps, timed inside it (BENCH_IMPL: elefast or upstream); prints one JSON line.
STEPS = '''
import json, os, statistics, time
started = time.perf_counter()
import sqlalchemy, sqlalchemy.orm, psycopg  # noqa: F401  the floor: what any package here imports first
from workload import body, metadata
floor = time.perf_counter()
URL, IMPL, TESTS, BODY = (os.environ[k] for k in ("BENCH_URL", "BENCH_IMPL", "BENCH_TESTS", "BENCH_BODY"))
if IMPL == "upstream":
    from elefast import DatabaseServer
    imported = time.perf_counter()
    server = DatabaseServer(URL, metadata=metadata)
else:
    from elefast import DatabaseServer, MetadataMigrator
    imported = time.perf_counter()
    server = DatabaseServer(URL, schema=MetadataMigrator(metadata))
server.ensure_is_ready()
ready = time.perf_counter()
with server.create_database() as database:
    with database.session() as session:
        body(session, BODY)
first = time.perf_counter()
steps = {"create": [], "body": [], "drop": []}
for _ in range(int(TESTS)):
    a = time.perf_counter()
    database = server.create_database()
    b = time.perf_counter()
    with database.session() as session:
        body(session, BODY)
    c = time.perf_counter()
    database.drop()
    steps["create"].append(b - a); steps["body"].append(c - b); steps["drop"].append(time.perf_counter() - c)
out = {"floor": floor - started, "import": imported - floor, "ready": ready - imported, "first": first - ready,
       **{k: statistics.median(v) for k, v in steps.items()}}
out = {k: v * 1000 for k, v in out.items()}
out["last_test"] = time.time()  # the parent times the exit from here: nobody calls close(), as in a fixture
print(json.dumps(out), flush=True)
'''

STEP_ROWS = [
    ("floor", "import sqlalchemy + psycopg (the floor, not counted below)", "once"),
    ("import", "import elefast", "once"),
    ("ready", "DatabaseServer(...) + ensure_is_ready()", "once"),
    ("first", "first create_database() + body + drop (template, pool start)", "once"),
    ("create", "create_database()", "per test"),
    ("body", "the body, its first connection included", "per test"),
    ("drop", "drop()", "per test"),
    ("exit", "exit after the last test (nobody calls close())", "once"),
]

BODY = ["work"]  # set from --body


def ensure_pytest(python: str) -> None:
    found = subprocess.run([python, "-c", "import pytest"], capture_output=True)
    if found.returncode != 0:
        subprocess.run([python, "-m", "pip", "install", "-q", "pytest"], check=True, capture_output=True)


def run_suite(python: str, impl: str, url: str, tests: int, floor: bool = False) -> float:
    """Wall seconds of one pytest run of the suite (raises if a test failed), on a server the last
    run's dropper is done with."""
    settle(url)
    with tempfile.TemporaryDirectory(prefix="elefast-fixture-bench-") as directory:
        folder = Path(directory)
        if not floor:
            (folder / "conftest.py").write_text(CONFTEST)
        (folder / "test_suite.py").write_text(FLOOR_TESTS if floor else TESTS)
        env = dict(os.environ, BENCH_URL=url, BENCH_IMPL=impl, BENCH_TESTS=str(tests), BENCH_BODY=BODY[0],
                   PYTHONPATH=str(HERE), PYTHONDONTWRITEBYTECODE="1")
        started = time.perf_counter()
        result = subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", str(folder)],
                                cwd=directory, env=env, capture_output=True, text=True, timeout=1800)
        wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{impl} suite failed:\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}")
    return wall


def run_steps(python: str, impl: str, url: str, tests: int) -> Dict[str, float]:
    """One process's steps in ms (see ``STEPS``)."""
    import json

    settle(url)

    env = dict(os.environ, BENCH_URL=url, BENCH_IMPL=impl, BENCH_TESTS=str(tests), BENCH_BODY=BODY[0],
               PYTHONPATH=str(HERE), PYTHONDONTWRITEBYTECODE="1")
    if impl == "elefast":
        env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(ROOT)])
    out = subprocess.run([python, "-c", STEPS], cwd=str(HERE), env=env, capture_output=True, text=True, timeout=900)
    ended = time.time()
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{impl} steps failed:\n{out.stderr[-2000:]}")
    steps: Dict[str, float] = json.loads(lines[-1])
    steps["exit"] = (ended - steps.pop("last_test")) * 1000
    return steps


def measure_steps(url: str, tests: int, rounds: int, upstream: str, limit_ms: float) -> List[str]:
    runs: Dict[str, List[Dict[str, float]]] = {"elefast": [], "upstream": []}
    for _ in range(rounds):
        runs["elefast"].append(run_steps(sys.executable, "elefast", url, tests))
        runs["upstream"].append(run_steps(upstream, "upstream", url, tests))
    median = {impl: {key: statistics.median(run[key] for run in done) for key in done[0]}
              for impl, done in runs.items()}
    lines = [
        f"Each step, timed inside one process ({tests} tests after the first, {rounds} processes each, medians):",
        "",
        "| step | elefast ms | upstream ms | x vs upstream |",
        "| --- | ---: | ---: | ---: |",
    ]
    for key, label, when in STEP_ROWS:
        ours, theirs = median["elefast"][key], median["upstream"][key]
        ratio = f"{theirs / ours:.2f}" if ours > 0.05 and key != "floor" else ""
        lines.append(f"| {label} ({when}) | {ours:.1f} | {theirs:.1f} | {ratio} |")
    fixed = {impl: sum(median[impl][k] for k in ("import", "ready", "first", "exit")) for impl in median}
    per = {impl: sum(median[impl][k] for k in ("create", "body", "drop")) for impl in median}
    lines += [
        f"| fixed cost of a process (import to exit, floor excluded) | {fixed['elefast']:.1f} | "
        f"{fixed['upstream']:.1f} | {fixed['upstream'] / fixed['elefast']:.2f} |",
        f"| per test (create + body + drop) | {per['elefast']:.1f} | {per['upstream']:.1f} | "
        f"{per['upstream'] / per['elefast']:.2f} |",
        "",
        f"The server's own limit per test for a clone made and dropped in the foreground: {limit_ms:.1f} ms; "
        "elefast makes them ahead and drops them behind, so its per-test cost is the body's (a connection "
        "to a fresh clone: the new backend's first catalog reads) plus the hand-over.",
        "",
    ]
    return lines


def raw_clone_rate(url: str, pairs: int = 20, clients: int = 1) -> float:
    """CREATE DATABASE ... TEMPLATE + DROP pairs per second on the 20-table schema, from ``clients``."""
    import sqlalchemy as sa
    from clone_rate import on_template, pair_ms

    parsed = sa.make_url(url).set(drivername="postgresql+psycopg")
    return 1000 / on_template(parsed, lambda admin, template: pair_ms(admin, template, None, clients, pairs))


def measure(label: str, url: str, tests: int, rounds: int, upstream: str) -> List[str]:
    walls: Dict[str, List[float]] = {"elefast": [], "upstream": [], "floor": []}
    run_suite(sys.executable, "elefast", url, 2)  # build (or find) this package's template once
    for _ in range(rounds):
        walls["elefast"].append(run_suite(sys.executable, "elefast", url, tests))
        walls["upstream"].append(run_suite(upstream, "upstream", url, tests))
        walls["floor"].append(run_suite(sys.executable, "floor", url, tests, floor=True))
    rate = raw_clone_rate(url)
    best = max(raw_clone_rate(url, 24, clients) for clients in (2, 3))  # the server's throughput, any client
    median = {name: statistics.median(values) for name, values in walls.items()}
    limit_ms = 1000 / rate
    best_ms = 1000 / best
    ceiling = median["upstream"] / (median["floor"] + tests * best_ms / 1000)
    lines = [
        f"## {label}",
        "",
        f"{tests} tests per suite (body: {BODY[0]}), {rounds} rounds, median wall time (pytest start to exit).",
        "",
        "| suite | median wall s | per test ms (above the floor) | x vs upstream |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name in ("elefast", "upstream"):
        per_test = (median[name] - median["floor"]) * 1000 / tests
        lines.append(f"| {name} | {median[name]:.2f} | {per_test:.1f} | {median['upstream'] / median[name]:.2f} |")
    lines.append(f"| floor: the same pytest run, tests without a database | {median['floor']:.2f} | 0.0 | |")
    lines += [
        "",
        f"Server's own limit for a clone made and dropped in the foreground, per test: {limit_ms:.1f} ms "
        f"({rate:.1f} CREATE ... TEMPLATE + DROP pairs per second, one client, same 20-table template).",
        "",
        f"Server's own limit with clones made in the background, per test: {best_ms:.1f} ms ({best:.1f} pairs "
        f"per second, the best of 2 and 3 clients at once). A suite that needs one fresh clone per test cannot "
        f"go faster than that: the most any package can gain over upstream here is {ceiling:.2f}x.",
        "",
    ]
    return lines + measure_steps(url, min(tests, 40), rounds, upstream, limit_ms)


def local_server_url() -> Optional[str]:
    """The throwaway local server's URL (started for this benchmark, kept until ``server stop``)."""
    started = subprocess.run([sys.executable, "-m", "elefast", "server", "start"], capture_output=True, text=True,
                             timeout=120)
    if started.returncode != 0:
        return None
    url = subprocess.run([sys.executable, "-m", "elefast", "server", "url"], capture_output=True, text=True,
                         timeout=60)
    return url.stdout.strip() or None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tests", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--url", default=os.environ.get("ELEFAST_DATABASE_URL", DEFAULT_URL),
                        help="the disk server (default: ELEFAST_DATABASE_URL, else the machine's)")
    parser.add_argument("--local", action="store_true", help="also run on the throwaway local server (tmpfs)")
    parser.add_argument("--body", default="work", choices=["work", "sleep50"],
                        help="each test's work: insert, commit, count (work), plus 50 ms of app time (sleep50)")
    args = parser.parse_args()
    BODY[0] = args.body
    upstream, why = upstream_python()
    if upstream is None:
        print(f"upstream elefast is not available: {why}", file=sys.stderr)
        return 1
    ensure_pytest(upstream)
    print("# create_database() per test from a pytest fixture: this package vs upstream elefast 0.1.0a5")
    print(f"Python {platform.python_version()} (upstream: its own venv), {os.cpu_count()} CPUs, {platform.platform()}")
    print()
    disk = args.url.replace("postgresql://", "postgresql+psycopg://", 1)
    print("\n".join(measure(f"{args.url.split('@')[-1]} (the machine's server, disk)", disk, args.tests,
                            args.rounds, upstream)))
    if args.local:
        local = local_server_url()
        if local is None:
            print("## throwaway local server: could not start it (see python -m elefast doctor)")
        else:
            print("\n".join(measure("throwaway local server (tmpfs, fsync off)", local, args.tests, args.rounds,
                                    upstream)))
            subprocess.run([sys.executable, "-m", "elefast", "server", "stop"], capture_output=True, timeout=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
