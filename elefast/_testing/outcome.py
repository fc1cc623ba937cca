"""What a test's outcome means for its database: kept when it failed and asked, explained when the server went away."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, Iterator

from sqlalchemy import URL

from elefast.errors import ElefastError, ServerFullError, ServerLostError

__all__ = ["ENV_KEEP_FAILED", "explaining_loss", "failed", "finish", "finish_async", "say_if_server_lost"]

#: Set to 1 to keep the database of every failing test (database mode) for inspection.
ENV_KEEP_FAILED = "ELEFAST_KEEP_FAILED"


def keep_failed(test: Any) -> bool:
    """Whether ``test`` failed and ``ELEFAST_KEEP_FAILED`` asks to keep its database."""
    if os.environ.get(ENV_KEEP_FAILED, "").strip().lower() not in ("1", "true", "yes", "on"):
        return False
    return failed(test)


def failed(test: Any) -> bool:
    """Whether the running ``test`` has failed so far (asked from one of its cleanups)."""
    outcome = getattr(test, "_outcome", None)  # unittest's record of the running test
    if outcome is None:
        return False
    errors = getattr(outcome, "errors", None)  # Python < 3.11: reported after the cleanups
    if errors is not None:
        return any(exc_info is not None for _, exc_info in errors)
    result = getattr(outcome, "result", None)  # Python >= 3.11: reported at once
    failures, errors = getattr(result, "failures", None), getattr(result, "errors", None)
    if not isinstance(failures, list) or not isinstance(errors, list):  # pytest, stestr: their own results
        return not getattr(outcome, "success", True)
    test = getattr(test, "_elefast_test", test)  # an extra database's slot stands for its test
    return any(failed is test for failed, _ in failures + errors)


@contextlib.contextmanager
def explaining_loss(url: URL) -> Iterator[None]:
    """Turn a failure caused by the server going away into a :class:`ServerLostError` saying so
    (and one caused by a full server into a :class:`ServerFullError`)."""
    try:
        yield
    except ElefastError:
        raise
    except Exception as error:
        from elefast._base import sql as _sql
        from elefast._server import messages as _messages
        from elefast.provision.lost import explain_lost

        if _sql.is_server_full(error):  # running, but no free connection: not "lost", not "start it"
            raise ServerFullError(_messages.server_full(url)) from error
        message = explain_lost(url)
        if message is not None:
            raise ServerLostError(message) from error
        raise


def say_if_server_lost(test: Any, url: URL) -> None:
    """A test's last cleanup: when it failed because the server went away, add an error saying so."""
    if failed(test):
        from elefast.provision.lost import explain_lost

        message = explain_lost(url)
        if message is not None:
            raise ServerLostError(message)


def _report_kept(test: Any, database: Any) -> None:
    url = database.url.set(drivername="postgresql").render_as_string(hide_password=True)
    print(f"\nelefast kept the database of the failing test {test.id()}: {database.name}\n"
          f"    psql '{url}'\n"
          f"  (drop it when done: DROP DATABASE \"{database.name}\"; the sweeper never touches it)",
          file=sys.stderr)


def finish(test: Any, database: Any) -> None:
    """The test's database goes back to the pool to be dropped, or is kept if it failed and asked."""
    kept = keep_failed(test)
    if kept:
        database.keep()
    database.drop()
    if kept:
        _report_kept(test, database)


async def finish_async(test: Any, database: Any) -> None:
    """:func:`finish` for an :class:`~elefast.asyncio.AsyncDatabase`."""
    kept = keep_failed(test)
    if kept:
        await database.keep()
    await database.drop()
    if kept:
        _report_kept(test, database)
