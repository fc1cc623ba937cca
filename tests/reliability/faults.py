"""Fault scenarios: real test processes killed, interrupted, leaking, losing their server.

Each function runs its scenario against the harness's private local server and
returns its :class:`~tests.reliability.harness.Row`.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Sequence

from tests.reliability.harness import CASES, ROOT, Harness, Row

BUSY_SOURCE = "being accessed by other users"


def _tail(result: subprocess.CompletedProcess) -> str:  # type: ignore[type-arg]
    return str(result.stdout)[-1500:]


def _count_leftovers(h: Harness, row: Row, prefix: str, known: Sequence[str] = ()) -> None:
    """Leftover databases of ``prefix`` (but the ``known`` ones, reported by the caller), then the
    server still running 6 s after the last client."""
    left = [entry for entry in h.leftovers(prefix) if entry.split(" ", 1)[0] not in known]
    if left:
        row.notes.append(f"left behind: {left}")
    servers = h.servers_left_after()
    if servers:
        row.notes.append(f"{servers} server processes still running after the last client")
    row.leftovers += len(left) + servers


def _kill_repeatedly(h: Harness, row: Row, target: str, prefix: str, runs: int, pause: float = 0) -> None:
    """Start ``target`` ``runs`` times; SIGKILL each once it signals (after up to ``pause`` s more)."""
    for number in range(runs):
        process, _, reached = h.start_until_signal(f"{CASES}.{target}", f"{prefix}{number}", RELIABILITY_PREFIX=prefix)
        time.sleep(random.uniform(0, pause))
        os.kill(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        row.runs += 1
        if not reached:
            row.fail(f"run {number} never got to the point of the kill:\n{output[-1500:]}")


def _run_after_kills(h: Harness, row: Row, prefix: str, known: Sequence[str] = ()) -> None:
    """One ordinary run (its pool sweeps what the killed ones left), then nothing may be left."""
    result = h.run(f"{CASES}.Work", h.child_env(RELIABILITY_PREFIX=prefix))
    row.runs += 1
    if result.returncode != 0:
        row.fail(f"the run after the kills failed:\n{_tail(result)}")
    _count_leftovers(h, row, prefix, known)


def killed_mid_test(h: Harness, runs: int = 20) -> Row:
    """SIGKILL a test process mid-test ``runs`` times; one ordinary run afterwards sweeps it all."""
    row = Row(f"SIGKILL mid-test x{runs}, then one run")
    prefix = "relkill"
    _kill_repeatedly(h, row, "Hang", prefix, runs)
    orphans = h.leftovers(prefix)
    row.notes.append(f"(info) the killed runs left {len(orphans)} databases for the next run to sweep")
    _run_after_kills(h, row, prefix)
    return row


def killed_mid_async_create(h: Harness, runs: int = 20) -> Row:
    """SIGKILL a process looping on ``await server.create_database()`` ``runs`` times: no database
    is ever left without its ownership mark (the mark goes out in the same write as the CREATE), and
    the next run sweeps them all."""
    row = Row(f"SIGKILL during async create_database x{runs}")
    prefix = "relacreate"
    _kill_repeatedly(h, row, "AsyncCreateLoop", prefix, runs, pause=0.15)  # mid-CREATE, or between two
    found = [d for d in h.databases() if str(d["name"]).startswith(prefix + "_") and not d["template"]]
    unmarked = [str(d["name"]) for d in found if not str(d["comment"])]
    row.notes.append(f"(info) the killed runs left {len(found)} databases, {len(unmarked)} of them unmarked")
    if unmarked:
        row.fail(f"databases left without their ownership mark (no sweep may take them): {unmarked}")
    _run_after_kills(h, row, prefix, unmarked)
    return row


def machines_sharing_a_server(h: Harness, processes: int = 8) -> Row:
    """``processes`` suites at once, each with its own HOME and TMPDIR (as if on as many CI machines:
    no local file in common), on one server (the machine's, as a shared CI database server would be):
    the template is built exactly once, nothing is left."""
    from tests.reliability.bad_input import MACHINE_URL

    row = Row(f"{processes} machines (own HOME, TMPDIR) on one server")
    prefix = "relmach"
    schema = f"m{os.getpid()}{random.randrange(10**6)}"  # a schema no earlier run built
    children = []
    for number in range(processes):
        home = h.scratch / f"machine{number}"
        (home / "tmp").mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in h.child_env().items() if k not in ("ELEFAST_SERVER", "ELEFAST_RUN_DIR")}
        # A process running a sync and an async class peaks at 13 client connections, so 8 of them
        # graze the machine server's max_connections = 100: elefast waits for a free slot and goes
        # lean instead of failing with "too many clients" (elefast/_engines/budget.py).
        env.update(HOME=str(home), TMPDIR=str(home / "tmp"), ELEFAST_DATABASE_URL=MACHINE_URL, ELEFAST_LOG="info",
                   RELIABILITY_PREFIX=prefix, RELIABILITY_SCHEMA=schema)
        env.pop("XDG_CACHE_HOME", None)
        children.append(h.start(f"{CASES}.Work {CASES}.AsyncWork", env))
    outputs = []
    for child in children:
        output, in_time = h.finish(child, 300)
        outputs.append(output)
        row.runs += 1
        if child.returncode != 0 or not in_time:
            row.fail(f"a suite failed:\n{output[-1500:]}")
    built = sum(output.count(" built for ") for output in outputs)
    row.notes.append(f"(info) template built {built} time(s), reused {sum(o.count(' reused for ') for o in outputs)}")
    if built != 1:
        row.fail(f"the template was built {built} times, expected exactly once")
    _count_leftovers(h, row, prefix)
    return row


def _drop_templates(prefix: str) -> None:
    """The machine's server is shared: the scenario's own templates go when it is done."""
    import psycopg

    from tests.reliability.bad_input import MACHINE_URL

    dsn = MACHINE_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as connection:
        names = [r[0] for r in connection.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s ESCAPE '!'", (prefix + "!_tpl!_%",)).fetchall()]
        for name in names:
            connection.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE false')
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def interrupted(h: Harness, runs: int = 5) -> Row:
    """SIGINT (Ctrl-C) mid-test: the run stops within 15 s and leaves nothing, with no sweep."""
    row = Row(f"SIGINT mid-test x{runs}")
    prefix = "relint"
    for number in range(runs):
        process, _, reached = h.start_until_signal(f"{CASES}.Hang", f"int{number}", RELIABILITY_PREFIX=prefix)
        process.send_signal(signal.SIGINT)
        output, in_time = h.finish(process, 15)
        if not in_time:
            row.fail(f"run {number} did not stop within 15 s of SIGINT:\n{output[-1500:]}")
        row.runs += 1
        if not reached:
            row.fail(f"run {number} never reached the test:\n{output[-1500:]}")
        elif "KeyboardInterrupt" not in output:
            row.fail(f"run {number} did not stop on KeyboardInterrupt:\n{output[-1500:]}")
        left = h.leftovers(prefix)  # no sweeping run in between: the interrupted run cleaned up itself
        if left:
            row.notes.append(f"run {number} left {left}")
        row.leftovers += len(left)
    servers = h.servers_left_after()
    row.leftovers += servers
    return row


def leaked_connections(h: Harness) -> Row:
    """Tests that leave connections and open transactions: the next test is unaffected."""
    row = Row("leaked connections and transactions")
    prefix = "relleak"
    result = h.run(f"{CASES}.Leaks {CASES}.LeaksInTransactionMode", h.child_env(RELIABILITY_PREFIX=prefix))
    row.runs += 1
    if result.returncode != 0 or "Ran 4 tests" not in result.stdout:
        row.fail(f"the suite failed:\n{_tail(result)}")
    _count_leftovers(h, row, prefix)
    return row


def server_killed(h: Harness, runs: int = 4) -> Row:
    """The server is SIGKILLed mid-test: both tests fail naming it; the next run gets a fresh server.

    Runs alternate between the sync and the async test case.
    """
    row = Row(f"server killed mid-run x{runs} (sync, async), then one run")
    prefix = "relsrv"
    for number in range(runs):
        case = "ServerKilled" if number % 2 == 0 else "AsyncServerKilled"
        process, files, reached = h.start_until_signal(f"{CASES}.{case}", f"srv{number}", RELIABILITY_PREFIX=prefix)
        state = h.state() or {}
        killed = int(str(state.get("postgres_pid", 0)))
        if reached and killed:
            os.kill(killed, signal.SIGKILL)
        Path(files["RELIABILITY_GO"]).write_text("go")
        output, in_time = h.finish(process, 120)
        if not in_time:
            row.fail(f"run {number} hung after the server was killed:\n{output[-1500:]}")
        row.runs += 1
        explained = output.count("elefast.errors.ServerLostError: The throwaway local PostgreSQL server")
        if not reached or not killed:
            row.fail(f"run {number}: the test never ran with a server to kill:\n{output[-1500:]}")
        elif process.returncode == 0 or explained < 2:
            row.fail(f"run {number}: expected both tests to fail with ServerLostError, got:\n{output[-3000:]}")
        result = h.run(f"{CASES}.Work", h.child_env(RELIABILITY_PREFIX=prefix))
        row.runs += 1
        fresh = int(str((h.state() or {}).get("postgres_pid", 0)))
        if result.returncode != 0:
            row.fail(f"the run after the kill failed:\n{_tail(result)}")
        elif fresh == killed:
            row.fail("the next run did not get a fresh server")
    _count_leftovers(h, row, prefix)
    return row


def two_schemas_at_once(h: Harness) -> Row:
    """Two suites with different schemas at once on one server: both green, one template each."""
    row = Row("two schemas at once on one server")
    prefix = "reltwo"
    processes = [
        h.start(f"{CASES}.Work {CASES}.AsyncWork", h.child_env(RELIABILITY_PREFIX=prefix, RELIABILITY_SCHEMA=schema))
        for schema in ("a", "b")
    ]
    for process in processes:
        output, _ = process.communicate(timeout=300)
        row.runs += 1
        if process.returncode != 0:
            row.fail(f"a suite failed:\n{output[-1500:]}")
    templates = [d for d in h.databases() if str(d["name"]).startswith(prefix + "_tpl_")]
    if len(templates) != 2:
        row.fail(f"expected one template per schema, found {[d['name'] for d in templates]}")
    _count_leftovers(h, row, prefix)
    return row


def migration_fails_halfway(h: Harness) -> Row:
    """A migration failing halfway: the suite errors naming it, and no template remains."""
    from tests import support

    row = Row("migration fails halfway")
    prefix = "relhalf"
    ini = support.alembic_project_failing_halfway(h.scratch / "halfway")
    result = h.run(f"{CASES}.HalfwayMigration",
                   h.child_env(RELIABILITY_PREFIX=prefix, RELIABILITY_ALEMBIC=str(ini)))
    row.runs += 1
    if result.returncode == 0 or "Alembic revision 0003 (0003_halfway.py, line" not in result.stdout:
        row.fail(f"expected a MigrationError naming revision 0003:\n{_tail(result)}")
    anything = [str(d["name"]) for d in h.databases() if str(d["name"]).startswith(prefix + "_")]
    if anything:
        row.notes.append(f"left behind: {anything}")
    row.leftovers += len(anything) + h.servers_left_after()
    return row


def parallel_runners(h: Harness) -> List[Row]:
    """The example suite under unittest-parallel, stestr and pytest-xdist, 4 workers each."""
    suite = "examples/legacy_app/tests"
    runners = [
        ("unittest-parallel -j 4", "unittest_parallel",
         [sys.executable, "-m", "unittest_parallel", "-j", "4", "-t", ".", "-s", suite]),
        ("stestr run --concurrency 4", "stestr",
         [sys.executable, "-m", "stestr", "--here", str(ROOT), "run", "--concurrency", "4"]),
        ("pytest -n 4", "xdist",
         [sys.executable, "-m", "pytest", "-q", "-n", "4", "-p", "no:cacheprovider", suite]),
    ]
    rows = []
    for label, module, command in runners:
        row = Row(label)
        rows.append(row)
        try:
            __import__(module)
        except ImportError:
            row.fail(f"{module} is not installed (pip install -e '.[test]')")
            continue
        before = {str(d["name"]) for d in h.databases()}
        result = h.run("", argv=command, timeout=600)
        shutil.rmtree(ROOT / ".stestr", ignore_errors=True)
        row.runs += 1
        if result.returncode != 0:
            row.fail(f"the run failed:\n{_tail(result)}")
        if BUSY_SOURCE in result.stdout:
            row.fail(f"'{BUSY_SOURCE}' appeared:\n{_tail(result)}")
        after = h.databases()
        new = [f"{d['name']} ({d['comment'] or 'no comment'})" for d in after if str(d["name"]) not in before
               and not (d["template"] and "_tpl_" in str(d["name"]))]
        new_templates = [str(d["name"]) for d in after if str(d["name"]) not in before and d["template"]]
        if len(new_templates) > 2:  # the example has a sync and an Alembic schema at most
            row.fail(f"templates built more than once: {new_templates}")
        if new:
            row.notes.append(f"left behind: {new}")
        row.leftovers += len(new) + h.servers_left_after()
    return rows


def small_server(h: Harness, runs: int = 0) -> List[Row]:
    """pytest -n 8 and unittest-parallel -j 8 on a server with max_connections = 30 (8 workers would
    need ~60 connections if each kept its pool's): no 'too many clients', no ServerFullError,
    nothing left behind.

    unittest-parallel runs with ``--level test`` (a test per task: the hardest case). Each runs once
    in ``make reliability``; ``RELIABILITY_SMALL_RUNS=N`` runs each N times (10 of 10 clean, both
    runners, once the lost-signal relay was in).
    """
    stress = int(os.environ.get("RELIABILITY_SMALL_RUNS", "0") or 0)
    runs = runs or stress or 1
    level = ["--level", "test"]
    import psycopg

    from tests import support

    suite = "examples/legacy_app/tests"
    runners = [
        (f"pytest -n 8, max_connections = 30, x{runs}", "xdist",
         [sys.executable, "-m", "pytest", "-q", "-n", "8", "-p", "no:cacheprovider", suite]),
        (f"unittest-parallel -j 8 --level test, max_connections = 30, x{runs}",
         "unittest_parallel",
         [sys.executable, "-m", "unittest_parallel", "-j", "8", *level, "-s", suite, "-t", "."]),
    ]
    rows = [Row(label) for label, _, _ in runners]
    with support.password_server("reliability", max_connections="30") as url:
        for row, (_, module, command) in zip(rows, runners):
            try:
                __import__(module)
            except ImportError:
                row.fail(f"{module} is not installed (pip install -e '.[test]')")
                continue
            env = dict(os.environ, ELEFAST_DATABASE_URL=url)
            for number in range(runs):
                try:
                    result = subprocess.run(command, cwd=str(ROOT), env=env, capture_output=True, text=True,
                                            timeout=300)
                except subprocess.TimeoutExpired:
                    row.runs += 1
                    row.fail(f"run {number} hung (killed after 300 s)")
                    continue
                output = result.stdout + result.stderr
                row.runs += 1
                if result.returncode != 0:
                    row.fail(f"run {number} failed:\n{output[-1500:]}")
                elif "too many clients" in output or "ServerFullError" in output:
                    row.fail(f"run {number}: 'too many clients' appeared")
                deadline = time.monotonic() + 15
                while True:  # the workers' exit drops their clones
                    with psycopg.connect(url) as conn:
                        left = [r[0] for r in conn.execute("select datname from pg_database "
                                                           "where datname ~ '^elefast_[0-9a-f]{16}$'")]
                    if not left or time.monotonic() > deadline:
                        break
                    time.sleep(0.2)
                if left:
                    row.notes.append(f"run {number} left behind: {left}")
                row.leftovers += len(left)
    return rows
