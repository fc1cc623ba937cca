"""Errors raised by elefast.

Every error elefast raises on purpose derives from :class:`ElefastError`, so a
suite can catch them all at once. Messages name the object involved and end
with how to fix the problem; they never contain a password.

::

    ElefastError
    ├── ConfigurationError        bad input: a URL, a prefix, a schema, a setting
    │   ├── InvalidURLError       not a PostgreSQL URL, or not parseable
    │   │   ├── WrongDriverKindError  a sync driver for the async API, or the other way round
    │   │   └── NotAURLError      neither an engine, a URL nor a str (also a TypeError)
    │   ├── DriverNotInstalledError  the URL's driver cannot be imported
    │   ├── InvalidPrefixError    a database name prefix with nothing safe in it
    │   ├── ServerNotConfiguredError  no server was given and none could be found
    │   ├── BinariesNotFoundError no PostgreSQL binaries for a throwaway local server
    │   ├── UnsafePathError       a directory or file of elefast's that another user owns or may write
    │   └── DockerUnavailableError  the docker extra is missing, or no daemon answers
    ├── DatabaseNotReadyError     the server did not answer within the timeout
    │   └── ServerFullError       it answered, but had no free connection (max_connections)
    ├── ServerRejectedError       the server answered but refused us (password, role, ...)
    ├── ServerLostError           the server went away during the run (killed, crashed, stopped)
    ├── LocalServerError          the throwaway local server could not be started
    ├── SandboxBusyError          an app engine waited too long for the test's shared connection
    ├── GuardError                a test's code connected to a database that is not the test's
    ├── SnapshotError             a snapshot was asked of a database that other sessions were using
    ├── DiskFullError             the throwaway server's data directory has no room for another clone
    └── MigrationError            the schema could not be applied to a template

Every class lives here, so each one pickles (pytest-xdist and stestr send errors
between processes) and reports ``elefast.errors`` as its module.
"""

from __future__ import annotations

__all__ = [
    "BinariesNotFoundError",
    "ConfigurationError",
    "DatabaseNotReadyError",
    "DiskFullError",
    "DockerUnavailableError",
    "DriverNotInstalledError",
    "ElefastError",
    "GuardError",
    "InvalidPrefixError",
    "InvalidURLError",
    "LocalServerError",
    "MigrationError",
    "NotAURLError",
    "SandboxBusyError",
    "ServerFullError",
    "ServerLostError",
    "ServerNotConfiguredError",
    "ServerRejectedError",
    "SnapshotError",
    "UnsafePathError",
    "WrongDriverKindError",
]


class ElefastError(Exception):
    """The base class of every error elefast raises on purpose."""

    __module__ = "elefast.errors"


class ConfigurationError(ElefastError, ValueError):
    """Something elefast was given cannot work; the message says what to change."""

    __module__ = "elefast.errors"


class InvalidURLError(ConfigurationError):
    """A database URL that cannot be parsed or does not point at PostgreSQL."""

    __module__ = "elefast.errors"


class NotAURLError(InvalidURLError, TypeError):
    """Given something that is neither an engine, a ``URL`` nor a ``str``; also a ``TypeError``, as upstream raises."""

    __module__ = "elefast.errors"


class WrongDriverKindError(InvalidURLError):
    """A sync driver given to the async API (``AsyncDatabaseServer``), or the other way round."""

    __module__ = "elefast.errors"


class DriverNotInstalledError(ConfigurationError, ImportError):
    """The URL names a driver that is not installed; the message has the pip line."""

    __module__ = "elefast.errors"


class InvalidPrefixError(ConfigurationError):
    """A database name prefix with characters that are unsafe in a database name."""

    __module__ = "elefast.errors"


class ServerNotConfiguredError(ConfigurationError):
    """No PostgreSQL server was configured and none could be found."""

    __module__ = "elefast.errors"


class BinariesNotFoundError(ConfigurationError):
    """No directory with PostgreSQL's ``initdb`` and ``postgres`` was found."""

    __module__ = "elefast.errors"


class UnsafePathError(ConfigurationError):
    """A directory or file elefast would use belongs to another user, or others may write to it."""

    __module__ = "elefast.errors"


class DockerUnavailableError(ConfigurationError):
    """The docker extra is not installed, or no Docker daemon answers.

    Raised by :func:`elefast.extras.docker.postgres` and by the Docker way of
    :func:`elefast.provision.resolve` instead of the Docker SDK's own ``DockerException``;
    the message says how to start Docker or which other server to use.
    """

    __module__ = "elefast.errors"


class DatabaseNotReadyError(ElefastError):
    """The server could not be reached before the timeout ran out."""

    __module__ = "elefast.errors"


class ServerFullError(DatabaseNotReadyError):
    """The server answered but had no free connection slot (``too many clients already``).

    The message gives the server's numbers when elefast could still read them, what one
    test process of elefast holds, and the fix: fewer workers, or a higher ``max_connections``.
    """

    __module__ = "elefast.errors"


class ServerRejectedError(ElefastError):
    """The server answered and refused: wrong password, unknown role or database, no permission.

    Retrying cannot help, so elefast raises this at once instead of waiting
    for a readiness timeout.
    """

    __module__ = "elefast.errors"


class ServerLostError(ElefastError):
    """The server stopped answering during the run: it was stopped, killed or crashed.

    The message says which server and, for the throwaway local server, where its log is.
    """

    __module__ = "elefast.errors"


class LocalServerError(ElefastError):
    """The throwaway local server could not be started; the message quotes its log."""

    __module__ = "elefast.errors"


class MigrationError(ElefastError):
    """Applying the schema to a template database failed; nothing was left behind."""

    __module__ = "elefast.errors"


class SandboxBusyError(ElefastError):
    """In transaction mode, an app engine waited too long for its turn on the test's one connection."""

    __module__ = "elefast.errors"


class GuardError(ElefastError):
    """With the guard on, code under test connected somewhere other than the test's database.

    The message names the engine's URL (password hidden) and the fix: add the engine to
    ``app_engines``.
    """

    __module__ = "elefast.errors"


class SnapshotError(ElefastError):
    """``snapshot()`` found other sessions on the database: PostgreSQL copies only an idle database.

    The message lists them (application, state, last statement) and the fix: close them first.
    """

    __module__ = "elefast.errors"


class DiskFullError(ElefastError):
    """The throwaway local server's data directory has no room left for another database.

    Raised instead of PostgreSQL's ``could not write ... No space left on device``; the message
    gives the directory, its free space and what to do (old templates elefast could drop were
    dropped first).
    """

    __module__ = "elefast.errors"
