"""Several databases per test: a class's ``extra_databases``.

``extra_databases = {"reports": AlembicMigrator("reports/alembic.ini")}`` gives each test
``self.databases["reports"]`` (a ``Database``, or an ``AsyncDatabase``) and
``self.sessions["reports"]`` beside the main ``self.database`` and ``self.session``: each extra
database has its own template (its own schema, on the class's server) and runs in the class's
isolation mode, through the very same strategy as the main one (in transaction mode,
``self.connections["reports"]`` is the connection whose transaction is rolled back). An app
engine that belongs to an extra database is named with it in ``app_engines``:
``("reports", reports_engine)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Tuple

from elefast._base import sql as _sql
from elefast._testing import app_engines as _app_engines
from elefast._testing import guard as _guard
from elefast._testing.isolation import ENCODING, ClassState, Isolation
from elefast.errors import ConfigurationError

__all__ = ["Extra", "check", "set_up_class", "set_up_test", "set_up_test_async", "split_app_engines"]

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,30}$")


@dataclass
class Extra:
    """One extra database of a class: its name and its own class state."""

    name: str
    state: ClassState


def check(value: Any, owner: str, check_schema: Callable[[Any], Any]) -> Tuple[Tuple[str, Any], ...]:
    """At class creation: ``extra_databases`` is a dict of names to migrators (or None)."""
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise ConfigurationError(f"{owner}.extra_databases must be a dict of names to migrators, e.g. "
                                 f"{{'reports': AlembicMigrator('reports/alembic.ini')}}, not {type(value).__name__}.")
    checked = []
    for name, schema in value.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigurationError(f"{owner}.extra_databases: {name!r} is not a usable name: use a short word "
                                     f"of letters, digits and _ that starts with a letter, e.g. 'reports'.")
        checked.append((name, check_schema(schema)))
    return tuple(checked)


def split_app_engines(specs: Any, extras: Tuple[Tuple[str, Any], ...],
                      owner: str) -> Tuple[Tuple[Any, ...], Dict[str, Tuple[Any, ...]]]:
    """``app_engines`` into the main database's and each extra database's (``("reports", engine)``)."""
    names = [name for name, _ in extras]
    main: List[Any] = []
    extra: Dict[str, List[Any]] = {}
    for spec in specs or ():
        if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str) and ":" not in spec[0]:
            name, engine = spec
            if name not in names:
                raise ConfigurationError(f"{owner}.app_engines: {spec!r} names the database {name!r}, which is not "
                                         f"in extra_databases ({', '.join(names) or 'none'}).")
            extra.setdefault(name, []).append(engine)
        else:
            main.append(spec)
    return tuple(main), {name: tuple(engines) for name, engines in extra.items()}


def set_up_class(cls: Any, main: ClassState, extras: Tuple[Tuple[str, Any], ...],
                 app_engines: Dict[str, Tuple[Any, ...]], provider_for: Callable[[Any], Tuple[Any, Any]],
                 isolation: Isolation) -> List[Extra]:
    """Once per class: each extra database's template, then the isolation mode's class step."""
    found = []
    for name, schema in extras:
        provider, default_factory = provider_for(schema)
        prefix = _sql.safe_prefix(f"{main.prefix}_{name}")
        state = ClassState(provider, provider.template(prefix, ENCODING), prefix,
                           main.sessionmaker_factory if main.sessionmaker_factory is not None else default_factory,
                           isolation, app_engines=_app_engines.resolve(app_engines.get(name, ()), main.owner),
                           owner=main.owner)
        isolation.set_up_class(cls, state)
        found.append(Extra(name, state))
    return found


class _Slot:
    """Where an isolation strategy puts a database for a test: here, an extra one. Everything
    else (cleanups, the test's outcome) is the test's."""

    def __init__(self, test: Any) -> None:
        object.__setattr__(self, "_elefast_test", test)  # whose outcome counts (ELEFAST_KEEP_FAILED)

    def __getattr__(self, name: str) -> Any:
        return getattr(object.__getattribute__(self, "_elefast_test"), name)


def _collect(test: Any, extra: Extra, slot: _Slot) -> None:
    test.databases[extra.name] = slot.__dict__["database"]
    test.sessions[extra.name] = slot.__dict__["session"]
    if "connection" in slot.__dict__:
        test.connections[extra.name] = slot.__dict__["connection"]


def _start(test: Any) -> None:
    test.databases, test.sessions, test.connections = {}, {}, {}


def _allow(test: Any, main: ClassState) -> None:
    if main.guard:  # the guard set for the main database lets the extra ones through too
        _guard.also_allow(database.name for database in test.databases.values())


def set_up_test(test: Any, main: ClassState, extras: List[Extra]) -> None:
    """Each extra database for a ``unittest.TestCase`` test, after the main one."""
    _start(test)
    with _guard.paused():  # elefast's own steps: its first connection to a clone may come from here
        for extra in extras:
            slot = _Slot(test)
            extra.state.isolation.set_up_test(slot, extra.state)
            _collect(test, extra, slot)
    _allow(test, main)


async def set_up_test_async(test: Any, main: ClassState, extras: List[Extra]) -> None:
    """Each extra database for an ``IsolatedAsyncioTestCase`` test, after the main one."""
    _start(test)
    with _guard.paused():
        for extra in extras:
            slot = _Slot(test)
            await extra.state.isolation.set_up_test_async(slot, extra.state)
            _collect(test, extra, slot)
    _allow(test, main)
