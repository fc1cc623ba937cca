"""The benchmark behind every speed claim: the same test suite, isolated six ways, side by side.

``python benchmarks/bench.py`` (or ``make bench``) runs, in one run, on the throwaway local
server and on the server at ``BENCH_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``):

- ``elefast-database``: this project, a fresh clone per test from the background pool;
- ``elefast-transaction``: this project, one clone per class, each test rolled back;
- ``upstream``: upstream elefast 0.1.0a5 (clone per test, in a venv of its own on Python >= 3.12);
- ``janitor``: pytest-postgresql's ``DatabaseJanitor``, clone per test from a template;
- ``naive``: ``create_all``/``drop_all`` per test in one database;
- ``rollback``: the floor: one database, each test in a transaction rolled back, plain SQLAlchemy.

Each mode runs N tests (default 200) over a 20-table indexed schema in a fresh process. The
tables give per test: overhead (test time minus its body) median and p95, the wait in setUp for
a database, the suite's wall time and its ratio to each peer; then the cold start of a
process (first test done, counted from process start) with and without a cached template.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
UPSTREAM_VENV = HERE / ".upstream-venv"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ALL_MODES = ["elefast-database", "elefast-transaction", "upstream", "janitor", "naive", "rollback"]


def admin_connect(url: str) -> Any:
    """A psycopg autocommit connection to the maintenance database of the server at ``url`` (any
    SQLAlchemy or libpq URL, the local server's socket URL included)."""
    import psycopg
    from sqlalchemy import make_url

    parsed = make_url(url.replace("postgresql+psycopg://", "postgresql://", 1))
    kwargs = dict(user=parsed.username, dbname="postgres", port=parsed.port, autocommit=True,
                  host=parsed.query.get("host") or parsed.host, password=parsed.password)
    return psycopg.connect(**{k: v for k, v in kwargs.items() if v is not None})


def settle(url: str, seconds: float = 60.0) -> float:
    """Wait until the server has none of elefast's clones left to drop (a detached dropper drops
    them after a run's process has ended), so the next timed run does not share the server with
    the last one's leftover work; return the seconds waited."""
    started = time.monotonic()
    with admin_connect(url) as conn:
        while time.monotonic() - started < seconds:
            left = conn.execute("SELECT count(*) FROM pg_database WHERE NOT datistemplate AND "
                                "shobj_description(oid, 'pg_database') LIKE 'elefast database%%'").fetchone()
            if not left or not left[0]:
                break
            time.sleep(0.1)
    return time.monotonic() - started


def find_upstream_python() -> Optional[str]:
    """A Python >= 3.12 for upstream elefast (pyenv's, else on PATH)."""
    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[2-9]*/bin/python")), reverse=True)
    candidates += [p for p in (shutil.which("python3.13"), shutil.which("python3.12")) if p]
    return candidates[0] if candidates else None


def upstream_python() -> Tuple[Optional[str], str]:
    """The upstream venv's python (made on first use), or None and why not."""
    python = UPSTREAM_VENV / "bin" / "python"
    if python.exists():
        return str(python), ""
    base = find_upstream_python()
    if base is None:
        return None, "no Python >= 3.12 (pyenv or PATH) for upstream elefast 0.1.0a5"
    try:
        subprocess.run([base, "-m", "venv", str(UPSTREAM_VENV)], check=True, capture_output=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--ignore-requires-python",
                        "elefast==0.1.0a5", "greenlet", "psycopg[binary]", "sqlalchemy>=2"],
                       check=True, capture_output=True, text=True, timeout=600)
    except (subprocess.SubprocessError, OSError) as error:
        shutil.rmtree(UPSTREAM_VENV, ignore_errors=True)
        return None, f"could not install upstream elefast 0.1.0a5: {error}"
    return str(python), ""


def run_mode(mode: str, url: str, count: int, body: str, upstream: Optional[str]) -> Dict[str, Any]:
    python = upstream if mode == "upstream" else sys.executable
    settle(url)  # the last run's dropper is done: this run has the server to itself
    env = dict(os.environ, BENCH_T0=repr(time.time()))
    env.pop("ELEFAST_DATABASE_URL", None)
    if mode != "upstream":
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([python, str(HERE / "workload.py"), mode, url, str(count), body],  # type: ignore[list-item]
                         cwd=str(HERE), env=env, capture_output=True, text=True, timeout=3600)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        return {"mode": mode, "ok": False, "errors": [out.stderr[-1500:]], "records": []}
    return json.loads(lines[-1])  # type: ignore[no-any-return]


