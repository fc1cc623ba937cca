"""Telling what happened when the server goes away in the middle of a run.

A test that loses its server fails with the driver's terse "connection refused" or
"server closed the connection unexpectedly". :func:`explain_lost` looks at the
server the run was using and, if it is really gone, says so in plain words: which
server, what elefast knows about how it ended, and what the next run will do.
"""

from __future__ import annotations

import socket
from typing import Any, Dict, Optional

from sqlalchemy import URL

__all__ = ["explain_lost"]


def _local_state_for(url: URL) -> Optional[Dict[str, Any]]:
    """The state of the throwaway local server ``url`` points at, if it is that server."""
    from elefast.provision import local

    state = local._CACHED.get("state")
    if not state or "port" not in state:
        return None
    host = str(url.query.get("host") or url.host or "")
    if url.port == int(state["port"]) and host in (str(state.get("socket_dir")), "127.0.0.1", "localhost"):
        return dict(state)
    return None


def _answers(url: URL, timeout: float = 2.0) -> bool:
    """Whether anything accepts connections where ``url`` points (a unix socket or host:port)."""
    host = str(url.query.get("host") or url.host or "localhost")
    port = url.port or 5432
    try:
        if host.startswith("/"):
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(timeout)
                sock.connect(f"{host}/.s.PGSQL.{port}")
        else:
            socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def explain_lost(url: URL) -> Optional[str]:
    """A message saying the server at ``url`` went away, or None if it still answers."""
    from elefast.provision import local

    state = _local_state_for(url)
    if state is not None:
        if local._alive(state) and _answers(url):
            return None
        layout = local._CACHED.get("layout")
        where = f" Its log: {layout.log}." if layout is not None else ""
        return (
            f"The throwaway local PostgreSQL server (postgres pid {state.get('postgres_pid')}, port "
            f"{state.get('port')}) stopped during the run: it was killed, crashed or stopped "
            f"(`python -m elefast server stop`).{where} The tests that were using it cannot go on; "
            "the next run starts a fresh server."
        )
    if _answers(url):
        return None
    shown = url.render_as_string(hide_password=True)
    return (
        f"The PostgreSQL server at {shown} stopped answering during the run (nothing accepts "
        "connections there any more): it was stopped, restarted or crashed. Start it again and "
        "rerun the tests."
    )
