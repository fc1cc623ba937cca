"""Crossing between event loops and threads, for the async half.

The admin core is synchronous; the async server calls it with :func:`to_thread`, so
its event loop never blocks on admin work. The other way round, the core runs an
async migration or ``setUpTestData`` with :func:`run`, on a fresh loop in a thread
that has none running.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, Awaitable, Callable, List, Tuple, TypeVar

from elefast._base.process import background_thread

__all__ = ["in_a_thread", "loop_running", "run", "to_thread"]

T = TypeVar("T")


async def to_thread(func: Callable[..., T], *args: Any) -> T:
    """Run ``func(*args)`` in the loop's default executor and await its result."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, functools.partial(func, *args))


def run(awaitable: Awaitable[T]) -> T:
    """Run ``awaitable`` to completion from sync code: here, or in a thread if a loop already runs here."""

    async def main() -> T:
        return await awaitable

    if not loop_running():
        return asyncio.run(main())
    return in_a_thread(lambda: asyncio.run(main()))


def loop_running() -> bool:
    """Whether an event loop runs in this thread (``asyncio.run`` cannot start another here)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def in_a_thread(func: Callable[[], T]) -> T:
    """``func()`` in a new thread, waited for; its exception is raised here."""
    outcome: List[Tuple[bool, Any]] = []

    def target() -> None:
        try:
            outcome.append((True, func()))
        except BaseException as error:  # re-raised in the caller's thread
            outcome.append((False, error))

    thread = background_thread(target, "elefast-async")  # never holds up an exit, never takes a signal
    thread.start()
    thread.join()
    ok, value = outcome[0]
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]
