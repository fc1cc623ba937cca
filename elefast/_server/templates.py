"""Template databases: found or built once under an advisory lock, marked ready, pruned.

A server's schema is built into a template database once; every test database is a
clone of it. A migrator with a ``fingerprint()`` gets a shared template named by a hash
of its identity (type, fingerprint, overridden code, configuration: see
:mod:`elefast._schema.fingerprints`), the role that builds it, the server version, the encoding
and elefast's template format: built by the first process that needs it, under an
advisory lock so concurrent processes wait instead of building it again, verified
(the migrator's ``verify``), marked read-only and ready only when all of that
succeeded, and reused by later runs. Old ones beyond the newest few are pruned (never
one a living process uses). A migrator that cannot be fingerprinted safely, or any
migrator under ``ELEFAST_REBUILD=1``, gets a template for this process only, dropped at
exit. A failed build leaves nothing behind and fails every later request with the same
:class:`~elefast.errors.MigrationError`.

Per-class templates (``setUpTestData``) are clones of the schema's template with the
class's rows, made the same way and retired after the class.
"""

from __future__ import annotations

import datetime
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

from sqlalchemy import Connection, text
from typing_extensions import Protocol

from elefast import migrators
from elefast._base import sql as _sql
from elefast._base.log import logger
from elefast._engines.kinds import EngineKind
from elefast._schema import fingerprints as _fingerprints
from elefast._server import messages as _messages
from elefast._server import ownership
from elefast._server.disk import CloneRoom, prune_for_space
from elefast._server.retention import prune, record_use
from elefast.errors import MigrationError


class TemplateHost(Protocol):
    """What templates need of their server (:class:`elefast._server.core.TemplateHost` is one)."""

    schema: Any
    kind: EngineKind
    room: CloneRoom
    ledger: ownership.Ledger

    def connect(self) -> Connection: ...
    def log(self, statement: str) -> None: ...
    def strategy(self, connection: Optional[Connection] = None) -> Optional[str]: ...
    def run_in(self, name: str, work: Callable[[Connection], Any]) -> None: ...
    def drop(self, name: str, *, long_lived: bool = False) -> None: ...
    def create(self, name: str, template: Optional[str], encoding: str, *,
               fast: bool = False, long_lived: bool = False) -> None: ...

__all__ = ["TemplateHost", "TemplateSlot", "Templates", "shared_name"]


@dataclass
class TemplateSlot:
    """The template database built for one encoding, or why building it failed."""

    name: str
    error: Optional[BaseException] = None
    message: str = ""
    reused: bool = False
    held: bool = False  # this process holds its in-use lock


