"""Bookkeeping shared by the sync and async servers: templates and owned databases.

A server object owns every database it creates (templates and clones) until
it drops them; it drops only those. Template builds are serialised by one
lock per server, which threads take directly and coroutines poll, so the same
lock works for many event loops (each ``IsolatedAsyncioTestCase`` test has
its own).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Dict, Optional, Set


@dataclass
class TemplateSlot:
    """The template database built for one encoding, or why building it failed."""

    name: str
    error: Optional[BaseException] = None
    message: str = ""


@dataclass
class ServerState:
    """What one server object knows: its lock, templates and owned database names."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    templates: Dict[str, TemplateSlot] = field(default_factory=dict)
    owned: Set[str] = field(default_factory=set)
    created: Set[str] = field(default_factory=set)
    owned_lock: threading.Lock = field(default_factory=threading.Lock)

    def own(self, name: str) -> None:
        """Record that this server created ``name`` and may drop it."""
        with self.owned_lock:
            self.owned.add(name)
            self.created.add(name)

    def disown(self, name: str) -> None:
        """Forget ``name`` after it was dropped."""
        with self.owned_lock:
            self.owned.discard(name)

    def check_droppable(self, name: str, server: object) -> bool:
        """True if ``name`` should be dropped now, False if it was dropped already.

        Raises ``ValueError`` for a name this server never created: elefast
        never drops what it does not own.
        """
        with self.owned_lock:
            if name not in self.created:
                raise ValueError(
                    f"elefast only drops databases it created; {name!r} was not created by {server!r}."
                )
            return name in self.owned

    def owns(self, name: str) -> bool:
        """Whether this server created ``name`` and has not dropped it yet."""
        with self.owned_lock:
            return name in self.owned

    def snapshot(self) -> Set[str]:
        """A copy of the owned names, for cleanup."""
        with self.owned_lock:
            return set(self.owned)

    async def acquire_async(self, poll: float = 0.002) -> None:
        """Take :attr:`lock` from a coroutine without blocking the event loop."""
        while not self.lock.acquire(blocking=False):
            await asyncio.sleep(poll)
