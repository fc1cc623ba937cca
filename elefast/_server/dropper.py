"""Dropping behind a process that ends: what is left at exit goes to a detached dropper.

On a server with ``fsync = on`` every ``DROP DATABASE`` waits for a checkpoint (a few hundred
ms on a disk), so a process that dropped its last clones itself kept the developer waiting
seconds after the last test. At exit (not at an explicit ``close()``, which still drops before
it returns) a process hands the names it still owns to a dropper that outlives it and ends at
once. The dropper (``python -m elefast._server.dropper``, in a session of its own, its output
going nowhere) gets the server's URL and the names through its environment (never its command
line, which other users see), and for each name, within :data:`DROPPER_SECONDS`:

- waits until no living process owns it (the ownership lock is free: its process has ended),
  and for a clone whose ``CREATE DATABASE`` was still running to appear (briefly);
- drops it only if it is marked as elefast's (a template is unmarked first); a name not marked
  within :data:`APPEAR_SECONDS` is left alone.

If the dropper is killed, or cannot connect, the databases are orphans like any other: the
next sweep drops them. ``ELEFAST_DROP_AT_EXIT=here`` makes a process drop them itself before it
ends, ``=behind`` always hands them over; the default hands them over except on elefast's own
throwaway local server, whose drops are quick (``fsync = off``) and whose supervisor stops it
after its last process. A process short of connections (a small server: lean mode) drops them
itself over the connection it holds, rather than have the dropper need another.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

__all__ = ["DROPPER_SECONDS", "ENV_DROP_AT_EXIT", "behind_wanted", "hand_over", "main"]

#: The environment variable choosing who drops what is left at exit: ``here``, ``behind``, or unset.
ENV_DROP_AT_EXIT = "ELEFAST_DROP_AT_EXIT"
#: Variables the dropper reads (set only in its own environment).
URL_VARIABLE = "ELEFAST_DROP_URL"
NAMES_VARIABLE = "ELEFAST_DROP_NAMES"
#: How long the dropper works at most before it leaves the rest to the next sweep.
DROPPER_SECONDS = 30.0
#: How long a name the dropper cannot see yet, or not yet marked (a clone still being created:
#: its mark follows its ``CREATE DATABASE``), is waited for.
APPEAR_SECONDS = 10.0


def behind_wanted(is_local_server: bool) -> bool:
    """Whether a process ending now should hand what it owns to a dropper (see the module docstring)."""
    wanted = os.environ.get(ENV_DROP_AT_EXIT, "").strip().lower()
    if wanted == "here":
        return False
    if wanted == "behind":
        return True
    return not is_local_server


def hand_over(url: str, names: Sequence[str]) -> bool:
    """Start a detached dropper for ``names`` on the server at ``url`` (password included); False if
    it could not start (the caller then drops them itself)."""
    if not names:
        return True
    env = dict(os.environ, **{URL_VARIABLE: url, NAMES_VARIABLE: ",".join(names)})
    home = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # where elefast is
    env["PYTHONPATH"] = os.pathsep.join(part for part in (home, env.get("PYTHONPATH", "")) if part)
    try:
        subprocess.Popen([sys.executable, "-m", "elefast._server.dropper"], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
                         close_fds=True)
    except (OSError, RuntimeError, ValueError):
        return False
    return True


def _state(connection: object, names: Sequence[str]) -> Dict[str, Optional[bool]]:
    """For each name on the server: whether it is a template, if it is still marked as elefast's."""
    from sqlalchemy import text

    from elefast._base import sql as _sql

    rows = connection.execute(  # type: ignore[attr-defined]
        text("SELECT datname, datistemplate, shobj_description(oid, 'pg_database') FROM pg_database "
             "WHERE datname = ANY(:names)"), {"names": list(names)}).all()
    marks = (_sql.OWNED_MARK, _sql.TEMPLATE_MARK)
    return {str(name): bool(template) if str(note or "").startswith(marks) else None
            for name, template, note in rows}


def _connect(engine: Any, until: float) -> Any:
    """A connection, tried again while the server is full (its last clients are still ending)."""
    from elefast._base import sql as _sql

    while True:
        try:
            return engine.connect()
        except Exception as error:
            if not _sql.is_server_full(error) or time.monotonic() > until:
                raise
            time.sleep(0.2)


def drop_behind(url: str, names: Sequence[str], seconds: float = DROPPER_SECONDS) -> List[str]:
    """Drop ``names`` once nobody owns them (see the module docstring); return those dropped."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    from elefast._base import sql as _sql
    from elefast._server import ownership

    engine = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    started = time.monotonic()

    pending = list(dict.fromkeys(names))
    dropped: List[str] = []
    try:
        with _connect(engine, started + seconds / 3) as connection:
            while pending and time.monotonic() - started < seconds:
                state = _state(connection, pending)
                for name in list(pending):
                    if name not in state:  # gone already, or a create that has not committed yet
                        if time.monotonic() - started > APPEAR_SECONDS:
                            pending.remove(name)
                        continue
                    template = state[name]
                    if template is None:  # not marked as elefast's (yet): never dropped unmarked
                        if time.monotonic() - started > APPEAR_SECONDS:
                            pending.remove(name)
                        continue
                    key = ownership.owner_key(name)
                    if not connection.execute(text(_sql.ADVISORY_TRY_LOCK), {"key": key}).scalar():
                        continue  # its process has not ended yet
                    try:
                        if template:
                            connection.execute(text(_sql.unmark_template(name)))
                        ownership.drop(connection, name)
                        dropped.append(name)
                    except Exception:
                        pass  # the next sweep gets it
                    finally:
                        connection.execute(text(_sql.ADVISORY_UNLOCK), {"key": key})
                    pending.remove(name)
                if pending:
                    time.sleep(0.05)
    finally:
        engine.dispose()
    return dropped


def main() -> int:
    """The detached dropper's entry point: its URL and names come from its environment."""
    url = os.environ.pop(URL_VARIABLE, "")
    names = [name for name in os.environ.pop(NAMES_VARIABLE, "").split(",") if name]
    if not url or not names:
        return 2
    try:
        drop_behind(url, names)
    except Exception:
        return 1  # unreachable server and the like: the next sweep drops them
    return 0


if __name__ == "__main__":
    sys.exit(main())