class Templates:
    """One server's templates, one per encoding, found or built on first use."""

    def __init__(self, core: TemplateHost) -> None:
        self._core = core
        self._lock = threading.Lock()
        self._slots: Dict[str, TemplateSlot] = {}

    def reset_after_fork(self) -> None:
        """A forked child must not inherit a held lock (the templates themselves stay usable)."""
        self._lock = threading.Lock()

    def slot(self, encoding: str) -> Optional[TemplateSlot]:
        """The template of ``encoding`` if one was asked for already (tests and logs look)."""
        return self._slots.get(encoding)

    def get(self, prefix: str, encoding: str) -> Optional[str]:
        """The name of the schema's template for ``encoding`` (None without a schema).

        Raises :class:`~elefast.errors.MigrationError` when the schema could not be built,
        now or at an earlier call.
        """
        if self._core.schema is None:
            return None
        slot = self._slots.get(encoding)
        if slot is None:
            with self._lock:
                slot = self._slots.get(encoding) or self._prepare(prefix, encoding)
        if slot.error is not None:
            raise MigrationError(slot.message) from _cause(slot.error)
        return slot.name

    def _prepare(self, prefix: str, encoding: str) -> TemplateSlot:
        """Reuse the fingerprinted template if a run built it, else build it under an advisory lock."""
        core = self._core
        started = time.monotonic()
        fingerprint, why = _fingerprints.identity(core.schema)
        if fingerprint is not None and _fingerprints.rebuild_requested():
            fingerprint, why = None, "ELEFAST_REBUILD is set, so it is built fresh"
        if fingerprint is None:  # nothing to recognise it by: a template for this process only
            logger.info("template for %r is for this process only: %s", core.schema, why)
            slot = self._build(_sql.template_name(prefix), encoding, None)
        else:
            with core.connect() as connection:
                core.strategy(connection)  # asked here, on a connection open anyway, before the first clone
                name = shared_name(connection, prefix, encoding, fingerprint)
                for _attempt in range(3):  # a template can be pruned by another process before we hold it
                    slot = _when_ready(connection, name) or self._build_locked(connection, name, prefix, encoding,
                                                                                 fingerprint)
                    if slot.error is not None or self._hold(slot, connection):
                        break
        self._remember(encoding, slot, fingerprint, time.monotonic() - started)
        return slot

    def _hold(self, slot: TemplateSlot, connection: Connection) -> bool:
        """Take this process's in-use lock on a shared template; False if it was dropped just before."""
        try:
            self._core.ledger.owner.use_template(slot.name)
        except Exception as error:  # not fatal: only an old-template sweep could race us
            logger.warning("elefast could not mark the template %s as in use: %s", slot.name, error)
            return True
        slot.held = True
        if _when_ready(connection, slot.name) is None:
            return False
        record_use(connection, slot.name)
        return True

    def _build_locked(self, connection: Connection, name: str, prefix: str, encoding: str,
                      fingerprint: str) -> TemplateSlot:
        key = _sql.advisory_key(name)
        ready = _lock_or_ready(connection, key, name)
        if ready is not None:
            return ready
        try:
            slot = _when_ready(connection, name)  # another process built it meanwhile
            if slot is None:
                ownership.drop(connection, name, self._core.log)  # what a crashed builder left, if anything
                slot = self._build(name, encoding, fingerprint)
                if slot.error is not None and _sql.is_disk_full(slot.error) and self._core.room.disk is not None:
                    # the throwaway server's disk: the templates kept for later runs give way, then once more
                    prune_for_space(self._core.room.disk, connection, needed=2**62)
                    slot = self._build(name, encoding, fingerprint)
                if slot.error is None:
                    prune(connection, name)
            return slot
        finally:
            connection.execute(text(_sql.ADVISORY_UNLOCK), {"key": key})

    def _build(self, name: str, encoding: str, fingerprint: Optional[str]) -> TemplateSlot:
        """Create ``name`` from template0 and migrate it; on failure drop it and remember why."""
        core = self._core
        core.create(name, None, encoding)
        slot = TemplateSlot(name)
        try:
            core.run_in(name, migrators.migration_step(core.schema, is_async=core.kind.is_async))
            core.run_in(name, lambda connection: migrators.verify(core.schema, connection))
            if fingerprint is not None:  # shared from now on: ready, read-only, kept across runs
                with core.connect() as connection:
                    for statement in _sql.mark_template_ready(name, _now(), fingerprint):
                        connection.execute(text(statement))
                core.ledger.disown(name)
        except BaseException as error:
            _drop_quietly(core, name)
            if not isinstance(error, Exception):
                raise  # KeyboardInterrupt and friends: nothing cached, nothing left
            slot.error, slot.message = error, _messages.migration_failed(core.schema, name, error)
        return slot

    def _remember(self, encoding: str, slot: TemplateSlot, fingerprint: Optional[str], seconds: float) -> None:
        """Record the template for ``encoding`` and log it; a shared one gets this process's in-use lock."""
        _log(slot, self._core.schema, fingerprint, seconds)
        if slot.error is None and not slot.held and not self._core.ledger.owns(slot.name):
            try:
                self._core.ledger.owner.use_template(slot.name)
            except Exception as error:  # not fatal: only an old-template sweep could race us
                logger.warning("elefast could not mark the template %s as in use: %s", slot.name, error)
        if slot.error is None and self._core.room.disk is not None:  # measured once held: nobody drops it now
            with self._core.connect() as connection:
                self._core.room.measure(slot.name, connection)
        self._slots[encoding] = slot

    def for_class(self, template: Optional[str], prefix: str, encoding: str, fill: Callable[[Any], Any]) -> str:
        """A per-class template: a clone of ``template`` with ``fill``'s rows (``setUpTestData``).

        ``fill(connection)`` may be a coroutine function on an async server. Drop the result
        with :meth:`TemplateHost.retire` when the class is done.
        """
        core = self._core
        name = _sql.database_name(prefix, infix="cls_")
        core.create(name, template, encoding, fast=True)
        try:
            core.run_in(name, fill)
            if core.room.disk is not None:
                with core.connect() as connection:
                    core.room.measure(name, connection)
        except BaseException:
            core.drop(name)
            raise
        return name


