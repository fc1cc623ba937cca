"""Utility functions for working with Alembic.

Needs the ``alembic`` extra: ``pip install 'elefast[alembic]'``.

:class:`AlembicMigrator` runs ``upgrade head`` on each template elefast builds. It hands
elefast's connection to your migrations through ``config.attributes["connection"]``
(Alembic's "sharing a connection" recipe), and it also points ``sqlalchemy.url`` at the
template, so the ``env.py`` that ``alembic init`` writes works unchanged. An ``env.py``
that builds its URL from the app's own settings would migrate *another* database: after
every build elefast checks that the template's ``alembic_version`` is at the scripts'
heads, and raises :class:`~elefast.errors.MigrationError` naming ``env.py`` if not. The
branch to add to such an ``env.py``::

    def run_migrations_online():
        connection = config.attributes.get("connection")
        if connection is not None:          # elefast (or another caller) gave one
            context.configure(connection=connection, target_metadata=target_metadata)
            with context.begin_transaction():
                context.run_migrations()
            return
        ...  # your usual engine_from_config(...) code

The migrations run inside one transaction on that connection: a migration that opens a
second connection of its own does not see the tables the earlier ones made. For an async
project the same branch works unchanged: elefast runs the migrations through
``AsyncConnection.run_sync``, so ``env.py`` receives a plain sync ``Connection``.
"""

from __future__ import annotations

import hashlib
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, Optional, Set, Union

from sqlalchemy import Connection, text
from sqlalchemy.exc import OperationalError

from elefast._base import sql as _sql
from elefast._engines import aio as _aio
from elefast._engines.urls import safe_url, sync_url
from elefast._schema.imports import project_imports
from elefast._server.messages import first_line
from elefast.errors import ConfigurationError, MigrationError
from elefast.extras._alembic_support import is_package_location, logging_kept, package_folder
from elefast.extras._flask_migrate import flask_app_on
from elefast.extras.alembic_check import migration_differences  # re-exported: part of this extra
from elefast.migrators import CHAIN_STEP

if TYPE_CHECKING:  # a sync-only project may not have greenlet, which sqlalchemy.ext.asyncio needs
    from sqlalchemy.ext.asyncio import AsyncConnection

try:
    from alembic.config import Config
    from alembic.util.exc import CommandError

    from elefast.extras._alembic_env import upgrade_to_head
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "elefast.extras.alembic needs Alembic. Install it: pip install 'elefast[alembic]'"
    ) from error

__all__ = ["AlembicMigrator", "migration_differences"]

SHARING_BRANCH = """\
    connection = config.attributes.get("connection")
    if connection is not None:  # elefast gives the template's connection
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
        return"""

