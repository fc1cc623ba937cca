"""Database URLs: what users pass (a string or a ``URL``) parsed, given a driver, checked.

Shared by the sync and async halves: URL parsing and the default drivers, driver
checks with the install line, and URLs rendered with their password hidden.
"""

from __future__ import annotations

from typing import Union

from sqlalchemy import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from elefast.errors import DriverNotInstalledError, InvalidURLError, NotAURLError, WrongDriverKindError

#: Driver used for a bare ``postgresql://`` URL by the sync classes.
DEFAULT_SYNC_DRIVER = "psycopg"
#: Driver used for a bare ``postgresql://`` URL by the async classes.
DEFAULT_ASYNC_DRIVER = "asyncpg"

#: How to install each driver, for error messages.
_INSTALL_HINTS = {
    "psycopg": "pip install 'psycopg[binary]'",
    "asyncpg": "pip install 'elefast[asyncpg]'",
    "psycopg2": "pip install psycopg2-binary",
    "pg8000": "pip install pg8000",
    "psycopg_async": "pip install 'psycopg[binary]'",
}


def safe_url(url: Union[URL, str]) -> str:
    """Render ``url`` for humans with its password replaced by ``***``."""
    if isinstance(url, str):
        try:
            url = make_url(url)
        except Exception:
            return "<unparseable URL>"
    return url.render_as_string(hide_password=True)


def parse_url(value: Union[URL, str], *, is_async: bool, swap_kind: bool = False) -> URL:
    """Parse ``value`` into a PostgreSQL ``URL`` with an installed driver of the right kind.

    A bare ``postgresql://`` (or ``postgres://``) gets the default driver:
    psycopg for sync, asyncpg for async. Raises :class:`InvalidURLError` for
    anything that is not PostgreSQL or not parseable, and
    :class:`DriverNotInstalledError` with the pip line when the driver is missing.
    With ``swap_kind``, a driver of the wrong kind (asyncpg for sync code, say)
    is replaced by the default one, so one URL serves sync and async tests.
    """
    if isinstance(value, str):
        try:
            url = make_url(value)
        except (ArgumentError, ValueError) as error:  # ValueError: a port that is not a number
            why = "its port is not a number" if isinstance(error, ValueError) else "it is not a URL"
            raise InvalidURLError(
                f"Could not parse the database URL ({why}; the URL is not shown, it may hold a password). "
                "Use the form postgresql://user:password@host:5432/postgres."
            ) from None
    elif isinstance(value, URL):
        url = value
    else:
        raise NotAURLError(
            f"Expected a database URL (str or sqlalchemy.URL) or an engine, got {type(value).__name__}."
        )
    backend, _, driver = url.drivername.partition("+")
    if backend == "postgres":
        backend = "postgresql"
    if backend != "postgresql":
        raise InvalidURLError(
            f"elefast needs a PostgreSQL server, but {safe_url(url)} is for {backend!r}. "
            "Use a URL that starts with postgresql://."
        )
    if not driver:
        driver = DEFAULT_ASYNC_DRIVER if is_async else DEFAULT_SYNC_DRIVER
    url = url.set(drivername=f"postgresql+{driver}")
    try:
        check_driver(url, is_async=is_async)
    except WrongDriverKindError:
        if not swap_kind:
            raise
        default = DEFAULT_ASYNC_DRIVER if is_async else DEFAULT_SYNC_DRIVER
        url = url.set(drivername=f"postgresql+{default}")
        check_driver(url, is_async=is_async)
    return url


def check_driver(url: URL, *, is_async: bool) -> None:
    """Raise a clear error if ``url``'s driver is unknown, missing, or of the wrong kind."""
    driver = url.get_driver_name()
    try:
        dialect_cls = url.get_dialect(_is_async=is_async) if is_async else url.get_dialect()
    except NoSuchModuleError:
        raise InvalidURLError(
            f"Unknown PostgreSQL driver {driver!r} in {safe_url(url)}. "
            f"Use postgresql+{DEFAULT_SYNC_DRIVER}:// (sync) or postgresql+{DEFAULT_ASYNC_DRIVER}:// (async)."
        ) from None
    if bool(getattr(dialect_cls, "is_async", False)) != is_async:
        if is_async:
            raise WrongDriverKindError(
                f"{driver!r} is a sync driver, but the async API (AsyncDatabaseServer) needs an "
                f"async one. Use postgresql+{DEFAULT_ASYNC_DRIVER}://, or DatabaseServer for sync code."
            )
        raise WrongDriverKindError(
            f"{driver!r} is an async driver, but the sync API (DatabaseServer) needs a sync one. "
            f"Use postgresql+{DEFAULT_SYNC_DRIVER}://, or AsyncDatabaseServer for async code."
        )
    try:
        dialect_cls.import_dbapi()
    except ImportError as error:
        hint = _INSTALL_HINTS.get(driver, f"pip install {driver}")
        raise DriverNotInstalledError(
            f"The PostgreSQL driver {driver!r} is not installed ({error}). Install it: {hint}"
        ) from None



_PORTABLE_QUERY = ("host", "port", "sslmode", "sslrootcert", "sslcert", "sslkey", "application_name", "options")


def sync_url(url: URL) -> URL:
    """``url`` with the default sync driver, keeping only query options every driver understands."""
    query = {k: v for k, v in url.query.items() if k in _PORTABLE_QUERY}
    return url.set(drivername=f"postgresql+{DEFAULT_SYNC_DRIVER}", query=query)
