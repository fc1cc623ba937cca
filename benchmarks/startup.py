"""How fast a test gets a server when none is configured: the local server and Docker.

Run: ``python benchmarks/startup.py [--repeat 5]`` (or ``make bench-startup``). Prints a table of
medians (and min/max) over the repetitions, each measured in fresh processes:

- ``postgres ready``: from launching ``postgres`` to it accepting connections, as the
  supervisor measured it, on a kept data directory on tmpfs;
- ``ensure_local_server``: the client's call, server not running, data directory kept;
- ``floor``: process start to ``import unittest, sqlalchemy.orm, psycopg`` done: what any
  SQLAlchemy test process pays before elefast does anything;
- ``first test, cold``: process start to the first test's body, with no cached initdb and no
  data directory (initdb included);
- ``first test, warm``: the same with the data directory kept from an earlier run;
- ``first test, hot``: the same while another process keeps the server running;
- ``postgres gone after SIGKILL``: a client killed with SIGKILL, until no postgres is left;
- ``docker: new container ready`` / ``reused``: when a Docker engine answers (DOCKER_HOST or
  the one the tests start) and the ``postgres:elefast-test`` image exists.

Everything runs in a private run directory and cache, so it does not disturb a server in use.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent

FIRST_TEST = """
import os, sys, time, unittest
sys.path.insert(0, {root!r})
from elefast import PostgresTestCase

class First(PostgresTestCase, unittest.TestCase):
    def test_first(self):
        elapsed = time.time() - float(os.environ["BENCH_T0"])
        print("FIRST", elapsed, flush=True)

    def tearDown(self):
        print("LAST_AT", time.time(), flush=True)  # the process should be gone soon after

unittest.main(argv=["x"], exit=False, verbosity=0)
"""

#: The same first test on a 20-table schema whose template a previous run kept.
FIRST_TEST_SCHEMA = FIRST_TEST.replace("""class First(PostgresTestCase, unittest.TestCase):
""", """import sqlalchemy as sa
from elefast import MetadataMigrator
metadata = sa.MetaData()
for number in range(20):
    sa.Table(f"t{{number:02d}}", metadata, sa.Column("id", sa.Integer, primary_key=True),
             sa.Column("name", sa.String(100), index=True), sa.Column("value", sa.Integer))

class First(PostgresTestCase, unittest.TestCase):
    schema = MetadataMigrator(metadata)
