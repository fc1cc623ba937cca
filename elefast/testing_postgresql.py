"""testing.postgresql's API on elefast: change the import line, keep the tests.

A suite written for ``testing.postgresql`` starts a whole PostgreSQL server for every
``Postgresql()`` (about a second each). Here each ``Postgresql()`` is a fresh database cloned
from elefast's pool on its one server (``ELEFAST_DATABASE_URL``, else the throwaway local
server, else Docker: :func:`elefast.provision.resolve`), owned by the process and swept
after a kill like every database elefast makes. The port is the import line::

    import testing.postgresql                          # before
    from elefast.testing_postgresql import testing     # after: testing.postgresql.X still works

    from testing.postgresql import PostgresqlFactory          # before
    from elefast.testing_postgresql import PostgresqlFactory  # after

``PostgresqlFactory(cache_initialized_db=True, on_initialized=handler)`` runs ``handler`` once,
on a template database, and every instance is a clone of it. The template is named by the
handler's code (as a migrator's helpers are, see :mod:`elefast._schema.fingerprints`) and by
the files it names: it is kept across runs and rebuilt when either changes.

Arguments that configure a server of one's own (``port``, ``base_dir``, ``copy_data_from``,
``initdb``, ``postgres``, ``pid``, other ``initdb_args`` and ``postgres_args``) are refused
with one line saying what to do, except those the shared server can honour per database:
``postgres_args`` ``-c name=value`` for settings a database may carry (``timezone``,
``work_mem``...; or settings the server already has) and ``initdb_args`` ``-E``/``--encoding``.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import sys
import threading
import types
import unittest
import warnings
from typing import Any, Callable, Dict, Optional, Union

from sqlalchemy import URL, Connection, make_url, text
from sqlalchemy.orm import sessionmaker

from elefast import provision as _provision
from elefast._base import sql as _sql
from elefast._schema import fingerprints as _fingerprints
from elefast._server.core import core_of
from elefast._testing.provider import SHARED, SyncProvider
from elefast.errors import ConfigurationError
from elefast.sync import Database, DatabaseServer

__all__ = ["Postgresql", "PostgresqlFactory", "skipIfNotFound", "skipIfNotInstalled", "testing"]

#: The prefix of the databases ``Postgresql()`` makes (``python -m elefast sweep`` knows them as elefast's).
PREFIX = "testing_postgresql"
_DEFAULT_INITDB_ARGS = "-U postgres -A trust"
_DEFAULT_POSTGRES_ARGS = "-h 127.0.0.1 -F -c logging_collector=off"
#: testing.postgresql's defaults; the values below are those that need no server of one's own.
DEFAULT_SETTINGS: Dict[str, Any] = dict(
    auto_start=2, base_dir=None, initdb=None, initdb_args=_DEFAULT_INITDB_ARGS, postgres=None,
    postgres_args=_DEFAULT_POSTGRES_ARGS, pid=None, port=None, copy_data_from=None,
)
_FIXES = {
    "port": "drop port=; the shared server's port is in dsn()['port'] and url()",
    "base_dir": "drop base_dir=; there is no data directory of the test's own (each instance is a database)",
    "copy_data_from": "use PostgresqlFactory(cache_initialized_db=True, on_initialized=handler) to start "
                      "every instance from prepared data",
    "initdb": "drop initdb=; to pick binaries, export ELEFAST_POSTGRES_BINDIR=/path/to/bin",
    "postgres": "drop postgres=; to pick binaries, export ELEFAST_POSTGRES_BINDIR=/path/to/bin",
    "pid": "drop pid=",
}
_LOCK = threading.RLock()
_RESOLVED: Dict[str, Union[str, URL]] = {}


def _refuse(name: str, value: Any, fix: str) -> ConfigurationError:
    return ConfigurationError(f"Postgresql({name}={value!r}) needs a server of its own, which elefast "
                              f"does not start per test: {fix}.")


class _Settings:
    """The arguments checked once: what each instance does with them (settings, encoding)."""

    def __init__(self, given: Dict[str, Any], defaults: Optional[Dict[str, Any]] = None) -> None:
        settings = {**(DEFAULT_SETTINGS if defaults is None else defaults), **given}
        unknown = sorted(set(settings) - set(DEFAULT_SETTINGS) - {"boot_timeout"})
        if unknown:  # testing.postgresql kept them and did nothing: say so, do not fail a working suite
            warnings.warn(f"Postgresql(): {', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not "
                          "testing.postgresql settings and change nothing; remove them.", stacklevel=4)
        for name, fix in _FIXES.items():
            if settings.get(name) is not None:
                raise _refuse(name, settings[name], fix)
        self.timeout = float(settings.get("boot_timeout") or 60)
        self.encoding = _encoding(settings.get("initdb_args", _DEFAULT_INITDB_ARGS))
        self.options = _options(settings.get("postgres_args", _DEFAULT_POSTGRES_ARGS))
        self.auto_start = int(settings.get("auto_start", 2))


def _encoding(initdb_args: str) -> str:
    """The encoding ``initdb_args`` ask for; refuses anything else but testing.postgresql's defaults."""
    words, encoding = shlex.split(initdb_args or ""), "utf8"
    while words:
        word = words.pop(0)
        if word in ("-U", "--username", "-A", "--auth") and words and words[0] in ("postgres", "trust"):
            words.pop(0)
        elif word.startswith(("-E=", "--encoding=")):
            encoding = word.split("=", 1)[1]
        elif word in ("-E", "--encoding") and words:
            encoding = words.pop(0)
        elif word in ("-Upostgres", "-Atrust", "--username=postgres", "--auth=trust", "--no-sync", "-N"):
            pass
        else:
            raise _refuse("initdb_args", initdb_args, f"only -E/--encoding is honoured (per database); drop "
                          f"{word!r}, or set it on a server of yours and export ELEFAST_DATABASE_URL")
    return _sql.validate_encoding(encoding.lower().replace("-", ""))


