"""Error messages shared by the sync and async halves. None contains a password."""

from __future__ import annotations

from typing import Any, Optional

from sqlalchemy import URL

from elefast._base import sql as _sql
from elefast._engines import urls as _urls
from elefast._server.pool_sizes import pool_workers
from elefast.errors import ServerRejectedError


def first_line(error: BaseException) -> str:
    """The first line of the driver's own message for ``error``."""
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def not_ready(url: URL, timeout: float, attempts: int, error: BaseException) -> str:
    """Why :meth:`ensure_is_ready` gave up, and what to do."""
    return (
        f"PostgreSQL at {_urls.safe_url(url)} did not answer within the timeout of {timeout:g} s "
        f"({attempts} attempts; last error: {_sql.hide_secret(first_line(error), url.password)}). "
        "Start the server, or fix the host and port in the URL."
    )


def refused(url: URL, source: str, error: BaseException) -> str:
    """Nothing listens where a configured URL points: said within seconds, with where the URL came from."""
    return (
        f"Nothing answers at {_urls.safe_url(url)} (from {source}): the connection was refused "
        f"({_sql.hide_secret(first_line(error), url.password)}). Start the server there, or fix the host "
        f"and port in {source}."
    )


def server_full(url: URL, load: Optional[Any] = None, waited: Optional[float] = None) -> str:
    """The server had no free connection: its numbers when known, elefast's share, the fix."""
    numbers = f": {load[0]} client connections in use of max_connections = {load[1]}" if load else ""
    during = f" for {waited:g} s" if waited is not None else ""
    own = pool_workers() + 3  # clone makers, the dropper, the admin and the ownership connections
    return (
        f"PostgreSQL at {_urls.safe_url(url)} has no free connections{during} (too many clients "
        f"already){numbers}. It is running but full. elefast holds about {own} connections per test "
        f"process, plus one per ready clone and per open test connection. Lower the number of test "
        f"workers (or ELEFAST_POOL_WORKERS=1), close connections other programs keep open, or raise "
        f"max_connections on the server."
    )


def rejected(url: URL, reason: str, action: str) -> str:
    """The server refused us for a reason that retrying cannot fix."""
    user = url.username or "(default user)"
    fixes = {
        "the password was rejected": "Fix the password in the URL.",
        "the server requires a password": "Put the password in the URL.",
        "the role does not exist": f"Create the role {user!r}, or use an existing one in the URL.",
        "the role is unknown or not allowed to connect": (
            f"Create the role {user!r} or allow it to connect (pg_hba.conf), or use another role."
        ),
        "the database does not exist": (
            "Point the URL at a database that exists (for example /postgres)."
        ),
        "the role lacks a permission it needs": (
            f"Give the role the right to create databases (ALTER ROLE \"{user}\" CREATEDB), "
            "or use a role that has it."
        ),
    }
    fix = fixes.get(reason, "Check the URL's user, password and database.")
    return (
        f"PostgreSQL at {_urls.safe_url(url)} refused to let elefast {action}: {reason}. {fix}"
    )


def raise_if_fatal(error: BaseException, url: URL, action: str = "connect") -> None:
    """Raise :class:`ServerRejectedError` if ``error`` can never go away by retrying."""
    reason = _sql.fatal_reason(error)
    if reason is not None:
        raise ServerRejectedError(rejected(url, reason, action)) from error


def migration_failed(schema: Optional[Any], template: str, error: BaseException) -> str:
    """A migration failed while building ``template``; the template was dropped."""
    from elefast.errors import MigrationError

    if isinstance(error, MigrationError):  # elefast's own diagnosis: whole, with its fix
        return f"Building the template database {template!r} with {schema!r} failed: {error} The template was dropped."
    return (
        f"Building the template database {template!r} with {schema!r} failed: "
        f"{type(error).__name__}: {first_line(error)}. The template was dropped; fix the "
        "migration and run the tests again."
    )
