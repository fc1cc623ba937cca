"""What every reliability scenario needs: child processes, leftovers, the result table.

The scenarios run on a throwaway local server of their own (its run directory is a
fresh temporary directory), so nothing else on the machine is touched and "no server
left" can be checked by looking for its processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from elefast._server.dropper import DROPPER_SECONDS

ROOT = Path(__file__).resolve().parents[2]
CASES = "tests.reliability.cases"


@dataclass
class Row:
    """One line of the table: a scenario, how often it ran, what went wrong."""

    scenario: str
    runs: int = 0
    failures: int = 0
    leftovers: int = 0
    notes: List[str] = field(default_factory=list)

    def fail(self, why: str) -> None:
        """Count an unexpected outcome and keep why (printed under the table)."""
        self.failures += 1
        self.notes.append(why)


class Harness:
    """A private local server's environment, and the ways to run and inspect child processes."""

    def __init__(self) -> None:
        base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        self.run_base = tempfile.mkdtemp(prefix="elefast-reliability-", dir=base)
        os.chmod(self.run_base, 0o755)  # as root the server runs as another user, who must get in
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("ELEFAST_", "RELIABILITY_"))}
        self.env.update(ELEFAST_SERVER="local", ELEFAST_RUN_DIR=self.run_base, PYTHONPATH=str(ROOT))
        self.scratch = Path(tempfile.mkdtemp(prefix="elefast-reliability-files-"))

    def child_env(self, **extra: str) -> Dict[str, str]:
        """The children's environment plus ``extra``."""
        env = dict(self.env)
        env.update(extra)
        return env

    def start(self, target: str, env: Optional[Dict[str, str]] = None, argv: Sequence[str] = ()) -> subprocess.Popen:  # type: ignore[type-arg]
        """Start ``python -m unittest <target>`` (or ``argv`` as given) in its own process group."""
        command = list(argv) or [sys.executable, "-m", "unittest", *target.split()]
        return subprocess.Popen(command, cwd=ROOT, env=env or self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True,
                                preexec_fn=_interruptible)

    def run(self, target: str, env: Optional[Dict[str, str]] = None, timeout: float = 300,
            argv: Sequence[str] = ()) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
        """Run a child to its end; its output is stdout and stderr together."""
        process = self.start(target, env, argv)
        output, in_time = self.finish(process, timeout)
        if not in_time:
            output += f"\n[harness: killed after {timeout} s]"
        if not wait_for_group(process.pid, 60):
            output += "\n[harness: the run's other processes were still running 60 s after it ended]"
        return subprocess.CompletedProcess(process.args, process.returncode, output, "")

    @staticmethod
    def finish(process: subprocess.Popen, timeout: float) -> Tuple[str, bool]:  # type: ignore[type-arg]
        """Wait for ``process``; past ``timeout`` kill its group. (its output, whether it ended in time)."""
        try:
            output, _ = process.communicate(timeout=timeout)
            return output, True
        except subprocess.TimeoutExpired:
            try:  # the cases dump every thread's stack on SIGUSR1: where it hung goes into the output
                os.kill(process.pid, signal.SIGUSR1)
                time.sleep(1)
            except OSError:
                pass
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
            return output, False

    def signal_files(self, label: str) -> Dict[str, str]:
        """Fresh RELIABILITY_SIGNAL / RELIABILITY_GO paths for one child."""
        signal_file, go_file = self.scratch / f"{label}.signal", self.scratch / f"{label}.go"
        for path in (signal_file, go_file):
            path.unlink(missing_ok=True)
        return {"RELIABILITY_SIGNAL": str(signal_file), "RELIABILITY_GO": str(go_file)}

    def start_until_signal(self, target: str, label: str, **env: str) -> tuple:  # type: ignore[type-arg]
        """Start ``target`` with fresh signal files; wait until it signals (process, files, reached)."""
        files = self.signal_files(label)
        process = self.start(target, self.child_env(**env, **files))
        return process, files, self.wait_for_file(files["RELIABILITY_SIGNAL"], process)

    @staticmethod
    def wait_for_file(path: str, process: subprocess.Popen, timeout: float = 90) -> bool:  # type: ignore[type-arg]
        """Wait until ``path`` exists (True) or the process ended or time ran out (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if Path(path).exists():
                return True
            if process.poll() is not None:
                return False
            time.sleep(0.01)
        return False

    def droppers(self) -> List[int]:
        """Pids of the detached droppers running now (``python -m elefast._server.dropper``)."""
        return [pid for pid, command in living_processes() if "elefast._server.dropper" in command]

    def databases(self, env: Optional[Dict[str, str]] = None) -> List[Dict[str, object]]:
        """Every database on the scenario server but the three system ones (via a child), once
        the droppers that runs which ended left behind are done (within their 30 s)."""
        deadline = time.monotonic() + DROPPER_SECONDS + 5
        while self.droppers() and time.monotonic() < deadline:
            time.sleep(0.1)
        result = self.run("", env=env, argv=[sys.executable, "-m", CASES, "count"], timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"could not list databases:\n{result.stdout[-2000:]}")
        return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]

    def leftovers(self, prefix: str, env: Optional[Dict[str, str]] = None) -> List[str]:
        """Databases of ``prefix`` that should not exist: anything but a ready shared template."""
        found = []
        for row in self.databases(env):
            name, comment = str(row["name"]), str(row["comment"])
            if not name.startswith(prefix + "_"):
                continue
            if row["template"] and "_tpl_" in name and comment.startswith("elefast template"):
                continue  # kept across runs on purpose (the newest few per prefix)
            found.append(f"{name} ({comment or 'no comment'})")
        return found

    def server_processes(self) -> List[int]:
        """Pids of postgres processes serving the scenario server's data directory."""
        return [pid for pid, command in living_processes() if "postgres" in command and self.run_base in command]

    def servers_left_after(self, seconds: float = 6) -> int:
        """How many of the scenario server's processes still run ``seconds`` after the last client."""
        deadline = time.monotonic() + seconds
        while self.server_processes() and time.monotonic() < deadline:
            time.sleep(0.1)
        return len(self.server_processes())

    def state(self) -> Optional[Dict[str, object]]:
        """The scenario server's state file (pids, port), read without leasing the server."""
        for path in Path(self.run_base).glob("elefast-*/state.json"):
            try:
                return json.loads(path.read_text())  # type: ignore[no-any-return]
            except (OSError, ValueError):
                return None
        return None

    def close(self) -> None:
        """Stop the scenario server if it still runs and remove the temporary directories."""
        import shutil

        for pid in self.server_processes():
            try:
                os.kill(pid, signal.SIGQUIT)
            except OSError:
                pass
        self.servers_left_after(10)
        shutil.rmtree(self.run_base, ignore_errors=True)
        shutil.rmtree(self.scratch, ignore_errors=True)


