"""A multiprocessing worker that uses elefast ends promptly on SIGTERM and SIGINT (``Pool.terminate()``).

The hang this guards against: ``Pool.terminate()`` sends SIGTERM to workers blocked between tasks
in a lock (``SimpleQueue.get``). When the kernel handed the signal to one of elefast's background
threads, Python only set a flag: the main thread stayed blocked in the lock, never ran the handler,
and the parent waited forever in ``join``. elefast's threads now block those signals, so the main
thread gets them; and a worker's cleanup after a signal is bounded.
"""

import multiprocessing
import os
import signal
import threading
import time
import unittest

from elefast import DatabaseServer
from elefast._base.process import SIGNAL_CLEANUP_SECONDS
from tests import support

ROUNDS = 10


def blocked_signals(native_id: int) -> int:
    """The SigBlk mask of one thread of this process (Linux)."""
    with open(f"/proc/self/task/{native_id}/status") as status:
        for line in status:
            if line.startswith("SigBlk:"):
                return int(line.split()[1], 16)
    return 0


def quiet() -> None:
    """A worker's initializer: its stderr goes nowhere (the SIGINT test's worker prints its KeyboardInterrupt),
    and SIGINT has Python's default handler (a forked worker inherits whatever its parent had: an
    asyncio runner's, say, left by an earlier test of this process)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def use_elefast(prefix: str) -> str:
    """A worker's task: a server with its pool running (background threads), one database made and
    dropped; the server stays open, as a worker's does between tests."""
    server = DatabaseServer(support.server_url())
    database = server.create_database(prefix=prefix)
    database.drop()
    use_elefast.server = server  # type: ignore[attr-defined]
    return database.name


@unittest.skipUnless(os.path.isdir("/proc/self/task"), "reads thread signal masks from /proc")
class SignalTests(unittest.TestCase):
    def setUp(self):
        self.prefix = support.unique_prefix("sig")
        self.addCleanup(support.drop_templates, self.prefix)

    def test_elefasts_threads_block_the_stop_signals(self):
        server = DatabaseServer(support.server_url())
        try:
            server.create_database(prefix=self.prefix).drop()
            ours = [thread for thread in threading.enumerate() if thread.name.startswith("elefast-")]
            self.assertTrue(ours, "the pool's threads should be running")
            wanted = (1 << (signal.SIGTERM - 1)) | (1 << (signal.SIGINT - 1))
            for thread in ours:
                with self.subTest(thread.name):
                    self.assertEqual(blocked_signals(thread.native_id) & wanted, wanted)
            self.assertEqual(blocked_signals(threading.main_thread().native_id) & wanted, 0)
        finally:
            server.close()

    def test_pool_terminate_returns_every_time(self):
        """The reproduction: workers with elefast's threads, idle in the pool's queue, then terminate()."""
        context = multiprocessing.get_context("fork")
        waits = []
        for _ in range(ROUNDS):
            pool = context.Pool(2)
            names = pool.map(use_elefast, [self.prefix] * 2)
            self.assertEqual(len(names), 2)
            time.sleep(0.2)  # the workers are back in SimpleQueue.get, their elefast threads idle
            finished = threading.Event()
            started = time.monotonic()
            stopper = threading.Thread(target=lambda p=pool, f=finished: (p.terminate(), f.set()), daemon=True)
            stopper.start()
            in_time = finished.wait(SIGNAL_CLEANUP_SECONDS + 10)
            waits.append(time.monotonic() - started)
            if not in_time:
                for child in multiprocessing.active_children():
                    os.kill(child.pid, signal.SIGKILL)
                self.fail(f"Pool.terminate() hung (rounds so far took {[round(w, 2) for w in waits]} s)")
            pool.join()
        self.assertLess(max(waits), SIGNAL_CLEANUP_SECONDS + 2, waits)
        deadline = time.monotonic() + 30  # what a terminated worker could not drop, the sweep may find
        while support.databases(self.prefix + "%") and time.monotonic() < deadline:
            DatabaseServer(support.server_url()).sweep_orphans()
            time.sleep(0.5)
        self.assertEqual(support.databases(self.prefix + "%"), [])

    def test_a_signal_python_only_noted_still_ends_the_worker(self):
        """The race behind the hang: the signal lands where the main thread cannot run its handler."""
        context = multiprocessing.get_context("fork")
        pool = context.Pool(1, initializer=quiet)
        try:
            pid = pool.apply(worker_pid_after_a_lost_signal, (self.prefix,))
            deadline = time.monotonic() + 0.5 + SIGNAL_CLEANUP_SECONDS + 5
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertFalse(alive(pid), "the worker's main thread never ran its SIGTERM handler")
        finally:
            pool.terminate()
            pool.join()

    def test_sigint_in_a_worker_ends_it(self):
        context = multiprocessing.get_context("fork")
        pool = context.Pool(1, initializer=quiet)
        try:
            pid = pool.apply(worker_pid_after_elefast, (self.prefix,))
            time.sleep(0.2)  # back in SimpleQueue.get, its elefast threads idle
            os.kill(pid, signal.SIGINT)
            deadline = time.monotonic() + SIGNAL_CLEANUP_SECONDS + 5
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertFalse(alive(pid), "the worker did not end after SIGINT")
        finally:
            pool.terminate()
            pool.join()


def worker_pid_after_a_lost_signal(prefix: str) -> int:
    """A worker's task: elefast in use, then SIGTERM caught by a thread of the test's own (not the
    main thread) once the main thread is back, blocked, in the pool's queue: Python only notes it,
    and the main thread's blocking call is never interrupted to run the handler."""
    use_elefast(prefix)

    def later() -> None:
        time.sleep(0.5)
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

    threading.Thread(target=later, daemon=True).start()
    return os.getpid()


def worker_pid_after_elefast(prefix: str) -> int:
    use_elefast(prefix)
    return os.getpid()


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie waiting to be reaped has ended)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


if __name__ == "__main__":
    unittest.main()