def shared_name(connection: Connection, prefix: str, encoding: str, fingerprint: str) -> str:
    """The name of the shared template of a migrator identity, for the role ``connection`` uses.

    The role is part of it: the template's objects belong to the role that built it, so a
    suite run as another role (a CI role with CREATEDB) never gets clones whose tables it
    may not touch.
    """
    role = str(connection.execute(text(_sql.CURRENT_ROLE)).scalar())
    digest = _sql.template_hash(fingerprint, connection.dialect.server_version_info, encoding, role)
    return _sql.template_name(prefix, digest)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


#: Seconds to wait for another process building the same template before giving up.
BUILD_WAIT = 600.0


def _lock_or_ready(connection: Connection, key: int, name: str) -> Optional[TemplateSlot]:
    """Take the build lock of ``name``, or return its slot as soon as another process made it ready.

    Never a blocking ``pg_advisory_lock``: every process using a ready template holds the
    same key shared until it exits, so a builder that asked just after the template became
    ready would wait for those processes to end, and they (workers of one parallel run)
    may be waiting for it.
    """
    deadline = time.monotonic() + BUILD_WAIT
    while not connection.execute(text(_sql.ADVISORY_TRY_LOCK), {"key": key}).scalar():
        slot = _when_ready(connection, name)
        if slot is not None:
            return slot
        if time.monotonic() > deadline:
            raise MigrationError(
                f"Waited {BUILD_WAIT:g} s for another process to build the template {name}. If no other test "
                f"run is migrating it, a stuck process holds its lock: python -m elefast sweep, or end that process."
            )
        time.sleep(0.05)
    return None


def _when_ready(connection: Connection, name: str) -> Optional[TemplateSlot]:
    """A slot for ``name`` if it is a ready template already."""
    if connection.execute(text(_sql.TEMPLATE_STATE), {"name": name}).scalar():
        return TemplateSlot(name, reused=True)
    return None


def _drop_quietly(core: TemplateHost, name: str) -> None:
    try:
        core.drop(name)
    except Exception as error:
        core.ledger.disown(name)
        logger.warning("elefast could not drop the failed template %s: %s", name, error)


def _cause(error: BaseException) -> Optional[BaseException]:
    """What a failed build's MigrationError is raised from: the error itself, or, when that is a
    MigrationError (whose text the new one repeats whole), what *it* was raised from, so a
    traceback says the message once and still shows the database error."""
    if not isinstance(error, MigrationError):
        return error
    if error.__cause__ is not None or error.__suppress_context__:
        return error.__cause__
    return error.__context__


def _log(slot: TemplateSlot, schema: Any, fingerprint: Optional[str], seconds: float) -> None:
    """Say whether the template was reused or built (with its fingerprint and time), or why it failed."""
    short = fingerprint[:16] if fingerprint else "none: dropped at exit"
    if slot.error is not None:
        logger.info("template %s for %r could not be built: %s", slot.name, schema, slot.message)
    elif slot.reused:
        logger.info("template %s reused for %r (fingerprint %s; found in %.0f ms)",
                    slot.name, schema, short, seconds * 1000)
    else:
        logger.info("template %s built for %r in %.0f ms (fingerprint %s)", slot.name, schema, seconds * 1000, short)
