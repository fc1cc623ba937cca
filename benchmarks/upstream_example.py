"""Upstream elefast's own fastapi-async example suite, unchanged, on upstream and on this package.

The suite (upstream's ``examples/fastapi-async``: 89 pytest-asyncio tests, a fixture that calls
``create_database()`` per test, FastAPI's ``TestClient``) runs once per round on upstream elefast
from the same clone (its ``src/`` on ``PYTHONPATH``: the example uses names released after 0.1.0a5),
with the same interpreter and libraries as this package where that is Python 3.11+ (else upstream's
own venv, see ``bench.py``), and once on this package, alternating, on the same
server, ``--rounds`` times. Only the import path differs: both run the example's own conftest.py.
Printed per server: the median wall time of each (pytest start to exit), our time over upstream's
(the issue's target: at most 0.5 on the throwaway tmpfs server, 0.6 on a disk server), the floor
(the same pytest run with every test deselected but collection, imports included) and the
server's own limit: the suite's tests each need a fresh clone, so no package can beat the floor
plus one background clone+drop per test (the best of 2 and 3 clients at once), nor the suite's own
work: its time less what it spends inside ``create_database()`` and ``drop()`` (a plugin times both
in both packages).

The example is not part of this project: point ``--example`` at it in a clone of upstream's
repository (``git clone https://github.com/NiclasvanEyk/elefast``; the folder
``examples/fastapi-async``).

    python benchmarks/upstream_example.py --example ../elefast/examples/fastapi-async [--rounds 5] [--local]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bench import DEFAULT_URL, settle, upstream_python  # noqa: E402
from clone_rate import on_template, pair_ms  # noqa: E402
from fixture_api import local_server_url  # noqa: E402

#: What the example imports, beside elefast: its pyproject's dependencies and the docker extra its
#: conftest imports (not the OpenTelemetry plugins, which only report).
NEEDS = ["fastapi", "httpx", "pytest", "pytest-asyncio", "asyncpg", "sqlalchemy[asyncio]>=2", "docker", "filelock"]


def ensure(python: str) -> None:
    found = subprocess.run([python, "-c", "import fastapi, httpx, pytest, pytest_asyncio, asyncpg, docker, filelock"],
                           capture_output=True)
    if found.returncode != 0:
        subprocess.run([python, "-m", "pip", "install", "-q", *NEEDS], check=True, capture_output=True,
                       timeout=900)


# A pytest plugin loaded into both runs: the seconds spent inside create_database() and drop() (the
# package's whole share of a test: the rest is the suite's own work), written at the end.
TIMER = '''
import os
import time

from elefast import AsyncDatabase, AsyncDatabaseServer

SPENT = [0.0]


def _timed(cls, name):
    original = getattr(cls, name)

    async def timed(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return await original(self, *args, **kwargs)
        finally:
            SPENT[0] += time.perf_counter() - started

    setattr(cls, name, timed)


_timed(AsyncDatabaseServer, "create_database")
_timed(AsyncDatabase, "drop")


def pytest_unconfigure(config):
    with open(os.environ["BENCH_SPENT"], "w") as handle:
        handle.write(repr(SPENT[0]))
'''


def example_clone_rate(url: str, clients: int, pairs: int = 24) -> float:
    """Clone + drop pairs per second from ``clients`` at once, on a template shaped as the example's
    (one table of three text columns; the rate depends on the template's size)."""
    import sqlalchemy as sa

    schema = sa.MetaData()
    sa.Table("posts", schema, *(sa.Column(name, sa.Text, primary_key=name == "slug")
                                for name in ("slug", "headline", "body")))
    parsed = sa.make_url(url).set(drivername="postgresql+psycopg")
    return 1000 / on_template(parsed, lambda admin, template: pair_ms(admin, template, None, clients, pairs), schema)


def upstream_source(example: Path) -> Path:
    """Upstream's package source in the clone the example comes from (``<clone>/src``)."""
    return example.resolve().parent.parent / "src"


def run_suite(python: str, impl: str, example: Path, url: str, floor: bool = False) -> Tuple[float, float]:
    """Wall seconds of one pytest run of the example in a copy of it, and the seconds spent inside
    ``create_database()`` and ``drop()`` (raises if a test failed), on a server the last run's
    dropper is done with."""
    settle(url.replace("+asyncpg", ""))
    with tempfile.TemporaryDirectory(prefix="elefast-upstream-example-") as directory:
        copy = Path(directory) / "example"
        shutil.copytree(example, copy, ignore=shutil.ignore_patterns(".venv", "__pycache__", ".pytest_cache"))
        (Path(directory) / "bench_timer.py").write_text(TIMER)
        path = [str(copy / "src"), directory, str(ROOT if impl == "elefast" else upstream_source(example))]
        spent = Path(directory) / "spent"
        env = dict(os.environ, TESTING_DB_URL=url, PYTHONPATH=os.pathsep.join(path), PYTHONDONTWRITEBYTECODE="1",
                   BENCH_SPENT=str(spent))
        env.pop("ELEFAST_DATABASE_URL", None)
        args = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"]
        args += ["--collect-only"] if floor else ["-p", "bench_timer"]
        started = time.perf_counter()
        result = subprocess.run(args, cwd=str(copy), env=env, capture_output=True, text=True, timeout=1800)
        wall = time.perf_counter() - started
        inside = 0.0 if floor else float(spent.read_text())
    if result.returncode != 0 or (not floor and " passed" not in result.stdout):
        raise RuntimeError(f"{impl} suite failed:\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}")
    return wall, inside


def measure(label: str, url: str, example: Path, rounds: int, upstream: str) -> List[str]:
    async_url = url.replace("postgresql://", "postgresql+asyncpg://", 1).replace("+psycopg", "+asyncpg")
    run_suite(sys.executable, "elefast", example, async_url)  # this package's template, built once
    run_suite(upstream, "upstream", example, async_url)  # and the upstream run's imports compiled
    walls: Dict[str, List[float]] = {"elefast": [], "upstream": [], "floor": []}
    inside: Dict[str, List[float]] = {"elefast": [], "upstream": []}
    for _ in range(rounds):
        for name, python in (("elefast", sys.executable), ("upstream", upstream)):
            wall, spent = run_suite(python, name, example, async_url)
            walls[name].append(wall)
            inside[name].append(spent)
        walls["floor"].append(run_suite(sys.executable, "elefast", example, async_url, floor=True)[0])
    sync_url = async_url.replace("+asyncpg", "+psycopg")
    best = max(example_clone_rate(sync_url, clients) for clients in (2, 3))
    median = {name: statistics.median(values) for name, values in walls.items()}
    tests = 89
    limit = median["floor"] + tests / best
    ratio = median["elefast"] / median["upstream"]
    spent = {name: statistics.median(values) for name, values in inside.items()}
    own = median["elefast"] - spent["elefast"]  # the suite with nothing spent in create_database()/drop()
    return [
        f"## {label}",
        "",
        f"{rounds} rounds, median wall time (pytest start to exit), upstream's 89 tests unchanged.",
        "",
        "| suite | median wall s | inside create_database() + drop(), per test ms | our time / upstream's |",
        "| --- | ---: | ---: | ---: |",
        f"| this package | {median['elefast']:.2f} | {spent['elefast'] * 1000 / tests:.1f} | {ratio:.2f} |",
        f"| upstream elefast (its clone's src/) | {median['upstream']:.2f} | {spent['upstream'] * 1000 / tests:.1f} "
        "| 1.00 |",
        f"| floor: pytest collecting the suite (imports included), no test run | {median['floor']:.2f} | | |",
        f"| limit: the floor + 89 clones made and dropped in the background at the server's best rate "
        f"({best:.1f} pairs/s) | {limit:.2f} | | {limit / median['upstream']:.2f} |",
        f"| limit: this run less its time inside create_database() and drop() (the suite's own work: its "
        f"app, TestClient, bodies) | {own:.2f} | 0.0 | {own / median['upstream']:.2f} |",
        "",
        "Each round's walls (this package / upstream): " + ", ".join(
            f"{ours:.2f}/{theirs:.2f}" for ours, theirs in zip(walls["elefast"], walls["upstream"])),
        "",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--example", type=Path, required=True,
                        help="upstream's examples/fastapi-async folder, in a clone of its repository")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--url", default=os.environ.get("ELEFAST_DATABASE_URL", DEFAULT_URL),
                        help="the disk server (default: ELEFAST_DATABASE_URL, else the machine's)")
    parser.add_argument("--local", action="store_true", help="also run on the throwaway local server (tmpfs)")
    parser.add_argument("--no-disk", action="store_true", help="only the throwaway local server")
    args = parser.parse_args()
    if not (args.example / "tests" / "conftest.py").is_file():
        print(f"{args.example} is not upstream's examples/fastapi-async (no tests/conftest.py)", file=sys.stderr)
        return 2
    if not (upstream_source(args.example) / "elefast" / "__init__.py").is_file():
        print(f"no upstream source at {upstream_source(args.example)}: use the example inside a clone of upstream's "
              "repository", file=sys.stderr)
        return 2
    upstream: Optional[str] = sys.executable  # the same Python and libraries for both: only elefast differs
    if sys.version_info < (3, 11):  # upstream needs 3.11+: its own venv then
        upstream, why = upstream_python()
        if upstream is None:
            print(f"upstream elefast is not available: {why}", file=sys.stderr)
            return 1
        ensure(upstream)
    ensure(sys.executable)
    print("# Upstream's fastapi-async example suite: this package vs upstream elefast (the same clone's src/)")
    same = "the same interpreter and libraries" if upstream == sys.executable else "its own venv"
    print(f"Python {platform.python_version()} (upstream: {same}), {os.cpu_count()} CPUs, {platform.platform()}")
    print()
    if not args.no_disk:
        print("\n".join(measure(f"{args.url.split('@')[-1]} (the machine's server, disk)", args.url, args.example,
                                args.rounds, upstream)))
    if args.local or args.no_disk:
        local: Optional[str] = local_server_url()
        if local is None:
            print("## throwaway local server: could not start it (see python -m elefast doctor)")
        else:
            print("\n".join(measure("throwaway local server (tmpfs, fsync off)", local, args.example, args.rounds,
                                    upstream)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
