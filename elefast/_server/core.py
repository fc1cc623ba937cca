"""The admin core: every server-side step, written once, under both public APIs.

:class:`ServerCore` creates (and marks) databases, drops them, keeps them, sweeps
orphans, builds and finds templates (:mod:`elefast._server.templates`), runs the clone pool
(:mod:`elefast._server.pool`) and cleans up at the end. It is synchronous and talks to the
server through one SQLAlchemy engine of psycopg connections in autocommit: the sync
:class:`~elefast.sync.DatabaseServer` calls it directly, the async
:class:`~elefast.asyncio.AsyncDatabaseServer` from worker threads, off its event loop.

What differs between the two is an :class:`~elefast._engines.kinds.EngineKind`: how to
open an engine on a database elefast created, run a migration or ``setUpTestData`` there (a coroutine for
async migrators), and what to warm up for a ready clone.

Front ends (the mixins, the pytest plugin) reach a server's core through
:func:`core_of`, the one named way in; they never touch a server's attributes.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from sqlalchemy import URL, Connection, Engine, NullPool, text
from sqlalchemy.exc import DBAPIError

from elefast._base import settings as _settings
from elefast._base import sql as _sql
from elefast._base.log import logger
from elefast._base.process import at_process_exit, background_thread, exiting, leave_to_parent, reset_in_forked_child
from elefast._engines import budget as _budget
from elefast._engines import options as _options
from elefast._engines import urls as _urls
from elefast._engines.kinds import EngineKind, Work
from elefast._server import clone_strategy as _clone_strategy
from elefast._server import dropper as _dropper
from elefast._server import messages as _messages
from elefast._server import ownership
from elefast._server.admin_connections import AdminConnections
from elefast._server.disk import CloneRoom, DiskRoom
from elefast._server.pool import ClonePool
from elefast._server.templates import Templates
from elefast.errors import DiskFullError, ServerFullError

__all__ = ["ServerCore", "core_of"]

_CORES: weakref.WeakKeyDictionary[Any, ServerCore] = weakref.WeakKeyDictionary()


def core_of(server: Any) -> ServerCore:
    """The core behind a :class:`~elefast.sync.DatabaseServer` or an ``AsyncDatabaseServer``."""
    try:
        return _CORES[server]
    except (KeyError, TypeError):
        raise TypeError(f"{server!r} is not an elefast DatabaseServer or AsyncDatabaseServer") from None


class ServerCore:
    """One server object's steps and bookkeeping.

    Args:
        server: the public facade this core serves (weakly referenced; cleanup runs when
            it is closed, collected, or the process exits).
        admin: the engine for admin work (AUTOCOMMIT is set per connection).
        user_engine: the (sync view of the) engine the user gave, whose options the engines
            of created databases copy, and whose URL they share but for the database.
        kind: sync or async engines for those databases.
        schema: the migrator of the server's templates, or None.
        debug: log every statement elefast sends at INFO.
    """

    def __init__(self, server: Any, admin: Engine, user_engine: Engine, kind: EngineKind,
                 schema: Any, debug: bool = False) -> None:
        _settings.check_environment()  # once per process: a misspelt ELEFAST_* variable is said
        self.admin = admin
        self.kind = kind
        self.schema = schema
        self.debug = debug
        self.url: URL = user_engine.url
        self._described = repr(server)
        self._user_engine = user_engine
        self._connect_args = {} if _options.is_admin(user_engine) else _options.remember_connect_args(user_engine)
        self._strategy: Optional[str] = None  # "" once asked: the server's default
        self._hstore: Optional[bool] = None  # does the schema's template have the hstore type?
        self._lock = threading.Lock()
        self._strategy_lock = threading.Lock()
        self._pool: Optional[ClonePool] = None
        self._admin = AdminConnections(self.connect)  # the long-lived ones, any thread's to use
        self._asked: Set[Tuple[Optional[str], str, str]] = set()  # what create_database() was asked for
        self._closed_by_caller = False
        self._started = ownership.now()  # a sweep this process owes covers what was orphaned before
        self.room = CloneRoom(DiskRoom.for_url(self.url), self.connect)  # the local server's disk
        self.ledger = ownership.Ledger(ownership.Owner(self.connect))
        self.templates = Templates(self)
        _CORES[server] = self
        reset_in_forked_child(self)
        self._finalizer = weakref.finalize(server, _dropper.final_cleanup, self.ledger, self._stop_pool,
                                           self._close_connections, self._drop_names, self._drop_behind)
        at_process_exit(self._finalizer)

    def __repr__(self) -> str:
        return self._described

    def reset_after_fork(self) -> None:
        """A forked child owns nothing of its parent's: no pool, no connections, no held lock."""
        self._lock = threading.Lock()
        self._strategy_lock = threading.Lock()
        leave_to_parent(self._pool)
        self._pool = None
        self._admin.reset_after_fork()
        self.ledger.reset_after_fork()
        self.templates.reset_after_fork()

    # -- connections and engines ------------------------------------------------

    def connect(self) -> Connection:
        """A new AUTOCOMMIT admin connection (close it, or use it in ``with``)."""
        return self.admin.connect().execution_options(isolation_level="AUTOCOMMIT")

    def database_url(self, name: str) -> URL:
        """The URL of database ``name``: the user's URL (driver, host, options) but for the database."""
        return self.url.set(database=name)

    def engine_options(self, pooled: bool = True) -> Dict[str, Any]:
        """``create_engine`` options for a created database: the user's engine's own.

        Once a clone showed that the template has no ``hstore`` type, psycopg engines skip
        looking it up (three round trips in each new engine's first connection, for an answer
        every clone of the template shares); SQLAlchemy's ``HSTORE`` works either way.
        """
        options = _options.engine_options(self._user_engine, self._connect_args)
        if self._hstore is False and self.url.get_driver_name() == "psycopg" and pooled:
            options.setdefault("use_native_hstore", False)
        if not pooled:
            options = _options.without_pool_sizes(options)
            options["poolclass"] = NullPool
        return options

    def run_in(self, name: str, work: Work) -> None:
        """Run ``work(connection)`` in one transaction inside database ``name``."""
        self.kind.run_in(self.database_url(name), self.engine_options(pooled=False), work)

    def log(self, statement: str) -> None:
        """Log ``statement`` at INFO when the server was made with ``debug=True``."""
        if self.debug:
            logger.info("%s", statement)

    # -- creating, dropping, keeping ----------------------------------------------

    def create(self, name: str, template: Optional[str], encoding: str, *,
               fast: bool = False, long_lived: bool = False) -> None:
        """``CREATE DATABASE name`` (a clone of ``template``) and its ownership mark, in one pipeline.

        ``fast`` uses the strategy measured best for this server (clones, per-class
        templates); ``long_lived`` this thread's own connection (the pool's workers).
        """
        statement = _sql.create_database(name, template, encoding, self.strategy() if fast else None)

        def create_and_mark(connection: Connection) -> None:
            self.log(statement)
            ownership.create_marked(connection, statement, name)

        self.room.make(template)
        self.ledger.own(name)
        try:
            self.on_admin(create_and_mark, long_lived)
        except DBAPIError as error:
            self.ledger.disown(name)
            _messages.raise_if_fatal(error, self.url, action=f"create the database {name!r}")
            self.raise_if_full(error)
            if _sql.is_disk_full(error):
                raise DiskFullError(self.room.no_room(name)) from error
            raise

    def raise_if_full(self, error: BaseException) -> None:
        """Raise :class:`~elefast.errors.ServerFullError` (with the server's numbers) if ``error``
        says the server had no free connection."""
        if _sql.is_server_full(error):
            raise ServerFullError(_messages.server_full(self.url, self.ledger.owner.server_load())) from error

    def drop(self, name: str, *, long_lived: bool = False) -> None:
        """Drop ``name`` if this server created it and still owns it; refuse any other name."""
        if self.ledger.droppable(name, self):
            self.on_admin(lambda connection: ownership.drop(connection, name, self.log), long_lived)
            self.ledger.disown(name)

    def drop_soon(self, name: str) -> None:
        """Make ``name`` gone now, and drop it in the background (the public ``drop()``).

        It is renamed to an owned, marked ``elefast_gone_<random>`` (a catalog change: no
        checkpoint, no waiting on the pool's creates), which the pool's dropper drops
        behind; a process killed before that leaves it to the next sweep. If sessions
        stay on it, it is dropped here, ending them.
        """
        if not self.ledger.droppable(name, self):
            return
        gone = _sql.database_name(_sql.DEFAULT_PREFIX, infix="gone_")
        self.ledger.own(gone)  # claimed before the name exists, as for any database elefast makes
        renamed: List[bool] = []
        try:
            self.on_admin(lambda connection: renamed.append(ownership.rename_when_idle(connection, name, gone)),
                          long_lived=True)  # the caller's thread keeps one admin connection for its drops
        except Exception:
            renamed = []
        if not renamed or not renamed[0]:
            self.ledger.disown(gone)
            self.drop(name)
            return
        self.log(_sql.rename_database(name, gone))
        self.ledger.disown(name)
        self.pool.release(gone)

    def keep(self, name: str) -> None:
        """Keep ``name`` past the process: mark it kept, give up ownership; it is never dropped or swept."""
        def mark(connection: Connection) -> None:
            for statement in ownership.mark_kept(name):
                connection.execute(text(statement))

        self.on_admin(mark)
        self.ledger.disown(name)

    def sweep(self, dry_run: bool = False) -> List[str]:
        """Drop the databases elefast made for processes that are gone; return their names."""
        with self.connect() as connection:
            dropped, failed = ownership.sweep(connection, dry_run=dry_run)
        for name, error in failed:
            logger.warning("elefast could not sweep %s: %s", name, error)
        if dropped and not dry_run:
            logger.info("elefast swept %d orphaned databases", len(dropped))
        return dropped

    def strategy(self, connection: Optional[Connection] = None) -> Optional[str]:
        """``CREATE DATABASE ... STRATEGY`` for clones, measured best for this server (or None);
        asked once, on ``connection`` if given, else on a connection of its own."""
        with self._strategy_lock:  # asked once, not by every pool thread at once
            if self._strategy is None:
                if connection is not None:
                    self._learn_strategy(connection)
                else:
                    with self.connect() as own:
                        self._learn_strategy(own)
            return self._strategy or None

    def _learn_strategy(self, connection: Connection) -> None:
        if self._strategy is None:
            fsync, version, copy_method, most, reserved, others, ours = connection.execute(
                text(_sql.SERVER_SETTINGS)).one()
            _budget.plan(int(most), int(reserved), int(others), int(ours))
            strategy = _clone_strategy.choose_strategy(int(version), str(fsync), str(copy_method))
            said = _clone_strategy.describe_strategy(strategy, str(copy_method))
            logger.info("%s (%s)", said, _urls.safe_url(self.url))
            self._strategy = strategy or ""

    def on_admin(self, work: Callable[[Connection], Any], long_lived: bool = False) -> None:
        """Run ``work`` on a fresh admin connection, or on one of the server's long-lived ones.

        The pool's workers and the public ``drop()`` send one statement at a time; a new
        connection each time would cost more than the statement. Long-lived connections
        belong to the server, not to a thread: any thread (an event loop's executor thread,
        say) takes an idle one and gives it back, so they number at most the admin work
        running at once, whatever the threads and event loops; more than
        :func:`~elefast._server.admin_connections.idle_limit` idle ones are closed.
        """
        if _budget.is_lean():  # a full server: the control connection does it, no other slot is waited for
            self._admin.close_idle()
            self.ledger.owner.run(work)
            return
        if not long_lived:
            with self.connect() as fresh:
                work(fresh)
            return
        self._admin.run(work)

    # -- the clone pool -------------------------------------------------------------

    @property
    def pool(self) -> ClonePool:
        """The clone pool (started on first use)."""
        pool = self._pool
        if pool is None:
            self.strategy()  # the first query also sizes the connection budget: before the pool is made
            with self._lock:
                pool = self._pool
                if pool is None:
                    pool = self._pool = ClonePool(
                        lambda name, template, encoding: self.create(name, template, encoding,
                                                                     fast=True, long_lived=True),
                        lambda name: self.drop(name, long_lived=True),
                        self._prepare, sweep=self.sweep,
                        room=self.room.ahead)
                    _budget.on_lean(pool.let_go_of_idle)
                    close_idle = weakref.WeakMethod(self._admin.close_idle)  # the listener keeps nothing alive
                    _budget.on_lean(lambda: (close_idle() or (lambda: None))())  # full server: no idle admin either
        return pool

    def _prepare(self, name: str, template: Optional[str], warm: bool = True) -> Any:
        try:
            prepared = self.kind.prepare(self.database_url(name), self.engine_options(), template, warm)
        except DBAPIError as error:
            self.raise_if_full(error)
            raise
        if self._hstore is None and isinstance(prepared, Engine):  # learnt from the first warm clone
            found = getattr(prepared.dialect, "_has_native_hstore", None)
            if isinstance(found, bool) and getattr(prepared.dialect, "use_native_hstore", False):
                self._hstore = found
        return prepared

    def take(self, template: Optional[str], prefix: str, encoding: str, ahead: bool = True) -> Tuple[str, Any]:
        """A fresh clone of ``template`` from the pool: (name, what ``EngineKind.prepare`` made)."""
        return self._current(template, *self.pool.take(template, prefix, encoding, ahead))

    def _current(self, template: Optional[str], name: str, prepared: Any) -> Tuple[str, Any]:
        return name, self.kind.current(prepared, lambda: self._prepare(name, template))

    def take_for_caller(self, template: Optional[str], prefix: str, encoding: str) -> Tuple[str, Any]:
        """A clone for the public ``create_database()``: from the pool, kept ahead from the second
        request of the same template, prefix and encoding on (a prefix used once, such as a test's
        own name, never leaves unused clones behind)."""
        key = (template, prefix, encoding)
        with self._lock:
            again = key in self._asked
            self._asked.add(key)
        return self._current(template, *self.pool.take(template, prefix, encoding, ahead=again))

    def release(self, name: str) -> None:
        """Hand a clone back to the pool, to be dropped in the background."""
        self.pool.release(name)

    def retire(self, template: str) -> None:
        """Stop keeping clones of ``template`` (a per-class one), then drop it."""
        self.pool.retire(template, then_drop=template)

    def drain(self, timeout: float = 60) -> None:
        """Stop keeping clones ahead and wait until every pending drop is done (tests, sweeps)."""
        if self._pool is not None:
            self._pool.drain(timeout)

    # -- the end ----------------------------------------------------------------------

    def close(self) -> None:
        """Stop the pool, drop every database this server still owns, close its connections."""
        self._closed_by_caller = True  # it waits for its drops (a collected server hands them over)
        self._finalizer()

    def _stop_pool(self, quick: bool = False) -> List[str]:
        pool, self._pool = self._pool, None
        return pool.close(timeout=0 if quick else 30) if pool is not None else []

    def _drop_behind(self) -> Optional[_dropper.Behind]:
        """Where a detached dropper should drop what this server owns, if anywhere (see
        :mod:`elefast._server.dropper`); None when this process drops them itself (``close()``
        outside the exit, lean mode, ``ELEFAST_DROP_AT_EXIT=here``)."""
        if self._closed_by_caller and not exiting():
            return None
        if _budget.is_lean() or not _dropper.behind_wanted():
            return None
        return _dropper.Behind(url=self.admin.url.render_as_string(hide_password=False),
                               leases=self.room.disk.leases if self.room.disk is not None else None,
                               sweep_before=self._started if self._pool is not None and self._pool.sweep_owed
                               else None)

    def _close_connections(self) -> None:
        self._admin.close_all()

    def _drop_names(self, names: List[str]) -> None:
        """Drop ``names`` at the end: over two connections at once when there are several (each
        ``DROP DATABASE`` waits for a checkpoint, and two waiting share one), else over one."""
        helper: Optional[threading.Thread] = None
        if len(names) >= 4 and not _budget.is_lean():
            helper = background_thread(self._drop_lane, "elefast-drop-lane", (names[1::2],))
            try:
                helper.start()
            except RuntimeError:  # Python 3.12 starts no thread at interpreter shutdown: one lane then
                helper = None
        self._drop_lane(names if helper is None else names[0::2])
        if helper is not None:
            helper.join()

    def _drop_lane(self, names: List[str]) -> None:
        if not names:
            return
        try:
            with self.connect() as connection:
                for name in names:
                    try:
                        ownership.drop(connection, name)
                    except Exception as error:  # keep going: drop what we can
                        logger.warning("elefast could not drop %s: %s", name, error)
        except Exception as error:
            logger.warning("elefast could not connect to drop %d databases: %s", len(names), error)
