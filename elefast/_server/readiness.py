"""Waiting for a server to answer: one policy for ``ensure_is_ready``, sync and async.

Only "not reachable yet" is retried. A wrong password, an unknown role or database, or
a missing permission raise :class:`~elefast.errors.ServerRejectedError` at once; when the
time is up, :class:`~elefast.errors.DatabaseNotReadyError` is raised, chained to the last
error (:class:`~elefast.errors.ServerFullError` when the server answered but was full).
The sync and async servers differ only in how they probe and sleep.

A server whose URL was configured (:func:`configured`: the test class's ``database_url``,
``ELEFAST_DATABASE_URL``, a command's ``--url``) is one elefast did not start: nothing will
come to listen there while we wait, so a refused connection (no server on that port, no
socket file) is final after a short grace (:data:`REFUSED_GRACE`: a server restarting, or a
container whose port has just opened, answers within it), and the message says where the
URL came from. Servers
elefast starts (the throwaway local one, a Docker container) are retried until the timeout
while they come up.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Dict, Optional, Tuple, Union

from sqlalchemy import URL

from elefast._base import sql as _sql
from elefast._server import messages as _messages
from elefast.errors import DatabaseNotReadyError, ServerFullError

__all__ = ["REFUSED_GRACE", "Attempts", "configured", "is_refused", "source_of"]

#: Seconds a configured URL that refuses connections is tried again before the refusal is final.
REFUSED_GRACE = 2.0

_SOURCES: Dict[Tuple[object, ...], str] = {}
_LOCK = threading.Lock()
_REFUSED = re.compile(r"Connection refused|connect call failed|No such file or directory", re.I)


def _key(url: Union[str, URL]) -> Optional[Tuple[object, ...]]:
    """Where ``url`` connects (host or socket, port, user, database): the driver does not matter."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        return None
    return parsed.host or str(parsed.query.get("host", "")), parsed.port, parsed.username, parsed.database


def configured(url: Union[str, URL], source: str) -> None:
    """Note that ``url`` came from ``source`` (e.g. ``ELEFAST_DATABASE_URL``), not from a server elefast started."""
    key = _key(url)
    if key is not None:
        with _LOCK:
            _SOURCES[key] = source


def source_of(url: Union[str, URL]) -> Optional[str]:
    """Where a configured ``url`` came from, or None for a server elefast started (or one never noted)."""
    key = _key(url)
    with _LOCK:
        return _SOURCES.get(key) if key is not None else None


def is_refused(error: BaseException) -> bool:
    """Whether nothing listens where ``error``'s connection went (refused port, missing socket file)."""
    return any(isinstance(exc, (ConnectionRefusedError, FileNotFoundError)) or bool(_REFUSED.search(str(exc)))
               for exc in _sql.walk_causes(error))


class Attempts:
    """The attempts of one ``ensure_is_ready`` call: how long the next may take, what a failure means."""

    def __init__(self, url: URL, timeout: float, interval: float) -> None:
        self.url, self.timeout, self.interval = url, timeout, interval
        self.started = time.monotonic()
        self.deadline = self.started + timeout
        self.count = 0

    def next_budget(self) -> float:
        """Seconds the next probe may take (at least half a second); counts the attempt."""
        self.count += 1
        return max(self.deadline - time.monotonic(), 0.5)

    def failed(self, error: BaseException) -> float:
        """Seconds to wait before the next attempt, or raise: the error is final, or time is up."""
        _messages.raise_if_fatal(error, self.url)
        source = source_of(self.url)
        if source is not None and is_refused(error):  # nobody started it: after a grace, nothing will come
            left = self.started + min(REFUSED_GRACE, self.timeout) - time.monotonic()
            if left <= 0:
                raise DatabaseNotReadyError(_messages.refused(self.url, source, error)) from error
            return min(self.interval, left)
        if time.monotonic() + self.interval >= self.deadline:
            if _sql.is_server_full(error):  # it answered: "did not answer" would point the wrong way
                raise ServerFullError(_messages.server_full(self.url, waited=self.timeout)) from error
            raise DatabaseNotReadyError(_messages.not_ready(self.url, self.timeout, self.count, error)) from error
        return self.interval
