"""Waiting for a server to answer: one policy for ``ensure_is_ready``, sync and async.

Only "not reachable yet" is retried. A wrong password, an unknown role or database, or
a missing permission raise :class:`~elefast.errors.ServerRejectedError` at once; when the
time is up, :class:`~elefast.errors.DatabaseNotReadyError` is raised, chained to the last
error (:class:`~elefast.errors.ServerFullError` when the server answered but was full).
The sync and async servers differ only in how they probe and sleep.
"""

from __future__ import annotations

import time

from sqlalchemy import URL

from elefast._base import sql as _sql
from elefast._server import messages as _messages
from elefast.errors import DatabaseNotReadyError, ServerFullError

__all__ = ["Attempts"]


class Attempts:
    """The attempts of one ``ensure_is_ready`` call: how long the next may take, what a failure means."""

    def __init__(self, url: URL, timeout: float, interval: float) -> None:
        self.url, self.timeout, self.interval = url, timeout, interval
        self.deadline = time.monotonic() + timeout
        self.count = 0

    def next_budget(self) -> float:
        """Seconds the next probe may take (at least half a second); counts the attempt."""
        self.count += 1
        return max(self.deadline - time.monotonic(), 0.5)

    def failed(self, error: BaseException) -> float:
        """Seconds to wait before the next attempt, or raise: the error is final, or time is up."""
        _messages.raise_if_fatal(error, self.url)
        if time.monotonic() + self.interval >= self.deadline:
            if _sql.is_server_full(error):  # it answered: "did not answer" would point the wrong way
                raise ServerFullError(_messages.server_full(self.url, waited=self.timeout)) from error
            raise DatabaseNotReadyError(_messages.not_ready(self.url, self.timeout, self.count, error)) from error
        return self.interval
