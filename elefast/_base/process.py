"""The process around elefast's objects: exit in multiprocessing workers, SIGTERM, and fork.

- :func:`at_process_exit`: a server's final cleanup also runs when a multiprocessing worker
  exits (such workers skip ``atexit``: they leave through ``os._exit``), and a worker ended
  with SIGTERM (``Pool.terminate()``, how unittest-parallel stops its workers) runs it too.
- :func:`reset_in_forked_child`: objects holding threads, locks or sockets start afresh in a
  forked child (the parent's are not the child's to use or close).
- :func:`background_thread`: elefast's own threads block SIGTERM and SIGINT, so the kernel hands
  those signals to the main thread, where Python runs their handlers. (A signal caught by
  another thread only sets a flag: a main thread blocked in a lock, as a pool worker is between
  tasks, would never run the handler, and ``Pool.terminate()`` would wait for it forever.)
- A worker that gets SIGTERM or SIGINT cleans up for at most :data:`SIGNAL_CLEANUP_SECONDS`, then
  ends: its databases left over are the next sweep's.
- A signal Python could not act on is not lost: Python runs a handler only when the main thread
  comes back from C, and a signal that lands just before the main thread blocks again in a lock
  (glibc's ``sem_wait`` loop, as a pool worker does between tasks while ``Pool.terminate()`` takes
  the queue's lock) leaves it blocked with the handler pending. A relay thread hears of every
  signal through :func:`signal.set_wakeup_fd` and, until the handler has run, sends it again to the
  main thread, whose blocking call then returns to run it.
"""

from __future__ import annotations

import os
import sys
import threading
import weakref
from typing import Any, Callable

from typing_extensions import Protocol

__all__ = ["SIGNAL_CLEANUP_SECONDS", "at_process_exit", "background_thread", "exiting", "leave_to_parent",
           "reset_in_forked_child"]


class Resettable(Protocol):
    """An object that knows how to start afresh in a forked child."""

    def reset_after_fork(self) -> None:
        """Forget the parent's threads, locks and sockets."""


_RESETTABLE: weakref.WeakSet[Any] = weakref.WeakSet()


def reset_in_forked_child(thing: Resettable) -> None:
    """Call ``thing.reset_after_fork()`` in every child forked from now on (while it lives)."""
    _RESETTABLE.add(thing)


#: What a forked child inherited and must neither use nor close (closing a shared socket would
#: end the parent's session); held here so it is never garbage-collected (and warned about).
_INHERITED: list[Any] = []


def leave_to_parent(thing: Any) -> None:
    """In a forked child: keep the parent's ``thing`` (an engine, a connection) untouched for good."""
    if thing is not None:
        _INHERITED.append(thing)


def _after_fork_in_child() -> None:
    _forget_signals_in_child()
    for thing in list(_RESETTABLE):
        thing.reset_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


#: Set once a multiprocessing worker runs elefast's exit cleanup (it is leaving anyway).
_CLEANING_UP = threading.Event()

#: How long a worker that got SIGTERM or SIGINT may spend cleaning up before it ends regardless.
SIGNAL_CLEANUP_SECONDS = 5.0

_STOP_SIGNALS = ("SIGTERM", "SIGINT")


class _QuietThread(threading.Thread):
    """A daemon thread born with SIGTERM and SIGINT blocked (it inherits the mask at its creation,
    so no signal can reach it in the moment before it could block them itself)."""

    def start(self) -> None:
        blocked = _block_stop_signals()
        try:
            super().start()
        finally:
            if blocked is not None:
                import signal

                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def background_thread(target: Callable[..., Any], name: str, args: Any = ()) -> threading.Thread:
    """A daemon thread (not started) running ``target(*args)`` with SIGTERM and SIGINT blocked."""
    return _QuietThread(target=target, name=name, args=args, daemon=True)


def _block_stop_signals() -> Any:
    """Block SIGTERM and SIGINT in the calling thread; the mask it had before (None: no masks here)."""
    import signal

    if not hasattr(signal, "pthread_sigmask"):
        return None
    return signal.pthread_sigmask(signal.SIG_BLOCK, {getattr(signal, name) for name in _STOP_SIGNALS})


_WATCHDOG: list = []  # type: ignore[type-arg]

#: The stop signals whose Python handler (ours) has run in this process.
_HANDLED: set = set()  # type: ignore[type-arg]

#: How often the relay sends a pending stop signal again to the main thread.
_RELAY_EVERY = 0.2


def _forget_signals_in_child() -> None:
    """A forked child starts with no watchdog and none of its parent's handled signals, and writes
    its signals to no one's relay (the parent's wakeup socket is not the child's)."""
    del _WATCHDOG[:]
    _HANDLED.clear()
    if _RELAY:
        del _RELAY[:]
        import signal

        try:
            signal.set_wakeup_fd(-1)
        except (ValueError, OSError):
            pass


#: The relay's wakeup socket pair, while a relay runs in this process.
_RELAY: list = []  # type: ignore[type-arg]


