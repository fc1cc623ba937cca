"""Snapshots: a copy of a test's database as it is, to restore it to later in the same test.

``database.snapshot()`` makes a template of the database (``CREATE DATABASE ... TEMPLATE``,
marked as elefast's like every database it makes, so a killed run's snapshots are swept);
``database.restore(snapshot)`` drops the database and makes it again from the snapshot,
under the same name, so every engine pointed at it (the app's included) goes on working.
Both need the database idle: the idle connections of its engine and of the app engines steered
onto it are closed first, and a session still open fails with :class:`~elefast.errors.SnapshotError` naming it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from elefast._base import sql as _sql
from elefast._engines.steering import pointed_at
from elefast._server.core import core_of
from elefast.errors import SnapshotError

__all__ = ["Snapshot", "let_go", "let_go_async", "restore", "take"]

#: SQLSTATE 55006: "source database ... is being accessed by other users".
OBJECT_IN_USE = "55006"

_SESSIONS = ("SELECT coalesce(nullif(application_name, ''), '(no application name)'), state, "
             "left(query, 80) FROM pg_stat_activity WHERE datname = :name AND pid <> pg_backend_pid()")


@dataclass(frozen=True)
class Snapshot:
    """A copy of a database as it was when :meth:`~elefast.sync.Database.snapshot` ran.

    It lives on the server as a database named :attr:`name`, dropped with the server's other
    databases (at ``close()``, at exit, or by the next run's sweep after a killed process).
    """

    name: str
    source: str


def _refuse_if_in_use(database: Any, action: str) -> None:
    """Fail before disposing anything: a connection still checked out of the database's own
    engine would be orphaned by the dispose and keep the database busy."""
    in_use = database._checkouts.checked_out
    app_in_use = sum(_checked_out(steer.engine) for steer in pointed_at(database.name))
    if app_in_use:  # disposing their pool now would orphan those connections, left open until collected
        raise SnapshotError(f"{action}: {app_in_use} connection(s) of the app's engines (app_engines) on this "
                            "database are still in use (an app session in a transaction, or a connection not "
                            "closed). Close them first (e.g. Session.remove() for a scoped_session, "
                            "db.session.remove() for Flask-SQLAlchemy); their idle connections are closed for you.")
    if in_use:
        raise SnapshotError(f"{action}: {in_use} connection(s) of the database's engine are still in use (a session "
                            "in a transaction, or a connection not closed). Close them first: self.session.close() "
                            "(and any connection you opened); the engine's idle connections are closed for you. "
                            "In a class with isolation = 'transaction', the test's own connection holds the "
                            "database for the whole test: snapshots need isolation = 'database'.")


def _checked_out(engine: Any) -> int:
    checkedout = getattr(getattr(engine, "pool", None), "checkedout", None)
    return int(checkedout()) if callable(checkedout) else 0


def let_go(database: Any, action: str = "snapshot") -> None:
    """Close the idle connections to ``database``: its engine's, and those of app engines steered onto it."""
    _refuse_if_in_use(database, action)
    database.engine.dispose()
    for steer in pointed_at(database.name):
        steer.engine.dispose(close=steer.outer is steer.engine)  # an AsyncEngine's close on its own loop


async def let_go_async(database: Any, action: str = "snapshot") -> None:
    """:func:`let_go` for an async database: async engines close on the running loop."""
    _refuse_if_in_use(database, action)
    await database.engine.dispose()
    for steer in pointed_at(database.name):
        if steer.outer is steer.engine:
            steer.engine.dispose()
        else:
            await steer.outer.dispose()


def take(database: Any) -> Snapshot:
    """Copy ``database`` (its engine already disposed) into a new marked template."""
    core = core_of(database.server)
    name = _sql.database_name(database.name.rsplit("_", 1)[0] or _sql.DEFAULT_PREFIX, infix="snap_")
    _create(core, name, database.name, "snapshot")
    return Snapshot(name, database.name)


def clone_of(server: Any, snapshot: Snapshot, prefix: str) -> str:
    """A new database made from ``snapshot`` on ``server`` (owned, marked, dropped like any clone)."""
    if not isinstance(snapshot, Snapshot):
        raise TypeError(f"snapshot= takes a Snapshot from snapshot(), not {type(snapshot).__name__}.")
    core = core_of(server)
    name = _sql.database_name(_sql.safe_prefix(prefix))
    _create(core, name, snapshot.name, "clone")
    return name


def restore(database: Any, snapshot: Snapshot) -> None:
    """Drop ``database`` (its engine already disposed; other sessions are ended) and make it
    again from ``snapshot``, under the same name."""
    if not isinstance(snapshot, Snapshot):
        raise TypeError(f"restore() takes a Snapshot from snapshot(), not {type(snapshot).__name__}.")
    core = core_of(database.server)
    if not _idle_soon(core, database.name):  # the drop would end them: refuse instead, naming them
        raise SnapshotError(_in_use(core, database.name, "restore"))
    if database._kept:
        raise SnapshotError(f"restore: {database.name!r} is kept (keep()): elefast no longer drops it, so it "
                            "cannot be made again from the snapshot.")
    core.drop(database.name)
    _create(core, database.name, snapshot.name, "restore")


def _idle_soon(core: Any, name: str, patience: float = 1.0) -> bool:
    """Whether no session is on ``name`` within ``patience`` seconds: a connection just closed
    (the engines disposed above) leaves its server process for a moment; one in use stays."""
    deadline = time.monotonic() + patience
    with core.connect() as connection:
        while connection.execute(text(_SESSIONS), {"name": name}).first() is not None:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
    return True


def _create(core: Any, name: str, template: str, action: str) -> None:
    try:
        core.create(name, template, "utf8", fast=True)
    except DBAPIError as error:
        if getattr(error.orig, "sqlstate", None) != OBJECT_IN_USE:
            raise
        raise SnapshotError(_in_use(core, template, action)) from None


def _in_use(core: Any, name: str, action: str) -> str:
    with core.connect() as connection:
        sessions = connection.execute(text(_SESSIONS), {"name": name}).all()
    listed = "\n".join(f"  - {app} ({state}): {query}" for app, state, query in sessions) or "  (gone by now)"
    return (f"{action}: the database {name!r} has other sessions, and PostgreSQL copies only a database "
            f"nobody is connected to:\n{listed}\nClose them first: self.session.close() (and any connection "
            "you opened); the engine's own idle connections are closed for you.")