def _options(postgres_args: str) -> Dict[str, str]:
    """The ``-c name=value`` settings of ``postgres_args`` (testing.postgresql's defaults aside)."""
    words, found = shlex.split(postgres_args or ""), {}
    while words:
        word = words.pop(0)
        if word == "-h" and words:
            words.pop(0)  # where the postmaster listens: the shared server's business
        elif word == "-F":
            pass  # fsync off: the throwaway server runs so already
        elif word == "-c" and words and "=" in words[0]:
            name, value = words.pop(0).split("=", 1)
            found[name.strip().lower()] = value
        elif word.startswith("--") and "=" in word:
            name, value = word[2:].split("=", 1)
            found[name.strip().lower().replace("-", "_")] = value
        else:
            raise _refuse("postgres_args", postgres_args, f"only -c name=value is honoured (per database); "
                          f"drop {word!r}")
    found.pop("logging_collector", None)
    return found


def _server_url(timeout: float) -> Union[str, URL]:
    """The server every instance lives on, resolved once per process (as the mixins do)."""
    with _LOCK:
        if "url" not in _RESOLVED:
            _RESOLVED["url"] = _provision.resolve(timeout=timeout)
        return _RESOLVED["url"]


def _server(schema: Any, timeout: float) -> DatabaseServer:
    """The process's server object for ``schema`` (one pool and template per handler's identity), shared
    with the test cases' (:data:`~elefast._testing.provider.SHARED`)."""
    url = _server_url(timeout)
    return SHARED.sync_server(url if isinstance(url, URL) else make_url(url), schema, timeout)


def _public_url(url: URL) -> URL:
    """``url`` as drivers of every kind take it: libpq's scheme, TCP (with the local server's password)."""
    from elefast.provision.local import tcp_url

    return (tcp_url(url) or url).set(drivername="postgresql")


def _apply(database: Database, options: Dict[str, str]) -> None:
    """Give the clone ``options``: per database where PostgreSQL allows, else only if the server has them."""
    if not options:
        return
    with core_of(database.server).connect() as connection:
        for name, value in options.items():
            row = connection.execute(text("SELECT setting, unit, context FROM pg_settings WHERE lower(name) = :n"),
                                     {"n": name}).first()
            if row is None:
                raise _refuse("postgres_args", f"-c {name}={value}", f"PostgreSQL has no setting {name!r}")
            if row.context in ("user", "superuser"):
                connection.execute(text(f'ALTER DATABASE "{database.name}" SET "{name}" TO {_literal(value)}'))
            elif not _same(connection, name, value):
                raise _refuse("postgres_args", f"-c {name}={value}", f"{name} is server-wide ({row.context}); "
                              "set it on a server of yours and export ELEFAST_DATABASE_URL, or drop it")


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _same(connection: Connection, name: str, value: str) -> bool:
    """Whether the server already runs with ``name = value`` (``fsync=off`` on the throwaway server)."""
    mine = connection.execute(text("SELECT current_setting(:n)"), {"n": name}).scalar()
    aliases = {"on": {"on", "true", "yes", "1"}, "off": {"off", "false", "no", "0"}}
    wanted = value.strip().lower()
    return str(mine).lower() == wanted or wanted in aliases.get(str(mine).lower(), set())


