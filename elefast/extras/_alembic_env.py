"""What ``env.py`` does with the connection elefast hands it, seen as it happens.

``upgrade head`` runs through Alembic's own ``EnvironmentContext``, with one change: its
``configure()`` (what ``context.configure`` in ``env.py`` calls) first looks at the connection
``env.py`` passes (:class:`Watch`), before any migration runs. A connection to another
database (an ``env.py`` that builds its URL from the app's settings: the developer's own
database, say) is refused there, naming the line of ``env.py`` and the fix, so nothing runs
on it. A connection of its own to the template's
database (``engine = connection.engine; with engine.connect() as c: ...``, as mlflow's
``env.py`` does) cannot see what elefast's transaction did before it: after earlier
ChainMigrator steps, their work is committed first (the template is still being built, and a
failed build drops it whole), so the documented ``ChainMigrator(MetadataMigrator(...),
AlembicMigrator(...))`` recipe works with such an ``env.py`` too.

The migrations run quietly: Alembic's INFO lines ("Running upgrade ...", which the logging
section of ``alembic init``'s ``alembic.ini`` turns on) are shown only when elefast's own
logger shows INFO (``ELEFAST_LOG=info``); warnings and errors always are.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Dict, Optional

from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from elefast._base.log import logger
from elefast._engines.urls import safe_url
from elefast.errors import MigrationError

__all__ = ["Watch", "upgrade_to_head"]


class Watch:
    """The look ``configure()`` takes at the connection env.py passes (see the module docstring)."""

    def __init__(self, elefast_connection: Connection, env_py: Optional[Path], fix: str,
                 seen: Dict[str, str], steps_before: int = 0) -> None:
        self.elefast_connection = elefast_connection
        self.steps_before = steps_before
        self.env_py = env_py
        self.fix = fix
        self.seen = seen  # "own_connection_at": "env.py:LINE: source", when env.py used a connection of its own

    def check(self, connection: Optional[Connection]) -> None:
        """Refuse a connection to another database; remember one of env.py's own to the template."""
        if connection is None or _same_connection(connection, self.elefast_connection):
            return
        where = self._caller()
        theirs, ours = connection.engine.url, self.elefast_connection.engine.url
        if (theirs.host, theirs.port, theirs.database) != (ours.host, ours.port, ours.database):
            raise MigrationError(
                f"{where}: env.py was about to run the migrations on a connection to {safe_url(theirs)}, not "
                f"on the one elefast gives it (the template database {ours.database!r}). elefast stopped it "
                f"before the first migration: nothing ran there. Make env.py use elefast's connection: add "
                f"this branch at the top of run_migrations_online():\n\n{self.fix}\n"
            )
        self.seen["own_connection_at"] = where
        if self.steps_before and self.elefast_connection.in_transaction():
            # It cannot see uncommitted work: commit what the earlier ChainMigrator steps did (the
            # template is still being built; a failure drops it whole) so its migrations find it.
            self.elefast_connection.commit()
            self.seen["committed_before"] = "yes"
            logger.info("elefast: %s: env.py runs the migrations on a connection of its own; the %d "
                        "ChainMigrator step(s) before it were committed first, so it sees them",
                        where, self.steps_before)

    def _caller(self) -> str:
        """``env.py:LINE: source`` of the frame in env.py that called ``configure()``."""
        frame: Any = sys._getframe(2)
        while frame is not None:
            filename = frame.f_code.co_filename
            if (Path(filename).resolve() == self.env_py.resolve() if self.env_py is not None
                    else Path(filename).name == "env.py"):
                return f"{filename}:{frame.f_lineno}{_source(filename, frame.f_lineno)}"
            frame = frame.f_back
        return str(self.env_py or "env.py")


def upgrade_to_head(config: Any, elefast_connection: Connection, env_py: Optional[Path], fix: str,
                    seen: Dict[str, str], steps_before: int = 0) -> None:
    """``alembic upgrade head`` (as ``alembic.command.upgrade`` runs it), with env.py's ``configure()``
    watched: what it did goes into ``seen``."""
    script = ScriptDirectory.from_config(config)

    def upgrade(rev: Any, context: Any) -> Any:
        return script._upgrade_revs("head", rev)

    environment = EnvironmentContext(config, script, fn=upgrade, as_sql=False, starting_rev=None,
                                     destination_rev="head", tag=None)
    watch = Watch(elefast_connection, env_py, fix, seen, steps_before)
    configure = environment.configure

    def watched_configure(connection: Optional[Connection] = None, **kwargs: Any) -> None:
        watch.check(connection)
        _quiet_alembic()  # env.py's fileConfig has run by now; the caller puts logging back after
        configure(connection=connection, **kwargs)

    environment.configure = watched_configure  # type: ignore[method-assign, assignment]  # context.configure
    with environment:
        script.run_env()


def _quiet_alembic() -> None:
    """Alembic's loggers at WARNING for this run, unless elefast's logger shows INFO."""
    if not logger.isEnabledFor(logging.INFO):
        for name in ("alembic", "alembic.runtime.migration"):
            named = logging.getLogger(name)
            if named.getEffectiveLevel() < logging.WARNING:
                named.setLevel(logging.WARNING)


def _same_connection(one: Connection, other: Connection) -> bool:
    if one is other:
        return True
    try:
        return one.connection.dbapi_connection is other.connection.dbapi_connection
    except Exception:
        return False


def _source(filename: str, line: int) -> str:
    try:
        text = Path(filename).read_text(encoding="utf-8", errors="replace").splitlines()[line - 1].strip()
    except (OSError, IndexError):
        return ""
    return f": {text}" if text else ""
