"""Who owns which database, so that only orphans are ever swept, and the one way to drop one.

Every database elefast creates for a process (a clone, a per-process or per-class
template) is *claimed* before it exists: the process's control connection takes
a session-level advisory lock keyed by the database's name, and the database is
marked with a comment saying it is elefast's. The lock lives exactly as long as
the process (or its connection): when the process dies, however it dies, the
server releases it. So a marked database whose lock anyone can take has no
living owner, on this host or any other, and :func:`sweep` drops it. Nothing
unmarked is ever dropped; databases kept for inspection (``ELEFAST_KEEP_FAILED``)
carry another mark and are never swept.

:class:`Ledger` is one server object's record of the names it created and still
owns; :func:`drop` is the only place elefast sends a ``DROP DATABASE``.
"""

from __future__ import annotations

import datetime
import os
import threading
from typing import Any, Callable, List, Optional, Set, Tuple

from sqlalchemy import Connection, text

from elefast._base import sql as _sql
from elefast._base.process import leave_to_parent

__all__ = ["Ledger", "Owner", "create_marked", "drop", "find_kept", "find_orphans", "mark_kept", "mark_owned",
           "owner_key", "rename_when_idle", "sweep"]

owner_key = _sql.owner_key


def now() -> str:
    """The current UTC time as the marks write it."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def mark_owned(name: str) -> List[str]:
    """Statements marking ``name`` as a database some elefast process owns (run them in order)."""
    return _sql.mark_owned(name, now())


def mark_kept(name: str) -> List[str]:
    """Statements marking ``name`` as kept for inspection (the sweeper leaves it alone)."""
    return _sql.mark_kept(name, now())


def drop(connection: Connection, name: str, log: Optional[Callable[[str], None]] = None) -> None:
    """Drop ``name`` over an autocommit ``connection``, ending whatever still connects to it."""
    for statement, parameters in _sql.drop_steps(name, connection.dialect.server_version_info):
        if log is not None:
            log(statement)
        connection.execute(text(statement), parameters)


def create_marked(connection: Connection, create_statement: str, name: str) -> None:
    """``CREATE DATABASE`` and its ownership mark, written to the server in one piece.

    Over psycopg the statements go out as one libpq pipeline ended by a single Sync, so
    libpq hands them to the socket in one write: the server has all of them or none. A
    client killed while the server creates the database (the slow part) still leaves it
    marked, because the server reads and runs what it already received before it notices
    the client is gone, and the next run can sweep it. ``CREATE DATABASE`` is the first
    statement of the pipeline and commits at once; the mark commits at the Sync. The
    admin core always talks psycopg, the async server's included. On another driver the
    statements go one by one. Errors come out as SQLAlchemy's ``DBAPIError`` subclasses.
    """
    statements = [create_statement, *mark_owned(name)]
    raw: Any = getattr(connection.connection, "driver_connection", None)
    if connection.dialect.driver != "psycopg" or not hasattr(raw, "pgconn"):
        for statement in statements:
            connection.execute(text(statement))
        return
    import psycopg
    from sqlalchemy.exc import DBAPIError

    try:
        with raw.lock:
            failed = _send_at_once(raw.pgconn, statements)
    except psycopg.Error as error:
        raise DBAPIError.instance(create_statement, None, error, psycopg.Error) from error
    if failed is not None:
        statement, cause = failed
        raise DBAPIError.instance(statement, None, cause, psycopg.Error) from cause


#: Seconds each wait on the socket may last before psycopg looks again (as psycopg's own
#: connections do). psycopg 3.2+ reads a missing value as 0: a poll that never sleeps, which
#: burnt a core on the client for the whole ``CREATE DATABASE`` and slowed the server beside it.
_WAIT_INTERVAL = 0.1


def _send_at_once(pgconn: Any, statements: List[str]) -> Optional[Tuple[str, Exception]]:
    """Send ``statements`` as one pipeline with one Sync; the first failure, if any."""
    from psycopg import errors, generators, pq, waiting

    def wait(gen: Any) -> Any:
        return waiting.wait(gen, pgconn.socket, _WAIT_INTERVAL)  # positional: 3.1 calls it timeout

    encoding = "utf-8"
    pgconn.enter_pipeline_mode()
    try:
        for statement in statements:
            pgconn.send_query_params(statement.encode(encoding), None)
        pgconn.pipeline_sync()  # queues the Sync and flushes the whole pipeline at once
        wait(generators.send(pgconn))
        failed: Optional[Tuple[str, Exception]] = None
        for statement in statements:
            for result in wait(generators.fetch_many(pgconn)):
                if result.status == pq.ExecStatus.FATAL_ERROR and failed is None:
                    failed = (statement, errors.error_from_result(result, encoding=encoding))
        wait(generators.fetch_many(pgconn))  # the Sync's result
    finally:
        pgconn.exit_pipeline_mode()
    return failed


class Owner:
    """One process's control connection, holding an advisory lock per database it owns.

    ``connect()`` returns an AUTOCOMMIT SQLAlchemy connection of its own. Thread-safe;
    after ``fork()`` the child opens its own connection and owns nothing of its parent's.
    """

    def __init__(self, connect: Callable[[], Connection]) -> None:
        self._connect = connect
        self._lock = threading.RLock()  # admin work run() holds it on a full server
        self._connection: Optional[Connection] = None
        self._pid = os.getpid()

    def reset_after_fork(self) -> None:
        """In a forked child: a lock of its own (a parent's thread may have held this one at the fork,
        doing admin work on a full server) and no connection (the parent's socket is not ours)."""
        self._lock = threading.RLock()
        if self._pid != os.getpid():
            leave_to_parent(self._connection)
            self._connection, self._pid = None, os.getpid()

    def _conn(self) -> Connection:
        if self._pid != os.getpid():  # a forked child: the parent's socket is not ours
            leave_to_parent(self._connection)
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

    def run(self, work: Callable[[Connection], Any]) -> None:
        """Run admin work (a create, a drop) on the control connection, between its own statements.

        On a full server this is how a process creates and drops without another slot: the
        control connection is the one it always holds, so its drops never wait for a slot that
        only another waiting process could free.
        """
        with self._lock:
            work(self._conn())

    def server_load(self) -> Optional[Tuple[int, int]]:
        """(client connections in use, max_connections), read on the open control connection; None
        when there is none (a full server refuses a new one) or it fails."""
        with self._lock:
            connection = self._connection
            if connection is None or connection.closed or connection.invalidated or self._pid != os.getpid():
                return None
            try:
                used, most = connection.execute(text(_sql.SERVER_LOAD)).one()
            except Exception:
                return None
            return int(used), int(most)

    def close(self) -> None:
        """Close the control connection (every lock it held goes with it)."""
        with self._lock:
            if self._connection is not None and self._pid == os.getpid():
                try:
                    self._connection.close()
                except Exception:
                    pass
            self._connection = None


class Ledger:
    """The names one server object created, and which of them it still owns.

    :meth:`own` claims a name through the :class:`Owner` before the database exists;
    :meth:`disown` gives it up once it is dropped, kept, or handed over as a shared
    template. A server only ever drops what its ledger says it created.
    """

    def __init__(self, owner: Owner) -> None:
        self.owner = owner
        self._lock = threading.Lock()
        self._owned: Set[str] = set()
        self._created: Set[str] = set()
        self._closed = False  # the process is ending: what is owned was handed over, nothing new is claimed

    def reset_after_fork(self) -> None:
        """A forked child owns nothing of its parent's and must not inherit a held lock."""
        self._lock = threading.Lock()
        self._owned.clear()
        self._closed = False
        self.owner.reset_after_fork()

    def own(self, name: str) -> None:
        """Claim ``name`` (its ownership lock, before it exists) and record it as ours to drop.

        Raises ``RuntimeError`` once :meth:`take_owned` closed the ledger (the process is ending:
        a clone the pool was about to make would be nobody's to drop)."""
        self.owner.claim(name)
        with self._lock:
            closed = self._closed
            if not closed:
                self._owned.add(name)
                self._created.add(name)
        if closed:
            self.owner.release(name)
            raise RuntimeError("elefast's server is closing: no new databases")

    def disown(self, name: str) -> None:
        """Forget ``name`` after it was dropped (or kept, or handed over as a shared template)."""
        with self._lock:
            was_ours = name in self._owned
            self._owned.discard(name)
        if was_ours:
            self.owner.release(name)

    def droppable(self, name: str, server: object) -> bool:
        """True if ``name`` should be dropped now, False if it was dropped already.

        Raises ``ValueError`` for a name this server never created: elefast never drops
        what it does not own.
        """
        with self._lock:
            if name not in self._created:
                raise ValueError(
                    f"elefast only drops databases it created; {name!r} was not created by {server!r}. "
                    f"To drop it anyway, run: DROP DATABASE {_sql.quote_identifier(name)} WITH (FORCE)"
                )
            return name in self._owned

    def owns(self, name: str) -> bool:
        """Whether this server created ``name`` and has not dropped it yet."""
        with self._lock:
            return name in self._owned

    def take_owned(self, close: bool = False) -> List[str]:
        """Forget and return every owned name, clones before templates (for the final cleanup);
        ``close``: claim nothing more (see :meth:`own`)."""
        with self._lock:
            names = sorted(self._owned, key=lambda n: "_tpl_" in n or "_cls_" in n)
            self._owned.clear()
            self._closed = self._closed or close
        return names


def _marked(connection: Connection) -> Tuple[List[str], Set[str], Set[str]]:
    """Every database a process marked as its own, templates left half-marked or half-dropped by a
    crash included (sorted), and those two kinds of template on their own."""
    names = connection.execute(text(_sql.LIST_MARKED), {"mark": _sql.OWNED_MARK + "%"}).scalars().all()
    half_marked, half_dropped = set(_half_marked_templates(connection)), set(_half_dropped_templates(connection))
    return sorted({*names, *half_marked, *half_dropped}), half_marked, half_dropped


def _half_marked_templates(connection: Connection) -> List[str]:
    return list(connection.execute(text(_sql.LIST_MARKED_TEMPLATES), {"mark": _sql.OWNED_MARK + "%"}).scalars())


def _half_dropped_templates(connection: Connection) -> List[str]:
    """Databases noted as elefast's ready templates that are templates no more: what a process
    killed between a template's ``IS_TEMPLATE false`` and its ``DROP`` left (prune, disk room,
    dropper, sweep all drop a template in those two steps)."""
    return list(connection.execute(text(_sql.LIST_MARKED), {"mark": _sql.TEMPLATE_MARK + "%"}).scalars())


def _try_lock(connection: Connection, name: str, half_dropped: Set[str]) -> List[int]:
    """The advisory locks that say nobody living has ``name``, taken (unlock them after); [] if one
    is held. A half-dropped template also needs the template's own lock, the one its pruner held."""
    keys = [owner_key(name)] + ([_sql.advisory_key(name)] if name in half_dropped else [])
    taken: List[int] = []
    for key in keys:
        if not connection.execute(text(_sql.ADVISORY_TRY_LOCK), {"key": key}).scalar():
            _unlock(connection, taken)
            return []
        taken.append(key)
    return taken


def _unlock(connection: Connection, keys: List[int]) -> None:
    for key in keys:
        connection.execute(text(_sql.ADVISORY_UNLOCK), {"key": key})


def rename_when_idle(connection: Connection, old: str, new: str, patience: float = 0.5) -> bool:
    """Rename ``old`` to ``new`` once no session is on it; True if done.

    A client that just disconnected leaves its server process for a millisecond or two:
    this waits for it, ends any session still there after a tenth of ``patience``, and gives
    up (False) when sessions remain after ``patience`` seconds.
    """
    import time

    started = time.monotonic()
    terminated = False
    while connection.execute(text(_sql.SESSIONS_ON), {"name": old}).scalar():
        waited = time.monotonic() - started
        if waited > patience:
            return False
        if waited > patience / 10 and not terminated:
            connection.execute(text(_sql.TERMINATE_BACKENDS), {"name": old})
            terminated = True
        time.sleep(0.002)
    try:
        connection.execute(text(_sql.LAZY_COMMIT))  # a rename lost in a crash leaves an owned orphan: swept
        connection.execute(text(_sql.rename_database(old, new)))
    except Exception:  # a session arrived in between: the caller drops it the slow way
        return False
    finally:
        connection.execute(text(_sql.DURABLE_COMMIT))
    return True


def find_kept(connection: Connection) -> List[str]:
    """Databases kept past their process (``keep()``, ``ELEFAST_KEEP_FAILED``): never swept."""
    return list(connection.execute(text(_sql.LIST_MARKED), {"mark": _sql.KEPT_MARK + "%"}).scalars().all())


def find_orphans(connection: Connection, names: Optional[List[str]] = None,
                 half_dropped: Optional[Set[str]] = None) -> List[str]:
    """Marked databases no living process owns (their lock is free). Takes nothing it finds.
    ``names`` and ``half_dropped``: the candidates, when the caller has chosen them already."""
    orphans = []
    if names is None or half_dropped is None:
        names, _, half_dropped = _marked(connection)
    for name in names:
        taken = _try_lock(connection, name, half_dropped)
        if taken:
            _unlock(connection, taken)
            orphans.append(name)
    return orphans


def orphans_created_before(connection: Connection, cutoff: str) -> List[str]:
    """Orphans (see :func:`find_orphans`) marked as created before ``cutoff`` (as :func:`now` writes
    it), nothing created since; templates (``_tpl_``: another process may build one of that name
    again) and half-dropped ones are left to the next sweep, which takes their template lock."""
    names, _, half_dropped = _marked(connection)
    rows = connection.execute(text(_sql.MARKS_OF), {"names": [n for n in names if "_tpl_" not in n]}).all()
    mark = f"{_sql.OWNED_MARK} created "
    older = [str(name) for name, note, _ in rows
             if name not in half_dropped and str(note or "").startswith(mark) and str(note)[len(mark):] < cutoff]
    return find_orphans(connection, older, set())


def sweep(connection: Connection, dry_run: bool = False) -> Tuple[List[str], List[Tuple[str, str]]]:
    """Drop every orphan (see :func:`find_orphans`); return (dropped, [(name, error)]).

    Each is locked while it is dropped, so two sweepers never fight over one, and an
    owner that appears meanwhile keeps its database.
    """
    dropped: List[str] = []
    failed: List[Tuple[str, str]] = []
    names, half_marked, half_dropped = _marked(connection)
    for name in names:
        taken = _try_lock(connection, name, half_dropped)
        if not taken:
            continue  # a living process owns it
        try:
            if not dry_run:
                if name in half_marked:  # a template must stop being one before it can be dropped
                    connection.execute(text(_sql.unmark_template(name)))
                drop(connection, name)
            dropped.append(name)
        except Exception as error:
            failed.append((name, str(error).splitlines()[0] if str(error) else type(error).__name__))
        finally:
            _unlock(connection, taken)
    return dropped, failed
