"""Which templates a server keeps: those its users use, whatever their project or prefix.

Every process that takes a shared template writes "used <when>" into its note (at most hourly,
:func:`record_use`). When a template is built, :func:`prune` drops the server's elefast
templates that nobody used for ``ELEFAST_TEMPLATE_DAYS`` (default 7), and the least recently
used beyond ``ELEFAST_TEMPLATE_BUDGET_MB`` (default 2048) together; a template a living process
holds (its shared advisory lock) is never dropped. So two projects, or the branches of one,
sharing a server keep the templates they use. :func:`list_templates` serves
``python -m elefast sweep --templates``.
"""

from __future__ import annotations

import datetime
import os
import re
from typing import Any, Dict, List, Tuple

from sqlalchemy import Connection, text

from elefast._base import sql as _sql
from elefast._base.log import logger
from elefast._server import ownership

__all__ = ["TEMPLATE_BUDGET_MB", "TEMPLATE_DAYS", "list_templates", "note_times", "note_used", "prune",
           "record_use", "templates_to_prune"]


def _timestamp(when: datetime.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_NOTE_TIME = re.compile(r" (built|used) (\S+)")


def note_times(note: str) -> Tuple[str, str]:
    """(built, last used) ISO timestamps of a template's note; a note from before uses were recorded
    counts its build as its last use."""
    times: Dict[str, str] = dict(_NOTE_TIME.findall(note))
    built = times.get("built", "")
    return built, times.get("used", built)


def note_used(note: str, used_at: str) -> str:
    """``note`` saying the template was last used at ``used_at``."""
    if not re.match(r"^[0-9T:.Z+-]+$", used_at):
        raise ValueError(f"unsafe timestamp {used_at!r}")
    kept = re.sub(r" used \S+", "", note)
    return f"{kept} used {used_at}"


def templates_to_prune(rows: List[Tuple[str, str, int]], current: str, oldest_use: str, budget: int) -> List[str]:
    """Of (name, note, bytes) rows of the server's templates, the ones to drop, least recently used first.

    Only templates elefast marked are ever candidates; ``current`` never is. Kept: those used since
    ``oldest_use`` (an ISO timestamp), most recently used first, while their sizes add up to at most
    ``budget`` bytes. So projects and branches sharing a server each keep the templates they use,
    whatever their prefix, and what nobody used for a while goes.
    """
    ours = [(note_times(note)[1], name, size) for name, note, size in rows
            if note.startswith(_sql.TEMPLATE_MARK) and name != current]
    ours.sort(reverse=True)
    kept_bytes = 0
    doomed: List[str] = []
    for used, name, size in ours:
        if used >= oldest_use and kept_bytes + size <= budget:
            kept_bytes += size
        else:
            doomed.append(name)
    return list(reversed(doomed))


#: Templates nobody used for this many days are dropped when another is built (``ELEFAST_TEMPLATE_DAYS``).
TEMPLATE_DAYS = 7.0
#: The most the server's unused-for-now templates may take together, in MB (``ELEFAST_TEMPLATE_BUDGET_MB``).
TEMPLATE_BUDGET_MB = 2048
#: A use is written to the template's note at most this often (a catalog write per process start otherwise).
USE_RECORDED_EVERY = datetime.timedelta(hours=1)


def _setting(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, "").strip() or default)
    except ValueError:
        logger.warning("elefast: %s is not a number; using %g", name, default)
        return default
    return max(value, 0.0)


def record_use(connection: Connection, name: str) -> None:
    """Write "used <now>" into the template's note (at most hourly), so pruning keeps what is used."""
    try:
        note = str(connection.execute(text(_sql.TEMPLATE_NOTE), {"name": name}).scalar() or "")
        if not note.startswith(_sql.TEMPLATE_MARK):
            return
        now = datetime.datetime.now(datetime.timezone.utc)
        recorded = _timestamp(now - USE_RECORDED_EVERY)
        if note_times(note)[1] >= recorded:
            return
        connection.execute(text(_sql.set_note(name, note_used(note, _timestamp(now)))))
    except Exception as error:  # another role's template, say: pruning then goes by its build time
        logger.debug("elefast could not record the use of template %s: %s", name, error)


def prune(connection: Connection, current: str) -> None:
    """Drop the server's templates nobody used lately, least recently used first, beyond the budget.

    Across every prefix: projects and branches sharing a server keep the templates they use
    (used within ``ELEFAST_TEMPLATE_DAYS``, within ``ELEFAST_TEMPLATE_BUDGET_MB`` together);
    a template in use by a living process is never dropped.
    """
    oldest = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(
        days=_setting("ELEFAST_TEMPLATE_DAYS", TEMPLATE_DAYS))
    budget = int(_setting("ELEFAST_TEMPLATE_BUDGET_MB", TEMPLATE_BUDGET_MB) * 2**20)
    rows = _sized_templates(connection)
    for name in templates_to_prune(rows, current, _timestamp(oldest), budget):
        _drop_unused(connection, name)


def _sized_templates(connection: Connection) -> List[Tuple[str, str, int]]:
    rows = connection.execute(text(_sql.LIST_TEMPLATES), {"pattern": "%"}).all()
    size_of = text(_sql.DATABASE_SIZE)
    return [(str(name), str(note), int(connection.execute(size_of, {"name": name}).scalar() or 0))
            for name, note in rows if str(note).startswith(_sql.TEMPLATE_MARK)]


def _drop_unused(connection: Connection, name: str) -> bool:
    """Drop template ``name`` unless a process uses it (or builds it) right now; True if dropped."""
    key = _sql.advisory_key(name)
    if not connection.execute(text(_sql.ADVISORY_TRY_LOCK), {"key": key}).scalar():
        return False  # being built, swept or used by someone else right now
    try:
        connection.execute(text(_sql.unmark_template(name)))
        ownership.drop(connection, name)
        return True
    except Exception as error:
        say = logger.debug if _sql.is_gone(error) else logger.warning  # gone: another process dropped it
        say("elefast could not drop the old template %s: %s", name, error)
        return False
    finally:
        connection.execute(text(_sql.ADVISORY_UNLOCK), {"key": key})


def list_templates(connection: Connection, drop: bool = False) -> List[Dict[str, Any]]:
    """The server's elefast templates (name, MB, built, last used, in use), least recently used first;
    with ``drop``, every one no process uses is dropped (``python -m elefast sweep --templates``)."""
    found = []
    for name, note, size in sorted(_sized_templates(connection), key=lambda row: note_times(row[1])[1]):
        built, used = note_times(note)
        key = _sql.advisory_key(name)
        free = bool(connection.execute(text(_sql.ADVISORY_TRY_LOCK), {"key": key}).scalar())
        if free:
            connection.execute(text(_sql.ADVISORY_UNLOCK), {"key": key})
        dropped = drop and free and _drop_unused(connection, name)
        found.append({"name": name, "mb": round(size / 2**20, 1), "built": built, "used": used,
                      "in_use": not free, "dropped": dropped})
    return found
