"""Who owns which database, so that only orphans are ever swept.

Every database elefast creates for a process (a clone, a per-process or per-class
template) is *claimed* before it exists: the process's control connection takes
a session-level advisory lock keyed by the database's name, and the database is
marked with a comment saying it is elefast's. The lock lives exactly as long as
the process (or its connection): when the process dies, however it dies, the
server releases it. So a marked database whose lock anyone can take has no
living owner, on this host or any other, and :func:`sweep` drops it. Nothing
unmarked is ever dropped; databases kept for inspection (``ELEFAST_KEEP_FAILED``)
carry another mark and are never swept.
"""

from __future__ import annotations

import datetime
import os
import threading
from typing import Any, Callable, List, Optional, Tuple

from sqlalchemy import Connection, text

from elefast import _sql

__all__ = ["Owner", "create_marked", "find_orphans", "mark_kept", "mark_owned", "sweep"]

#: The comment on every database elefast creates for one process.
OWNED_MARK = "elefast database"
#: The comment on a database kept for inspection: never swept.
KEPT_MARK = "elefast kept"

LIST_MARKED = (
    "SELECT d.datname FROM pg_database d "
    "WHERE NOT d.datistemplate AND shobj_description(d.oid, 'pg_database') LIKE :mark ORDER BY 1"
)


def owner_key(name: str) -> int:
    """The ownership lock's key for ``name`` (its own namespace: never a template build lock's)."""
    return _sql.advisory_key(f"owner:{name}")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


#: Marks are committed durably even on a server tuned with ``synchronous_commit=off`` (the
#: throwaway servers are): a mark lost in a crash would leave an orphan nobody may sweep.
DURABLE_COMMIT = "SET synchronous_commit TO on"


def mark_owned(name: str) -> List[str]:
    """Statements marking ``name`` as a database some elefast process owns (run them in order)."""
    return [DURABLE_COMMIT,
            f"COMMENT ON DATABASE {_sql.quote_identifier(name)} IS '{OWNED_MARK} created {_now()}'"]


def mark_kept(name: str) -> List[str]:
    """Statements marking ``name`` as kept for inspection (the sweeper leaves it alone)."""
    return [DURABLE_COMMIT, f"COMMENT ON DATABASE {_sql.quote_identifier(name)} IS '{KEPT_MARK} {_now()}'"]


def create_marked(connection: Connection, create_statement: str, name: str) -> None:
    """``CREATE DATABASE`` and its ownership mark, sent back to back where the driver can.

    Over psycopg the statements go out in one pipeline, so the server has the mark in hand
    before the (slow) ``CREATE DATABASE`` finishes: a client killed meanwhile still leaves a
    marked database, which the next run can sweep. Errors come out as SQLAlchemy's
    ``DBAPIError`` subclasses either way.
    """
    from sqlalchemy.exc import DBAPIError

    statements = [create_statement, *mark_owned(name)]
    raw: Any = getattr(connection.connection, "driver_connection", None)
    if connection.dialect.driver != "psycopg" or not hasattr(raw, "pipeline"):
        for statement in statements:
            connection.execute(text(statement))
        return
    import psycopg

    current = create_statement
    try:
        with raw.pipeline():
            for current in statements:
                raw.execute(current)
    except psycopg.Error as error:
        raise DBAPIError.instance(current, None, error, psycopg.Error) from error


class Owner:
    """One process's control connection, holding an advisory lock per database it owns.

    ``connect()`` returns an AUTOCOMMIT SQLAlchemy connection of its own. Thread-safe;
    after ``fork()`` the child opens its own connection and owns nothing of its parent's.
    """

    def __init__(self, connect: Callable[[], Connection]) -> None:
        self._connect = connect
        self._lock = threading.Lock()
        self._connection: Optional[Connection] = None
        self._pid = os.getpid()

    def _conn(self) -> Connection:
        if self._pid != os.getpid():  # a forked child: the parent's socket is not ours
            self._connection, self._pid = None, os.getpid()
        if self._connection is None or self._connection.closed or self._connection.invalidated:
            self._connection = self._connect()
        return self._connection

    def claim(self, name: str) -> None:
        """Take the ownership lock of ``name`` (before the database exists)."""
        with self._lock:
            self._conn().execute(text(_sql.ADVISORY_LOCK), {"key": owner_key(name)})

    def use_template(self, name: str) -> None:
        """Hold a shared lock on the shared template ``name`` while this process lives.

        Template builders and sweepers take the same key exclusively and skip a template
        they cannot lock, so one in use by any living process is never swept.
        """
        with self._lock:
            self._conn().execute(text(_sql.ADVISORY_LOCK_SHARED), {"key": _sql.advisory_key(name)})

    def release(self, name: str) -> None:
        """Give up ``name`` (after it was dropped, or kept)."""
        with self._lock:
            try:
                self._conn().execute(text(_sql.ADVISORY_UNLOCK), {"key": owner_key(name)})
            except Exception:
                pass  # a lost connection released every lock anyway

    def close(self) -> None:
        """Close the control connection (every lock it held goes with it)."""
        with self._lock:
            if self._connection is not None and self._pid == os.getpid():
                try:
                    self._connection.close()
                except Exception:
                    pass
            self._connection = None


def find_orphans(connection: Connection) -> List[str]:
    """Marked databases no living process owns (their lock is free). Takes nothing it finds."""
    orphans = []
    for name in connection.execute(text(LIST_MARKED), {"mark": OWNED_MARK + "%"}).scalars().all():
        key = owner_key(name)
        if connection.execute(text(_sql.ADVISORY_TRY_LOCK), {"key": key}).scalar():
            connection.execute(text(_sql.ADVISORY_UNLOCK), {"key": key})
            orphans.append(name)
    return orphans


def sweep(connection: Connection, dry_run: bool = False) -> Tuple[List[str], List[Tuple[str, str]]]:
    """Drop every orphan (see :func:`find_orphans`); return (dropped, [(name, error)]).

    Each is locked while it is dropped, so two sweepers never fight over one, and an
    owner that appears meanwhile keeps its database.
    """
    dropped: List[str] = []
    failed: List[Tuple[str, str]] = []
    for name in connection.execute(text(LIST_MARKED), {"mark": OWNED_MARK + "%"}).scalars().all():
        key = owner_key(name)
        if not connection.execute(text(_sql.ADVISORY_TRY_LOCK), {"key": key}).scalar():
            continue  # a living process owns it
        try:
            if not dry_run:
                force = _sql.supports_drop_force(connection.dialect.server_version_info)
                if not force:
                    connection.execute(text(_sql.TERMINATE_BACKENDS), {"name": name})
                connection.execute(text(_sql.drop_database(name, force)))
            dropped.append(name)
        except Exception as error:
            failed.append((name, str(error).splitlines()[0] if str(error) else type(error).__name__))
        finally:
            connection.execute(text(_sql.ADVISORY_UNLOCK), {"key": key})
    return dropped, failed