""")

FLOOR = """
import os, time
import unittest, sqlalchemy.orm, psycopg
print("FIRST", time.time() - float(os.environ["BENCH_T0"]), flush=True)
"""

CLIENT = """
import json, sys, time
sys.path.insert(0, {root!r})
t = time.perf_counter()
from elefast.provision.local import ensure_local_server, local_layout
imported = time.perf_counter()
ensure_local_server()
done = time.perf_counter()
state = local_layout().read_state()
print(json.dumps({{"ensure": done - imported, "state": state}}), flush=True)
time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 0)
"""


def env_for(run_dir: Path, cache: Path) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("ELEFAST_DATABASE_URL", "ELEFAST_SERVER")}
    env.update(ELEFAST_RUN_DIR=str(run_dir), ELEFAST_CACHE_DIR=str(cache))
    return env


def wait_stopped(run_dir: Path, timeout: float = 10) -> float:
    """Seconds until no postgres of ours runs (state file gone and its pid dead)."""
    start = time.monotonic()
    pids = []
    for state in run_dir.glob("*/state.json"):
        try:
            pids.append(json.loads(state.read_text())["postgres_pid"])
        except (OSError, ValueError, KeyError):
            pass
    while time.monotonic() - start < timeout:
        alive = [p for p in pids if _alive(p)]
        if not alive and not list(run_dir.glob("*/state.json")):
            break
        time.sleep(0.01)
    return time.monotonic() - start


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


EXITS: List[float] = []  # seconds from the end of a first_test() run's test to its process's end


def first_test(env: Dict[str, str], code: str = FIRST_TEST) -> float:
    env = dict(env, BENCH_T0=repr(time.time()))
    out = subprocess.run([sys.executable, "-c", code.format(root=str(ROOT))], env=env,
                         capture_output=True, text=True, timeout=120)
    ended = time.time()
    first = None
    for line in out.stdout.splitlines():
        if line.startswith("FIRST"):
            first = float(line.split()[1])
        elif line.startswith("LAST_AT"):
            EXITS.append(ended - float(line.split()[1]))
    if first is None:
        raise RuntimeError(out.stderr[-2000:])
    return first


def client(env: Dict[str, str], seconds: float = 0) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", CLIENT.format(root=str(ROOT)), str(seconds)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


FLOOR_MS: List[float] = []  # the floor's median, once measured: rows print their distance to it


def row(name: str, values: List[float], target: str, over_floor: bool = False) -> str:
    ms = [v * 1000 for v in values]
    over = ""
    if over_floor and FLOOR_MS:  # the distance, and the same as a share of the floor (the measure)
        over = f"+{statistics.median(ms) - FLOOR_MS[0]:.0f} ({(statistics.median(ms) - FLOOR_MS[0]) / FLOOR_MS[0]:.2f})"
    return (f"| {name} | {statistics.median(ms):.0f} | {over} | {min(ms):.0f} | {max(ms):.0f} | {len(ms)} | "
            f"{target} |")


def docker_rows(repeat: int) -> List[str]:
    try:
        import docker

        from elefast.extras.docker import Configuration, Container, postgres
    except ImportError:
        return ["| docker | skipped: the docker extra is not installed | | | | | |"]
    host = os.environ.get("DOCKER_HOST") or "unix:///var/tmp/elefast-test-docker/docker.sock"
    try:
        client_ = docker.DockerClient(base_url=host, timeout=5)
        client_.ping()
        client_.images.get("postgres:elefast-test")
    except Exception as error:
        reason = f"{type(error).__name__} (start an engine; build the image with the tests)"
        return [f"| docker | skipped: {reason} | | | | | |"]
    config = Configuration(container=Container(name="elefast-bench", version="elefast-test"))
    fresh, reused = [], []
    for _ in range(repeat):
        try:
            client_.containers.get("elefast-bench").remove(force=True)
        except docker.errors.NotFound:
            pass
        start = time.perf_counter()
        postgres("psycopg", docker=client_, config=config)
        fresh.append(time.perf_counter() - start)
        start = time.perf_counter()
        postgres("psycopg", docker=client_, config=config)
        reused.append(time.perf_counter() - start)
    client_.containers.get("elefast-bench").remove(force=True)
    return [row("docker: new container ready", fresh, "<= 3000"),
            row("docker: running container reused", reused, "")]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="eft-bench-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    os.chmod(base, 0o711)  # ours; as root the server user must traverse it
    cache = Path("/var/tmp" if os.geteuid() == 0 else tempfile.gettempdir()) / f"eft-bench-cache-{os.getpid()}"
    run_dir = base / "run"
    run_dir.mkdir(mode=0o711)
    env = env_for(run_dir, cache)
    results: Dict[str, List[float]] = {k: [] for k in ("floor", "ready", "ensure", "cold", "warm", "warm_schema",
                                                       "hot", "kill")}
    try:
        for _ in range(args.repeat):
            shutil.rmtree(cache, ignore_errors=True)
            for child in run_dir.iterdir():
                shutil.rmtree(child, ignore_errors=True)
            results["floor"].append(first_test(env, FLOOR))
            results["cold"].append(first_test(env))
            wait_stopped(run_dir)
            results["warm"].append(first_test(env))
            wait_stopped(run_dir)
            first_test(env, FIRST_TEST_SCHEMA)  # builds (or finds) the template, then the server stops
            wait_stopped(run_dir)
            results["warm_schema"].append(first_test(env, FIRST_TEST_SCHEMA))
            wait_stopped(run_dir)
            process = client(env)
            info = json.loads(process.stdout.readline())
            process.wait()
            results["ensure"].append(info["ensure"])
            results["ready"].append(info["state"]["ready_ms"] / 1000)
            wait_stopped(run_dir)
            keeper = client(env, 60)
            keeper.stdout.readline()
            results["hot"].append(first_test(env))
            keeper.send_signal(signal.SIGKILL)
            keeper.wait()
            results["kill"].append(wait_stopped(run_dir))
            for stream in (keeper.stdout, keeper.stderr, process.stdout, process.stderr):
                stream.close()
        from elefast.provision.binaries import find_binaries

        binaries = find_binaries()
        print(f"PostgreSQL {'.'.join(map(str, binaries.version))} from {binaries.bindir}; "
              f"run directory on {base.parent}; Python {sys.version.split()[0]}; {os.cpu_count()} CPUs\n")
        print("| measurement | median ms | over the floor (share of it) | min | max | runs | target ms |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
        print(row("floor: start Python, import unittest, sqlalchemy.orm, psycopg", results["floor"], ""))
        FLOOR_MS.append(statistics.median(results["floor"]) * 1000)
        print(row("postgres ready (kept data dir, tmpfs)", results["ready"], "<= 150"))
        print(row("ensure_local_server (server stopped)", results["ensure"], ""))
        print(row("first test, cold (no cache: initdb)", results["cold"], "<= 1500", True))
        print(row("first test, warm (data dir kept)", results["warm"], "floor + 50% of it (0.50)", True))
        print(row("first test, warm, 20-table schema (template kept)", results["warm_schema"],
                  "floor + 50% of it (0.50)", True))
        print(row("first test, hot (server running)", results["hot"], "", True))
        print(row("process gone after its last test", EXITS, "<= 300"))
        print(row("postgres gone after client SIGKILL", results["kill"], "<= 5000"))
        for line in docker_rows(args.repeat):
            print(line)
    finally:
        for state in run_dir.glob("*/state.json"):
            try:
                os.kill(json.loads(state.read_text())["supervisor_pid"], signal.SIGTERM)
            except (OSError, ValueError, KeyError):
                pass
        wait_stopped(run_dir)
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
