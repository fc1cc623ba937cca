"""Steering an engine: its new connections sent to another database, its own object kept.

A :class:`Steering` is a ``do_connect`` hook on one engine that rewrites where each new
connection goes (host, port, database, user, password; the engine's driver and options
stay). The test side points the app's engines at each test's database
(:mod:`elefast._testing.app_engines`); snapshots find the engines pointed at a database
(:func:`pointed_at`) to close their connections, and the guard lets steered engines through
(:func:`is_steered`).
"""

from __future__ import annotations

import weakref
from typing import Any, Dict, List, Optional

from sqlalchemy import URL, Engine, event

__all__ = ["IDENTITY_KEYS", "Steering", "is_steered", "pointed_at", "steering"]

#: The keys of a driver's connect parameters that say where a connection goes.
IDENTITY_KEYS = ("host", "hostaddr", "port", "dbname", "database", "user", "password", "service", "dsn")


class Steering:
    """Where one engine's new connections go while a test runs (None: where the app said)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.target: Optional[Dict[str, Any]] = None
        self.target_url: Optional[URL] = None
        self.connected = 0  # connections made since the target was set
        self.outer: Any = engine  # what disposes its connections: the Engine, or its AsyncEngine
        event.listen(engine, "do_connect", self._redirect)

    def point_at(self, url: Optional[URL]) -> None:
        """Send new connections to ``url`` (the app's driver kept), or back where the app said."""
        if url is None:
            self.target = self.target_url = None
            return
        url = url.set(drivername=self.engine.url.drivername)
        params = self.engine.dialect.create_connect_args(url)[1]
        self.target = {key: value for key, value in params.items() if key in IDENTITY_KEYS}
        self.target_url, self.connected = url, 0

    def _redirect(self, dialect: Any, record: Any, cargs: List[Any], cparams: Dict[str, Any]) -> None:
        target = self.target
        if target is None:
            return
        for key in IDENTITY_KEYS:
            cparams.pop(key, None)
        cparams.update(target)
        self.connected += 1


_STEERING: weakref.WeakKeyDictionary[Engine, Steering] = weakref.WeakKeyDictionary()


def steering(engine: Engine) -> Steering:
    """The one :class:`Steering` of ``engine`` (made on first use)."""
    found = _STEERING.get(engine)
    if found is None:
        found = _STEERING[engine] = Steering(engine)
    return found


def pointed_at(database: str) -> List[Steering]:
    """The steerings now sending their engine's connections to ``database``."""
    return [steer for steer in list(_STEERING.values())
            if steer.target_url is not None and steer.target_url.database == database]


def is_steered(dialect: Any) -> bool:
    """Whether ``dialect`` belongs to an app engine elefast steers."""
    return any(engine.dialect is dialect and steer.target is not None for engine, steer in list(_STEERING.items()))