def living_processes() -> List[Tuple[int, str]]:
    """(pid, command line) of every process on the machine that is not a zombie."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            status = (entry / "status").read_text()
        except OSError:
            continue
        if "State:\tZ" not in status:
            found.append((int(entry.name), command))
    return found


def _interruptible() -> None:
    """In a child: SIGINT back to its default, so Ctrl-C raises KeyboardInterrupt there even when the
    harness itself was started in the background (a shell's background job ignores SIGINT, and a
    Python started with SIGINT ignored never installs its handler)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for_group(pgid: int, timeout: float) -> bool:
    """Wait until no process of the group ``pgid`` is left (a runner's workers outlive it briefly)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        time.sleep(0.05)
    return False


def print_table(rows: Sequence[Row]) -> None:
    """The table the issue asks for, then the reasons behind any failure."""
    width = max(len(row.scenario) for row in rows)
    print(f"\n{'scenario':<{width}}  {'runs':>4}  {'failures':>8}  {'leftovers':>9}")
    print(f"{'-' * width}  {'-' * 4}  {'-' * 8}  {'-' * 9}")
    for row in rows:
        print(f"{row.scenario:<{width}}  {row.runs:>4}  {row.failures:>8}  {row.leftovers:>9}")
    for row in rows:
        for note in row.notes:
            print(f"\n[{row.scenario}] {note}")