def ms(values: List[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def table(results: List[Dict[str, Any]], skipped: Dict[str, str]) -> List[str]:
    walls = {r["mode"]: r["wall"] for r in results if r.get("ok")}
    peers = [m for m in ("upstream", "janitor", "naive", "rollback") if m in walls]
    head = ("| mode | overhead median ms | overhead p95 ms | wait median ms | total median ms | suite wall s | "
            + " | ".join(f"x vs {p}" for p in peers) + " |")
    lines = [head, "|" + " --- |" * (6 + len(peers))]
    for result in results:
        mode = result["mode"]
        if not result.get("ok"):
            lines.append(f"| {mode} | failed: {' '.join(result.get('errors', []))[:300]!r} |")
            continue
        records = result["records"]
        overhead = [r["total"] - r["body"] for r in records]
        wait = [r["wait"] for r in records]
        total = [r["total"] for r in records]
        ratios = " | ".join(f"{walls[p] / result['wall']:.2f}" for p in peers)
        lines.append(f"| {mode} | {ms(overhead, 0.5):.1f} | {ms(overhead, 0.95):.1f} | {ms(wait, 0.5):.1f} | "
                     f"{ms(total, 0.5):.1f} | {result['wall']:.2f} | {ratios} |")
    for mode, why in skipped.items():
        lines.append(f"| {mode} | skipped: {why} |")
    return lines


def cold_start(url: str, drop_templates: Any) -> List[str]:
    """First test of a fresh process (done, from process start), without and with the template."""
    rows = []
    for label, prepare in (("no template (first run)", drop_templates), ("template kept (second run)", None)):
        if prepare is not None:
            prepare()
        result = run_mode("elefast-database", url, 1, "work", None)
        first = result["records"][0].get("first_at") if result.get("records") else None
        rows.append(f"| {label} | {first * 1000:.0f} |" if first is not None else f"| {label} | failed |")
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=200)
    parser.add_argument("--servers", default="local,url", help="local, url or both (comma separated)")
    parser.add_argument("--modes", default=",".join(ALL_MODES))
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from elefast.provision.local import ensure_local_server

    modes = args.modes.split(",")
    upstream, why = upstream_python() if "upstream" in modes else (None, "not asked for")
    skipped = {"upstream": why} if upstream is None and "upstream" in modes else {}
    servers = []
    if "local" in args.servers:
        local = ensure_local_server()  # held for the whole benchmark by this process's lease
        servers.append(("throwaway local server (tmpfs, fsync off)", local.render_as_string(hide_password=False)))
    if "url" in args.servers:
        servers.append((f"{os.environ.get('BENCH_URL', DEFAULT_URL)} (the machine's, disk, fsync on)",
                        os.environ.get("BENCH_URL", DEFAULT_URL)))

    print(f"# elefast benchmark: {args.tests} tests per mode, 20 indexed tables")
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.platform()}\n")
    for label, url in servers:
        plain = url.replace("postgresql+psycopg://", "postgresql://")

        def drop_bench_templates(u: str = plain) -> None:
            with admin_connect(u) as conn:
                for (name,) in conn.execute("select datname from pg_database where datistemplate "
                                            "and datname like 'bench!_tpl!_%%' escape '!'").fetchall():
                    conn.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE false')
                    conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')

        print(f"## {label}\n")
        for body, count, body_modes, title in (
            ("work", args.tests, modes, "tests that insert into 3 tables, commit and count"),
            ("nothing", args.tests, [m for m in modes if m in ("elefast-database", "upstream", "rollback")],
             "tests that do almost nothing (SELECT 1)"),
            ("sleep50", max(20, args.tests // 4),
             [m for m in modes if m in ("elefast-database", "upstream", "rollback")],
             "tests that take >= 50 ms (the work above plus 50 ms)"),
        ):
            results = []
            for mode in body_modes:
                if mode in skipped:
                    continue
                results.append(run_mode(mode, url, count, body, upstream))
            print(f"### {title}: {count} tests\n")
            print("\n".join(table(results, {m: w for m, w in skipped.items() if m in body_modes})))
            print()
        print("### cold start: elefast database mode, process start to first test done\n")
        print("| case | ms |\n| --- | ---: |")
        print("\n".join(cold_start(url, drop_bench_templates)))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
