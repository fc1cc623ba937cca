"""The guard: while a test runs, no engine may connect anywhere but the test's database.

Opt-in (``guard = True`` on a class, or ``ELEFAST_GUARD=1``). One ``do_connect`` hook
on every SQLAlchemy dialect checks each new connection while a guarded test runs; it
lets through the test's own database, elefast's own admin engines and its background
threads, and the app engines elefast steers (they go to the test's database anyway).
Anything else fails at once with :class:`~elefast.errors.GuardError`, naming the URL
(password hidden) and the fix, so a suite cannot write to a developer's or a shared
database by accident.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any, Dict, Iterator, List, Optional

from sqlalchemy import URL, event
from sqlalchemy.engine import Dialect

from elefast._engines.options import is_elefasts
from elefast._engines.steering import is_steered
from elefast.errors import GuardError

__all__ = ["also_allow", "guard_test", "guard_wanted", "paused"]

_state: Dict[str, Any] = {"database": None, "owner": None, "also": ()}
_installed = threading.Lock()
_hooked: List[bool] = []


def guard_wanted(attribute: Any) -> bool:
    """Whether a class asked for the guard (its attribute, else ``ELEFAST_GUARD``)."""
    if attribute is not None:
        return bool(attribute)
    return os.environ.get("ELEFAST_GUARD", "").strip().lower() in ("1", "true", "yes", "on")


#: What a guarded test is told to do, per front end.
MIXIN_FIX = ("Add that engine to the class's app_engines (it will then follow each test's database), "
             "or build it from self.database.url.")
PYTEST_FIX = ("Return that engine from the elefast_app_engines fixture in conftest.py (it will then follow "
              "each test's database), or build it from elefast_database.url.")


def guard_test(test: Any, database: str, owner: Optional[str] = None, fix: str = MIXIN_FIX) -> None:
    """Guard the rest of ``test``: connections anywhere but ``database`` fail until its cleanup.

    ``test`` needs only ``addCleanup``; ``owner`` (default: its class's name) and ``fix`` word the error.
    """
    _state["also"] = ()
    with _installed:
        if not _hooked:
            event.listen(Dialect, "do_connect", _check)
            _hooked.append(True)
    _state.update(database=database, owner=owner or type(test).__name__, fix=fix)
    test.addCleanup(_unguard)


def also_allow(names: Any) -> None:
    """Let the guarded test connect to these databases too (its ``extra_databases``)."""
    _state["also"] = tuple(names)


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """elefast's own set-up steps after the guard went up (a test's extra databases)."""
    saved = _state["database"]
    _state["database"] = None
    try:
        yield
    finally:
        _state["database"] = saved


def _unguard() -> None:
    _state.update(database=None, owner=None, also=())


def _check(dialect: Any, record: Any, cargs: List[Any], cparams: Dict[str, Any]) -> None:
    allowed = _state["database"]
    if allowed is None or is_elefasts(dialect) or threading.current_thread().name.startswith("elefast-"):
        return
    if is_steered(dialect):
        return
    target = cparams.get("dbname", cparams.get("database"))
    if target == allowed or target in _state.get("also", ()):
        return
    url = URL.create(f"{dialect.name}+{dialect.driver}", username=cparams.get("user"), password=None,
                     host=cparams.get("host"), port=cparams.get("port"), database=target)
    raise GuardError(
        f"{_state['owner']}: while a guarded test runs, an engine connected to "
        f"{url.render_as_string(hide_password=True)}, not to the test's database {allowed}. "
        f"{_state['fix']}"
    )