class Postgresql:
    """A fresh database on elefast's server, with testing.postgresql's ``Postgresql`` interface.

    ``Postgresql()`` takes a fresh clone from the pool (an empty database; a factory's: its
    template); :meth:`stop` (or leaving the ``with`` block, or garbage collection) hands it back
    to be dropped in the background. The
    arguments are testing.postgresql's: see the module's docstring for those that need a
    server of one's own. ``boot_timeout`` bounds how long reaching the server may take.
    """

    #: testing.postgresql's defaults (a suite may replace them, as with testing.postgresql; they are checked).
    DEFAULT_SETTINGS: Dict[str, Any] = dict(DEFAULT_SETTINGS)

    def __init__(self, **settings: Any) -> None:
        server = settings.pop("_elefast_server", None)
        checked = settings.pop("_elefast_settings", None) or _Settings(settings, self.DEFAULT_SETTINGS)
        self.settings: Dict[str, Any] = {**self.DEFAULT_SETTINGS, **settings}
        self._checked = checked
        self._server: Optional[DatabaseServer] = server
        self._database: Optional[Database] = None
        self._url: Optional[URL] = None
        if checked.auto_start:
            self.start()

    @classmethod
    def _on(cls, url: URL) -> Postgresql:
        """An instance on an existing database (the template a factory's handler fills)."""
        instance = cls.__new__(cls)
        instance._checked, instance._server, instance._database = _Settings({}, DEFAULT_SETTINGS), None, None
        instance._url = url
        instance.settings = {**DEFAULT_SETTINGS, "port": url.port or 5432}
        return instance

    def __repr__(self) -> str:
        shown = _public_url(self._url).render_as_string(hide_password=True) if self._url else "not started"
        return f"Postgresql({shown})"

    def start(self) -> None:
        """Take the database (done by the constructor unless ``auto_start=0``); harmless when started."""
        if self._url is not None:
            return
        server = self._server or _server(None, self._checked.timeout)
        self._server = server
        provider, prefix, encoding = SyncProvider(server), _sql.safe_prefix(PREFIX), self._checked.encoding
        # from the pool, kept ahead from now on; stop() hands it back, dropped in the background
        database = provider.database(provider.template(prefix, encoding), prefix, encoding, sessionmaker)
        try:
            _apply(database, self._checked.options)
        except BaseException:
            database.drop()
            raise
        self._database = database
        self._url = database.url
        self.settings["port"] = self._url.port or 5432

    def setup(self) -> None:
        """Nothing to prepare: there is no data directory (kept for testing.postgresql's callers)."""

    def is_alive(self) -> bool:
        """Whether the database is there (started and not stopped)."""
        return self._url is not None

    def dsn(self, **kwargs: Any) -> Dict[str, Any]:
        """testing.postgresql's connection keywords: ``host``, ``port``, ``user``, ``database``;
        ``kwargs`` override them (``dsn(database='postgres')``).

        On the throwaway local server ``host`` is its socket directory (psycopg2, psycopg and asyncpg
        take it; pg8000 wants :meth:`url`); a password is added only when ``ELEFAST_DATABASE_URL`` has one.
        """
        url = self._started()
        params: Dict[str, Any] = dict(kwargs)
        params.setdefault("port", url.port or 5432)
        params.setdefault("host", url.host or url.query.get("host") or "127.0.0.1")
        params.setdefault("user", url.username or "postgres")
        params.setdefault("database", url.database)
        if url.password and "password" not in params:
            params["password"] = url.password
        return params

    def url(self, **kwargs: Any) -> str:
        """``postgresql://user@host:port/database``: SQLAlchemy, psycopg2, psycopg, asyncpg and libpq take it.

        ``kwargs`` override parts as for :meth:`dsn`.
        """
        url = _public_url(self._started())
        url = url.set(host=kwargs.get("host", url.host), port=int(kwargs.get("port", url.port or 5432)),
                      username=kwargs.get("user", url.username), database=kwargs.get("database", url.database))
        return url.render_as_string(hide_password=False)

    def stop(self, *args: Any) -> None:
        """Hand the database back: it is dropped in the background, connections still open to it
        ended (as testing.postgresql's stopped server ended them); calling it again is harmless."""
        database, self._database, self._url = self._database, None, None
        if database is not None:
            database.drop()

    terminate = stop

    def cleanup(self) -> None:
        """Nothing is left to clean once :meth:`stop` returned (kept for testing.postgresql's callers)."""

    def __enter__(self) -> Postgresql:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def __del__(self) -> None:
        try:
            self.stop()
        except Exception:  # interpreter shutdown: the process's exit hook drops what is left
            pass

    def _started(self) -> URL:
        if self._url is None:
            raise ConfigurationError("This Postgresql is not started (auto_start=0, or stop() was called): "
                                     "call start() first.")
        return self._url