class AlembicMigrator:
    """Runs your migrations to create the testing database schema.

    Args:
        config_path: where the migrations are. One of: your ``alembic.ini``; a
            ``pyproject.toml`` / ``alembic.toml`` holding a ``[tool.alembic]``
            table; an ``alembic.config.Config`` you made; or the migrations
            folder itself (the one holding ``env.py``, as Flask-Migrate's
            ``migrations/``, whose ``alembic.ini`` has no ``script_location``); a
            ``package:folder`` script location; or an importable package holding
            ``env.py`` (``mlflow.store.db_migrations``). A relative ``script_location``
            that does not exist from the current directory is looked up next to
            the config file and then beside each folder above it (mlflow's is
            relative to site-packages), so tests run from anywhere.
        app: for Flask-Migrate: the Flask app, or a function that makes one (an app
            factory, called once). Its ``env.py`` runs unchanged inside the app's
            context, with Flask-SQLAlchemy's default engine standing in for the
            template being built (keyword only).

    The migrations run up to ``head`` on the connection elefast passes, inside
    one transaction; then elefast checks the template is at the scripts' heads
    (:meth:`verify`). Works for both :class:`~elefast.sync.DatabaseServer` and
    :class:`~elefast.asyncio.AsyncDatabaseServer`. Every Alembic error comes out
    as a :class:`~elefast.errors.MigrationError` with its cause and the fix.
    """

    _elefast_fingerprinted = ("config_path", "_given", "_location", "_app", "_factory", "_env_url")

    def __init__(self, config_path: Union[os.PathLike[str], str, Config], *, app: Any = None) -> None:
        self._given: Optional[Config] = None
        self._env_url: Optional[str] = None  # where the last run's env.py pointed sqlalchemy.url, if elsewhere
        self._location: Optional[str] = None
        self._app = app if app is not None and hasattr(app, "app_context") else None
        self._factory = app if app is not None and self._app is None else None
        if self._factory is not None and not callable(self._factory):
            raise ConfigurationError(f"app= must be a Flask app or a function returning one, not {app!r}.")
        if isinstance(config_path, Config):
            self._given = config_path
            self.config_path: Optional[Path] = (
                Path(config_path.config_file_name).resolve() if config_path.config_file_name else None)
            return
        path = Path(config_path)
        if path.is_dir():  # the migrations folder itself (env.py inside), maybe with its alembic.ini
            if not (path / "env.py").is_file():
                raise ConfigurationError(
                    f"{str(path)!r} is a folder without env.py. Pass your alembic.ini, or the migrations "
                    "folder that holds env.py (script_location)."
                )
            self._location = str(path.resolve())
            ini = path / "alembic.ini"
            self.config_path = ini.resolve() if ini.is_file() else None
            return
        if not path.is_file() and is_package_location(str(config_path)):
            self._location, self.config_path = str(config_path), None
            return
        package = None if path.exists() else package_folder(str(config_path))
        if package is not None:  # 'mlflow.store.db_migrations': an importable package holding env.py
            self._location = str(package)
            self.config_path = (package / "alembic.ini") if (package / "alembic.ini").is_file() else None
            return
        if not path.is_file():
            raise ConfigurationError(
                f"The Alembic config {str(path)!r} does not exist (looked from {os.getcwd()!r}). "
                "Pass the path of your alembic.ini (for example "
                "AlembicMigrator(Path(__file__).parent / 'alembic.ini')), the migrations folder, "
                "a 'package:folder' location, an importable package holding env.py, "
                "or an alembic.config.Config."
            )
        self.config_path = path.resolve()

    def __repr__(self) -> str:
        return f"AlembicMigrator({str(self._location or self.config_path or '<Config>')!r})"

    def config(self) -> Config:
        """The Alembic ``Config`` for a run: a new one per run, or the ``Config`` you gave."""
        if self._given is not None:
            return self._given
        if self.config_path is None:
            config = Config()
        elif self.config_path.suffix == ".toml":
            config = Config(toml_file=str(self.config_path))
        else:
            config = Config(str(self.config_path))
        if self._location is not None:
            config.set_main_option("script_location", self._location)
        location = config.get_main_option("script_location")
        if location and self.config_path and not Path(location).is_absolute() and not Path(location).exists():
            # beside the config, or (mlflow's, relative to site-packages) beside a folder it is in
            for folder in self.config_path.parents:
                if (folder / location / "env.py").is_file():
                    config.set_main_option("script_location", str(folder / location))
                    break
        return config

    def fingerprint(self) -> str:
        """A digest of the migration scripts (``env.py``, ``versions/``), the project modules they
        import (``from app.constants import ROLES`` in a data migration: not Python's or installed
        libraries'), and the config's script options.

        Templates are reused by later runs and other processes while it is unchanged.
        """
        with _as_migration_error(self):
            from alembic.script import ScriptDirectory

            config = self.config()
            script = ScriptDirectory.from_config(config)
        digest = hashlib.sha256()
        for option in ("script_location", "version_locations", "version_path_separator", "path_separator",
                       "version_table", "version_table_schema"):
            digest.update(f"{option}={config.get_main_option(option)}\n".encode())
        roots = [Path(script.dir)] + [Path(p) for p in (script.version_locations or [])]
        seen = set()
        for root in roots:
            for path in sorted(root.rglob("*")):
                if path.suffix not in (".py", ".sql") or "__pycache__" in path.parts or path in seen:
                    continue
                seen.add(path)
                digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
        scripts = {path.resolve() for path in seen if path.suffix == ".py"}
        for name, path in project_imports(sorted(scripts)).items():  # app.constants a revision imports
            if path not in scripts:
                digest.update(f"import {name}".encode() + b"\0" + path.read_bytes() + b"\0")
        return digest.hexdigest()

    def migrate(self, connection: Connection) -> None:
        """Upgrade the database behind ``connection`` to ``head``."""
        config = self.config()
        url = sync_url(connection.engine.url).render_as_string(hide_password=False)
        saved = _options(config, ("sqlalchemy.url",)), dict(config.attributes)
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))  # for an env.py of alembic init's
        config.attributes["connection"] = connection
        config.attributes["configure_logger"] = False
        seen: Dict[str, str] = {}
        steps_before = int(connection.info.get(CHAIN_STEP, 0))  # earlier ChainMigrator steps, uncommitted

        def upgrade() -> None:
            with logging_kept(), _as_migration_error(self, seen, steps_before), \
                    flask_app_on(self.flask_app(), url):
                upgrade_to_head(config, connection, self.env_py_path(), SHARING_BRANCH, seen, steps_before)

        try:
            if _aio.loop_running() and not env_py_shares_connection(self.env_py_path()):
                # an env.py that runs its own loop on sqlalchemy.url (alembic init -t async's asyncio.run)
                # cannot inside this one (the async server's run_sync): a thread of its own can
                _aio.in_a_thread(upgrade)
            else:
                upgrade()
        finally:
            after = config.get_main_option("sqlalchemy.url")  # env.py may have set its own
            self._env_url = None if after in (None, url) else safe_url(after)
            if config is self._given:  # leave the caller's Config as it was
                _restore(config, *saved)

    def verify(self, connection: Connection) -> None:
        """Raise :class:`~elefast.errors.MigrationError` unless the template is at the scripts' heads."""
        with _as_migration_error(self):
            from alembic.script import ScriptDirectory

            heads = set(ScriptDirectory.from_config(self.config()).get_heads())
        if not heads:
            return  # no revisions: nothing to be at
        found: Set[str] = set()
        tables = connection.execute(text(_sql.ALEMBIC_VERSION_TABLES)).all()
        for schema, table in tables:
            found |= set(connection.execute(text(_sql.select_versions(schema, table))).scalars())
        if found == heads:
            return
        env = self._env_py()
        if not tables:
            moved = self._env_url
            where = (f" ({env} set sqlalchemy.url to {moved}, the app's own database)" if moved else "")
            raise MigrationError(
                f"{self!r} ran 'upgrade head', but the template has no alembic_version table: the "
                f"migrations went to another database{where}. {env} must run them on the connection elefast "
                "gives it (or on sqlalchemy.url, which elefast points at the template); add this branch "
                f"at the top of run_migrations_online():\n\n{SHARING_BRANCH}\n"
            )
        raise MigrationError(
            f"{self!r} ran 'upgrade head', but the template is at {sorted(found)}, not at the scripts' "
            f"heads {sorted(heads)}. Check that {env} runs the migrations on the connection elefast gives "
            "it (config.attributes['connection']) and that none of them stops early."
        )

    async def migrate_async(self, connection: AsyncConnection) -> None:
        """Upgrade the database behind an async ``connection`` to ``head`` (via ``run_sync``)."""
        await connection.run_sync(self.migrate)

    def flask_app(self) -> Any:
        """The Flask app given as ``app=`` (made by its factory on first use), or None."""
        if self._app is None and self._factory is not None:
            self._app = self._factory()
            if not hasattr(self._app, "app_context"):
                raise ConfigurationError(f"app= factory {self._factory!r} returned {self._app!r}, not a Flask app.")
        return self._app

    def env_py_path(self) -> Optional[Path]:
        """The project's ``env.py``, or None when the config names no script directory that has one."""
        try:
            from alembic.script import ScriptDirectory

            path = Path(ScriptDirectory.from_config(self.config()).dir) / "env.py"
        except Exception:
            return None
        return path if path.is_file() else None

    def _env_py(self) -> str:
        path = self.env_py_path()
        return repr(str(path)) if path else "your env.py"