def _start_signal_relay(ours: dict) -> None:  # type: ignore[type-arg]
    """From the main thread: relay every stop signal whose handler in ``ours`` (signal -> handler)
    has not run yet back to the main thread until it runs. Does nothing if the process already
    has a wakeup fd (an asyncio loop's): that one is left alone."""
    import signal
    import socket

    if _RELAY or not hasattr(signal, "pthread_kill"):
        return
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    try:
        previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    except (ValueError, OSError):
        reader.close()
        writer.close()
        return
    if previous != -1:  # someone else's: give it back
        signal.set_wakeup_fd(previous)
        reader.close()
        writer.close()
        return
    _RELAY.extend([reader, writer])
    main = threading.main_thread().ident

    def relay() -> None:
        import time

        while True:
            try:
                data = reader.recv(64)
            except OSError:
                return
            if not data:
                return
            for signum in set(data):
                handler = ours.get(signum)
                if handler is None:
                    continue
                _end_within(SIGNAL_CLEANUP_SECONDS, 128 + signum)  # whatever the main thread does
                while signum not in _HANDLED and signal.getsignal(signum) is handler:
                    time.sleep(_RELAY_EVERY)
                    if signum not in _HANDLED and signal.getsignal(signum) is handler and main is not None:
                        signal.pthread_kill(main, signum)  # its blocking call returns and runs the handler

    background_thread(relay, "elefast-signal-relay").start()


def _end_within(seconds: float, code: int) -> None:
    """Arm (once) a watchdog that ends the process after ``seconds``, whatever its cleanup is doing."""
    if _WATCHDOG:
        return

    def watch() -> None:
        import time

        time.sleep(seconds)
        os._exit(code)

    thread = background_thread(watch, "elefast-exit-watchdog")
    _WATCHDOG.append(thread)
    try:
        thread.start()
    except RuntimeError:  # no new threads at interpreter shutdown: the cleanup runs unwatched
        pass


#: Set by an atexit hook that runs before the weakref finalizers (see :func:`at_process_exit`).
_EXITING = threading.Event()


def exiting() -> bool:
    """Whether the process is ending (its exit handlers run), as opposed to a ``close()`` mid-run."""
    return _EXITING.is_set() or _CLEANING_UP.is_set()


def at_process_exit(finalizer: Callable[[], Any]) -> None:
    """Also run ``finalizer`` when a multiprocessing worker exits (it skips atexit: ``os._exit``).

    unittest-parallel and stestr-like runners run tests in such workers; without this their
    databases would wait for the next run's sweep. Call it right after making ``finalizer`` (a
    ``weakref.finalize``): :func:`exiting` is then true while that finalizer runs at exit.
    """
    import atexit

    atexit.unregister(_EXITING.set)
    atexit.register(_EXITING.set)  # the latest hook runs first: before weakref's finalizers
    if "multiprocessing" in sys.modules:
        from multiprocessing import util

        def run_at_exit() -> None:
            _CLEANING_UP.set()  # from now on a SIGTERM must not cut the cleanup short
            finalizer()

        util.Finalize(None, run_at_exit, exitpriority=10)
        _exit_cleanly_on_sigterm()


def _exit_cleanly_on_sigterm() -> None:
    """In a multiprocessing worker, let SIGTERM (and SIGINT) end the process through its exit handlers.

    ``Pool.terminate()`` sends SIGTERM, which by default kills the worker before any
    cleanup: its clones would wait for the next run's sweep. Only a worker's default
    handler is replaced, and only from its main thread; the handler raises ``SystemExit``,
    so the worker's finalizers (ours among them) run. A worker already in that cleanup (it
    got its stop sentinel first) ignores the signal and finishes. Either way the cleanup is
    bounded: :data:`SIGNAL_CLEANUP_SECONDS` after the signal, the worker ends.
    """
    import multiprocessing
    import signal

    if multiprocessing.parent_process() is None or threading.current_thread() is not threading.main_thread():
        return
    ours: dict = {}  # type: ignore[type-arg]
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:

        def interrupted(signum: int, frame: Any) -> None:
            _HANDLED.add(signum)
            _end_within(SIGNAL_CLEANUP_SECONDS, 128 + signum)  # Ctrl-C: a bounded cleanup, then gone
            signal.default_int_handler(signum, frame)

        signal.signal(signal.SIGINT, interrupted)
        ours[signal.SIGINT] = interrupted
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:

        def exit_now(signum: int, frame: Any) -> None:
            from multiprocessing import util

            _HANDLED.add(signum)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # on the way out already
            _end_within(SIGNAL_CLEANUP_SECONDS, 128 + signum)  # the cleanup is bounded, then the worker ends
            exiting = getattr(util, "_exiting", False)  # the worker's exit handlers have begun: let them run
            if not _CLEANING_UP.is_set() and not exiting:  # a worker that ended on its own is in its cleanup
                raise SystemExit(128 + signum)

        signal.signal(signal.SIGTERM, exit_now)
        ours[signal.SIGTERM] = exit_now
    if ours:
        _start_signal_relay(ours)