class _Initializer:
    """The migrator behind a factory's ``on_initialized``: the handler fills the template being built."""

    _elefast_fingerprinted = ("handler",)

    def __init__(self, handler: Callable[[Postgresql], Any]) -> None:
        self.handler = handler

    def __repr__(self) -> str:
        return f"on_initialized={getattr(self.handler, '__qualname__', self.handler)!r}"

    def fingerprint(self) -> Optional[str]:
        """The handler's code, the plain values and project functions it uses, the files it names."""
        return _fingerprints.callable_identity(self.handler, "on_initialized")

    def migrate(self, connection: Connection) -> None:
        """Run the handler on the template (it connects on its own), then end its leftover sessions."""
        self.handler(Postgresql._on(connection.engine.url))
        connection.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE datname = current_database() AND pid <> pg_backend_pid()"))


class PostgresqlFactory:
    """testing.postgresql's factory: ``factory()`` returns a new :class:`Postgresql`.

    ``cache_initialized_db=True`` with ``on_initialized=handler`` runs ``handler(postgresql)``
    here, once, on a template database (its ``dsn()`` and ``url()`` point there); every
    instance is then a clone of it. Runs after the first reuse the template while the handler
    (its code, the values and project functions it uses, the files it names) is unchanged.
    Without ``cache_initialized_db`` the handler is not run, as in testing.postgresql. The
    other arguments are :class:`Postgresql`'s, checked here.
    """

    target_class = Postgresql

    def __init__(self, **kwargs: Any) -> None:
        self.settings: Dict[str, Any] = dict(kwargs)
        handler = self.settings.pop("on_initialized", None)
        cached = bool(self.settings.pop("cache_initialized_db", None))
        self._checked = _Settings(self.settings, self.target_class.DEFAULT_SETTINGS)
        self._server: Optional[DatabaseServer] = None
        if cached and handler is not None:
            self._server = _server(_Initializer(handler), self._checked.timeout)
            SyncProvider(self._server).template(PREFIX, self._checked.encoding)  # the handler runs now

    def __call__(self) -> Postgresql:
        return self.target_class(_elefast_server=self._server, _elefast_settings=self._checked, **self.settings)

    def clear_cache(self) -> None:
        """Forget the handler's template: later instances are empty databases, as in testing.postgresql.

        The template stays on the server for the next run (elefast drops old ones itself).
        """
        self._server = None


class _SkipIfNotFound:
    """``@skipIfNotFound``: skip when elefast can find no server (no URL, no binaries, no Docker extra)."""

    def __call__(self, arg: Any = None) -> Any:
        def decorate(function: Any, path: Optional[str] = None) -> Any:
            missing = not os.path.exists(path) if path else not _server_available()
            return unittest.skipIf(missing, "PostgreSQL not found")(function)

        if callable(arg):
            return decorate(arg)
        return lambda function: decorate(function, arg)


def _server_available() -> bool:
    if os.environ.get(_provision.ENV_URL, "").strip():
        return True
    from elefast.provision.binaries import find_binaries

    try:
        find_binaries()
        return True
    except Exception:
        return importlib.util.find_spec("docker") is not None


skipIfNotFound = skipIfNotInstalled = _SkipIfNotFound()
"""Skip a test (or class) when no PostgreSQL server can be had; with a path, when it does not exist."""

testing = types.SimpleNamespace(postgresql=sys.modules[__name__])
"""``from elefast.testing_postgresql import testing`` keeps ``testing.postgresql.Postgresql`` working."""

_provision.prestart()  # the suite imports this to use a server: start the local one while it imports the rest