_READS_CONNECTION = re.compile(r"""attributes\s*(?:\.get\(\s*|\[\s*)["']connection["']""")


def env_py_shares_connection(path: Optional[Path]) -> bool:
    """Whether ``env.py`` reads the connection elefast hands it (``config.attributes["connection"]``).

    A reading of the source, for advice only (``init``, ``doctor``, error messages): the
    verification after each build is what decides.
    """
    if path is None:
        return True
    source = path.read_text(encoding="utf-8", errors="replace")
    return _READS_CONNECTION.search(source) is not None


def _options(config: Config, names: tuple) -> Dict[str, Optional[str]]:  # type: ignore[type-arg]
    return {name: config.get_main_option(name) for name in names}


def _restore(config: Config, options: Dict[str, Optional[str]], attributes: Dict[Any, Any]) -> None:
    for name, value in options.items():
        if value is None:
            config.remove_main_option(name)
        else:
            config.set_main_option(name, value.replace("%", "%%"))
    config.attributes.clear()
    config.attributes.update(attributes)


@contextmanager
def _as_migration_error(migrator: AlembicMigrator, seen: Optional[Dict[str, str]] = None,
                        steps_before: int = 0) -> Iterator[None]:
    """Alembic's own errors, and a failed connection from ``env.py``, as a MigrationError with the fix.

    A failed revision's error says which revision, its file and line, and the database's error,
    once; the note on env.py's own connection comes only when it applies: env.py ran the
    migrations on a connection of its own (``seen``) after earlier ChainMigrator steps whose
    uncommitted work that connection cannot see.
    """
    try:
        yield
    except MigrationError:
        raise
    except CommandError as error:
        cause = str(error).strip().rstrip(".")
        raise MigrationError(f"Alembic could not run {migrator!r}: {cause}. {_fix_for(cause)}") from error
    except Exception as error:
        revision = failed_revision(error)
        if revision is not None:
            hint = ""
            own = (seen or {}).get("own_connection_at")
            if own and steps_before and not (seen or {}).get("committed_before"):
                hint = (f" Note: {own}: env.py runs the migrations on a connection of its own, which cannot see "
                        f"what the {steps_before} ChainMigrator step(s) before it did in elefast's transaction "
                        f"(not committed yet). Make env.py use elefast's connection: add this branch at the top "
                        f"of run_migrations_online():\n\n{SHARING_BRANCH}\n")
            raise MigrationError(
                f"Alembic revision {revision} failed: {type(error).__name__}: {first_line(error)}.{hint}"
            ) from error
        if isinstance(error, ImportError):
            raise MigrationError(
                f"Alembic could not run {migrator!r}: {type(error).__name__}: {first_line(error)}. A module that "
                "env.py, a revision or the script location names cannot be imported from here: run the tests "
                f"from the project's root, or put its folder on sys.path (PYTHONPATH; now {os.getcwd()!r})."
            ) from error
        if isinstance(error, KeyError) and error.args in (("formatters",), ("loggers",), ("handlers",)):
            raise MigrationError(
                f"env.py's logging.config.fileConfig() found no [{error.args[0]}] section in "
                f"{migrator.config_path or 'the config'}: copy the [loggers], [handlers] and [formatters] "
                "sections alembic init writes into it, or drop the fileConfig() call from env.py."
            ) from error
        if isinstance(error, RuntimeError) and "application context" in str(error):
            raise MigrationError(
                f"env.py needs a Flask application context (Flask-Migrate's does): {first_line(error)}. "
                "Give the app: AlembicMigrator('migrations', app=create_app) (the app, or its factory)."
            ) from error
        if isinstance(error, OperationalError):
            raise MigrationError(
                f"env.py could not connect while migrating with {migrator!r}: {first_line(error)}. elefast "
                "hands env.py the template's connection (config.attributes['connection']) and points "
                "sqlalchemy.url at it; an env.py that builds its URL from the app's settings connects "
                f"elsewhere. Add this branch at the top of run_migrations_online():\n\n{SHARING_BRANCH}\n"
            ) from error
        raise


def _fix_for(message: str) -> str:
    if "script_location" in message:
        return ("Set script_location in the config, or pass the migrations folder itself: "
                "AlembicMigrator('migrations').")
    if "Path doesn't exist" in message or "No such file" in message:
        return ("The script_location is relative to the current directory: pass an absolute path, the "
                "migrations folder itself, or a 'package:folder' location.")
    return "Check the Alembic configuration named above."


def failed_revision(error: BaseException) -> Optional[str]:
    """Which migration ``error`` came from: ``'<revision> (<file>)'`` of the innermost script frame."""
    found = None
    traceback = error.__traceback__
    while traceback is not None:
        scope = traceback.tb_frame.f_globals
        if isinstance(scope.get("revision"), str) and "down_revision" in scope and callable(scope.get("upgrade")):
            found = (f"{scope['revision']} ({os.path.basename(str(scope.get('__file__', '?')))}, "
                     f"line {traceback.tb_lineno})")
        traceback = traceback.tb_next
    return found
