"""testing.postgresql against elefast's shim (``elefast.testing_postgresql``), side by side in one run.

Run::

    python benchmarks/testing_postgresql.py [--runs 5] [--tests 20] [--user postgres]
        [--python /path/to/venv/bin/python] [--project DIR "TESTS..." ...] [--path python]

Each measurement is the wall time of a fresh process (imports, server start and every instance:
what a suite pays), the two ways alternating, and the table shows the medians and their ratio:

- ``per-test instances``: ``--tests`` unittest tests, each ``Postgresql()`` in ``setUp``, a table
  made and queried over psycopg2 (``dsn()``), ``stop()`` in ``tearDown``;
- ``factory + on_initialized``: the same with ``PostgresqlFactory(cache_initialized_db=True,
  on_initialized=handler)``, the handler making and filling the table once;
- ``one shared instance``: one ``Postgresql()`` for the whole run (``setUpModule``), every test on it;
- ``--project DIR TESTS``: a real project's suite (``python -m unittest TESTS`` in ``DIR``), run as
  it is and as a copy in which each ``import testing.postgresql`` line became
  ``from elefast.testing_postgresql import testing`` (the whole port). Give it more than once.

testing.postgresql starts ``initdb`` and ``postgres``, which refuse to run as root: as root, give
``--user postgres`` and a ``--python`` (a virtualenv with ``testing.postgresql`` and ``psycopg2``)
that user can read; this checkout must be readable by it too. elefast uses what a suite would:
``ELEFAST_DATABASE_URL`` if set, else its throwaway local server.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
IMPORTS = {"testing.postgresql": "import testing.postgresql",
           "elefast": "from elefast.testing_postgresql import testing"}

SUITE = '''
import unittest
{import_line}
import psycopg2

MODE = {mode!r}
FACTORY = None
SHARED = None


def handler(postgresql):
    with psycopg2.connect(**postgresql.dsn()) as connection, connection.cursor() as cursor:
        cursor.execute("CREATE TABLE items (id serial PRIMARY KEY, name text)")
        cursor.execute("INSERT INTO items (name) SELECT 'item ' || n FROM generate_series(1, 100) n")


def setUpModule():
    global FACTORY, SHARED
    if MODE == "factory":
        FACTORY = testing.postgresql.PostgresqlFactory(cache_initialized_db=True, on_initialized=handler)
    elif MODE == "shared":
        SHARED = testing.postgresql.Postgresql()
        handler(SHARED)


def tearDownModule():
    if FACTORY is not None:
        FACTORY.clear_cache()
    if SHARED is not None:
        SHARED.stop()


class Items(unittest.TestCase):
    def setUp(self):
        if MODE == "per-test":
            self.postgresql = testing.postgresql.Postgresql()
            handler(self.postgresql)
        elif MODE == "factory":
            self.postgresql = FACTORY()
        else:
            self.postgresql = SHARED
        self.connection = psycopg2.connect(**self.postgresql.dsn())

    def tearDown(self):
        self.connection.close()
        if self.postgresql is not SHARED:
            self.postgresql.stop()


def make(number):
    def test(self):
        with self.connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM items WHERE id <= %s", (number,))
            self.assertEqual(cursor.fetchone()[0], min(number, 100))
    return test


for number in range({tests}):
    setattr(Items, "test_%03d" % number, make(number + 1))
'''


def command(args: argparse.Namespace, argv: Sequence[str]) -> List[str]:
    """``argv`` run as ``--user`` (with PostgreSQL's binaries on PATH for testing.postgresql).

    elefast comes from ``args.site``, a folder holding only a link to this checkout's package:
    the checkout's own ``tests`` package must not hide a project's.
    """
    path = ":".join([str(args.site), ".", *args.path])
    env = ["env", f"PATH={args.bindir}:{os.environ.get('PATH', '')}", f"PYTHONPATH={path}"]
    for name in ("ELEFAST_DATABASE_URL", "ELEFAST_SERVER", "ELEFAST_POSTGRES_BINDIR"):
        if os.environ.get(name):
            env.append(f"{name}={os.environ[name]}")
    prefix = ["runuser", "-u", args.user, "--"] if args.user else []
    return [*prefix, *env, *argv]


def timed(args: argparse.Namespace, argv: Sequence[str], cwd: Path) -> Tuple[float, bool, str]:
    """Seconds the process took, whether it passed, and the tail of its output."""
    started = time.perf_counter()
    done = subprocess.run(command(args, argv), cwd=str(cwd), capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - started
    lines = (done.stdout + done.stderr).strip().splitlines() or [""]
    return seconds, done.returncode == 0, lines[-1] if done.returncode == 0 else " | ".join(lines[-3:])


def scenarios(args: argparse.Namespace, work: Path) -> Dict[str, Dict[str, Path]]:
    """The synthetic suites, one folder per scenario and way: {scenario: {way: folder}}."""
    found: Dict[str, Dict[str, Path]] = {}
    for mode, label, tests in (("per-test", "per-test instances", 1), ("per-test", "per-test instances", args.tests),
                               ("factory", "factory + on_initialized", args.tests),
                               ("shared", "one shared instance", args.tests)):
        for way, line in IMPORTS.items():
            folder = work / f"{mode}-{tests}-{way.replace('.', '_')}"
            folder.mkdir()
            source = SUITE.format(import_line=line, tests=tests, mode=mode)
            (folder / "test_suite.py").write_text(source)
            found.setdefault(f"{label} ({tests} test{'s' if tests > 1 else ''})", {})[way] = folder
    return found


def ported(project: Path, work: Path) -> Dict[str, Path]:
    """The project as it is and with its ``import testing.postgresql`` lines changed."""
    copies = {}
    for way, line in IMPORTS.items():
        target = work / f"{project.name}-{way.replace('.', '_')}"
        shutil.copytree(project, target)
        if way == "elefast":
            for path in target.rglob("*.py"):
                text = path.read_text()
                new = re.sub(r"^(\s*)import testing\.postgresql\s*$", rf"\g<1>{line}", text, flags=re.M)
                new = re.sub(r"^(\s*)from testing\.postgresql import", r"\g<1>from elefast.testing_postgresql import",
                             new, flags=re.M)
                if new != text:
                    path.write_text(new)
        copies[way] = target
    return copies


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tests", type=int, default=20)
    parser.add_argument("--user", help="run the suites as this user (testing.postgresql refuses root)")
    parser.add_argument("--python", default=sys.executable, help="an interpreter with testing.postgresql, psycopg2")
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    parser.add_argument("--bindir", default=str(found[-1]) if found else "/usr/bin",
                        help="where initdb and postgres are, for testing.postgresql")
    parser.add_argument("--project", nargs=2, action="append", default=[], metavar=("DIR", "TESTS"),
                        help="a project's folder and what to run there (unittest names, space-separated)")
    parser.add_argument("--only-projects", action="store_true", help="skip the synthetic suites")
    parser.add_argument("--path", action="append", default=[],
                        help="add to PYTHONPATH (relative: in the suite's folder)")
    args = parser.parse_args(argv)
    if os.geteuid() == 0 and not args.user:
        parser.error("testing.postgresql's initdb refuses root: give --user postgres (and a --python it can read)")
    work = Path(tempfile.mkdtemp(prefix="tpg-bench-"))
    os.chmod(work, 0o755)
    args.site = work / "site"
    args.site.mkdir()
    (args.site / "elefast").symlink_to(ROOT / "elefast")
    try:
        suites: Dict[str, Tuple[Dict[str, Path], str]] = {}
        if not args.only_projects:
            for name, folders in scenarios(args, work).items():
                suites[name] = (folders, "test_suite")
        for directory, module in args.project:
            suites[f"{Path(directory).name} (real project)"] = (ported(Path(directory).resolve(), work), module)
        subprocess.run(["chmod", "-R", "a+rX", str(work)], check=True)
        rows = []
        for name, (folders, module) in suites.items():
            times: Dict[str, List[float]] = {way: [] for way in IMPORTS}
            outcome: Dict[str, str] = {}
            for _run in range(args.runs):
                for way in IMPORTS:
                    unittest = [args.python, "-m", "unittest", "-q", *module.split()]
                    seconds, passed, tail = timed(args, unittest, folders[way])
                    times[way].append(seconds)
                    if not passed:
                        outcome[way] = f"FAILED: {tail}"
                    outcome.setdefault(way, tail)
            old, new = (statistics.median(times[way]) for way in IMPORTS)
            rows.append((name, old, new, old / new, outcome))
            print(f"{name}: testing.postgresql {old:.2f} s, elefast {new:.2f} s ({outcome})", file=sys.stderr)
        width = max(len(row[0]) for row in rows)
        print(f"\nmedians of {args.runs} runs, wall time of the whole process")
        print(f"| {'suite':<{width}} | testing.postgresql | elefast shim | faster |")
        print(f"| {'-' * width} | ------------------ | ------------ | ------ |")
        for name, old, new, ratio, _ in rows:
            print(f"| {name:<{width}} | {old:16.2f} s | {new:10.2f} s | {ratio:5.1f}x |")
        times_of = {name: (old, new) for name, old, new, *_ in rows}
        one = times_of.get("per-test instances (1 test)")
        many = times_of.get(f"per-test instances ({args.tests} tests)")
        if one and many and args.tests > 1:  # what each further test costs: the process's start taken out
            old, new = ((many[i] - one[i]) / (args.tests - 1) for i in (0, 1))
            label = "each further per-test instance"
            print(f"| {label:<{width}} | {old:16.3f} s | {new:10.3f} s | {old / new:5.1f}x |")
        failed = [f"{name} ({way}): {text}" for name, *_, outcome in rows for way, text in outcome.items()
                  if text.startswith("FAILED")]
        for line in failed:
            print(line)
        return 1 if failed else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
