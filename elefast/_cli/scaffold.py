"""``python -m elefast init``: write a base test module for the project in the current directory.

It looks for what the project already has (an ``alembic.ini``, else a SQLAlchemy
``MetaData`` or declarative base in its source) and which drivers are installed, then
writes one module with ``DatabaseTestCase`` (and ``AsyncDatabaseTestCase`` when asyncpg is
installed) that the project's tests subclass. On a terminal it asks before writing; piped
or in CI it asks nothing and uses what it found.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple

__all__ = ["Project", "describe", "detect", "render", "write_base_module"]

SKIPPED_DIRS = {".git", ".hg", ".venv", "venv", "env", ".tox", ".nox", "node_modules", "build", "dist",
                "__pycache__", "site-packages", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
_DECLARATIVE = re.compile(r"^class\s+(\w+)\s*\(\s*(?:\w+\.)?DeclarativeBase\s*\)", re.M)
_DECLARATIVE_CALL = re.compile(r"^(\w+)\s*=\s*(?:\w+\.)?declarative_base\(", re.M)
_METADATA = re.compile(r"^(\w+)\s*=\s*(?:\w+\.)?MetaData\(", re.M)
#: An engine (or Flask-SQLAlchemy's db) the app builds when its module is imported.
_APP_ENGINE = re.compile(
    r"^(\w+)\s*(?::[^=\n]+)?=\s*(?:\w+\.)?(?:create_engine|create_async_engine|SQLAlchemy)\(", re.M)
#: The fixtures ``init --pytest`` writes (upstream elefast's names).
PYTEST_FIXTURES = ("db_server", "db", "db_connection", "db_session")
_FIXTURE_DEF = re.compile(r"^(?:async\s+)?def\s+(" + "|".join(PYTEST_FIXTURES) + r")\s*\(", re.M)


@dataclass
class Project:
    """What ``init`` found in a project directory."""

    root: Path
    alembic_ini: Optional[Path] = None
    metadata_module: Optional[str] = None  # e.g. "myapp.models"
    metadata_expression: Optional[str] = None  # e.g. "Base.metadata"
    has_psycopg: bool = False
    has_asyncpg: bool = False
    app_engines: List[str] = field(default_factory=list)  # "module:name" of engines built at import time
    fixture_clashes: List[str] = field(default_factory=list)  # "tests/conftest.py: db" already defined


def _python_files(root: Path) -> Iterator[Path]:
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if d not in SKIPPED_DIRS and not d.startswith("."))
        for name in sorted(files):
            if name.endswith(".py"):
                yield Path(directory) / name


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _find_metadata(root: Path) -> Optional[Tuple[str, str]]:
    """(module, expression) of the first declarative base or MetaData, tests last."""
    found = []
    for path in _python_files(root):
        try:
            source = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        match = _DECLARATIVE.search(source) or _DECLARATIVE_CALL.search(source)
        expression = f"{match.group(1)}.metadata" if match else None
        if expression is None:
            plain = _METADATA.search(source)
            expression = plain.group(1) if plain else None
        if expression is not None:
            in_tests = any(part.startswith("test") for part in path.relative_to(root).parts)
            found.append((in_tests, len(path.relative_to(root).parts), _module_name(root, path), expression))
    if not found:
        return None
    _, _, module, expression = sorted(found)[0]
    return module, expression


def _scan_engines_and_fixtures(root: Path) -> Tuple[List[str], List[str]]:
    """Engines the app builds at import (outside tests), and conftest.py fixtures named as ours."""
    engines, clashes = [], []
    for path in _python_files(root):
        try:
            source = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        relative = path.relative_to(root)
        if path.name == "conftest.py":
            clashes += [f"{relative}: {name}" for name in _FIXTURE_DEF.findall(source)]
        elif not any(part.startswith("test") for part in relative.parts):
            engines += [f"{_module_name(root, path)}:{name}" for name in _APP_ENGINE.findall(source)]
    return engines, clashes


def detect(root: Path) -> Project:
    """Look at ``root``: Alembic config, a MetaData to build from, installed drivers."""
    project = Project(root=root)
    ini = root / "alembic.ini"
    if ini.is_file():
        project.alembic_ini = ini
    else:
        found = _find_metadata(root)
        if found is not None:
            project.metadata_module, project.metadata_expression = found
    project.app_engines, project.fixture_clashes = _scan_engines_and_fixtures(root)
    project.has_psycopg = importlib.util.find_spec("psycopg") is not None
    project.has_asyncpg = importlib.util.find_spec("asyncpg") is not None
    return project


def _schema(project: Project, target: Path) -> Tuple[List[str], List[str]]:
    """(import lines, lines defining SCHEMA) for the module written at ``target``."""
    if project.alembic_ini is not None:
        relative = Path(os.path.relpath(project.alembic_ini, target.parent))
        climb = sum(1 for part in relative.parts if part == "..")
        rest = "/".join(part for part in relative.parts if part != "..")
        anchor = "Path(__file__).resolve().parent" + ".parent" * climb
        return (["from elefast.extras.alembic import AlembicMigrator"], [
            "# The project's own migrations (and their seed data), built once into a template.",
            f'SCHEMA = AlembicMigrator({anchor} / "{rest}")',
        ])
    if project.metadata_module is not None and project.metadata_expression is not None:
        name = project.metadata_expression.split(".")[0]
        return ([f"from {project.metadata_module} import {name}"], [
            "# The tables of the project's models (create_all), built once into a template.",
            f"SCHEMA = MetadataMigrator({project.metadata_expression})",
        ])
    return ([], [
        "# No alembic.ini and no MetaData found: tests start with an empty database.",
        "# Set SCHEMA = MetadataMigrator(Base.metadata) or AlembicMigrator('alembic.ini').",
        "SCHEMA = None",
    ])


def render(project: Project, target: Path) -> str:
    """The text of the base test module for ``project``, to be written at ``target``."""
    imports, definition = _schema(project, target)
    names = ["PostgresTestCase"] + (["AsyncPostgresTestCase"] if project.has_asyncpg else [])
    if project.alembic_ini is None and project.metadata_module is not None:
        names.append("MetadataMigrator")
    lines = [
        '"""Base test classes: every test gets its own PostgreSQL database (elefast).',
        "",
        "Written by `python -m elefast init`; edit freely. Subclass DatabaseTestCase instead of",
        "unittest.TestCase and use self.session, self.engine and self.database in tests.",
        '"""',
        "",
        "import unittest",
        *(["from pathlib import Path"] if project.alembic_ini is not None else []),
        "",
        f"from elefast import {', '.join(sorted(names))}",
        *imports,
        "",
        *definition,
        "",
        "",
        "class DatabaseTestCase(PostgresTestCase, unittest.TestCase):",
        '    """Each test gets a fresh database; with isolation = "transaction", a rolled-back transaction."""',
        "",
        "    schema = SCHEMA",
        *_app_engines_lines(project),
        '    # isolation = "transaction"  # one database per class, each test rolled back: faster',
    ]
    if project.has_asyncpg:
        lines += [
            "",
            "",
            "class AsyncDatabaseTestCase(AsyncPostgresTestCase, unittest.IsolatedAsyncioTestCase):",
            '    """The same for async def tests (asyncpg)."""',
            "",
            "    schema = SCHEMA",
        ]
    return "\n".join(lines) + "\n"


def _app_engines_lines(project: Project) -> List[str]:
    if not project.app_engines:
        return []
    entries = ", ".join(repr(spec) for spec in project.app_engines)
    return ["    # The app's own engines, built when their modules are imported: on each test's database.",
            f"    app_engines = ({entries},)"]


def write_base_module(root: Path, target: Path, force: bool = False,
                      ask: Optional[Callable[[str], str]] = None) -> Optional[Path]:
    """Write the base module at ``target``; ``ask`` (a terminal's ``input``) may change or cancel it.

    Returns the path written, or None when the user said no. Refuses to overwrite an
    existing file unless ``force``.
    """
    project = detect(root)
    if ask is not None:
        answer = ask(f"Write the base test module to {target}? [Y/n/other path] ").strip()
        if answer.lower() in ("n", "no"):
            return None
        if answer and answer.lower() not in ("y", "yes"):
            target = Path(answer)
    if target.exists() and not force:
        raise FileExistsError(f"{target} exists; pass --force to overwrite it, or --path to write elsewhere.")
    target.parent.mkdir(parents=True, exist_ok=True)
    package = target.parent / "__init__.py"
    if target.parent.resolve() != root.resolve() and not package.exists():
        package.touch()  # `python -m unittest` discovers test directories that are packages
    target.write_text(render(project, target), encoding="utf-8")
    return target


def describe(project: Project) -> List[str]:
    """What ``init`` found, one line each (printed before writing)."""
    if project.alembic_ini is not None:
        schema = f"Alembic migrations ({project.alembic_ini})"
    elif project.metadata_module is not None:
        schema = f"SQLAlchemy models ({project.metadata_module}:{project.metadata_expression})"
    else:
        schema = "nothing (no alembic.ini, no MetaData found): an empty database per test"
    missing = []
    if not project.has_psycopg:
        missing.append("psycopg (sync tests): pip install 'psycopg[binary]'")
    drivers = ", ".join(name for name, ok in (("psycopg", project.has_psycopg), ("asyncpg", project.has_asyncpg))
                        if ok) or "none"
    lines = [f"schema:  {schema}", f"drivers: {drivers}"]
    if not project.has_asyncpg:
        lines.append("         (no asyncpg: no async base class; pip install 'elefast[asyncpg]' for one)")
    lines += [f"missing: {item}" for item in missing]
    for spec in project.app_engines:
        lines.append(f"engine:  {spec} is built when imported: the tests steer it (app_engines / elefast_app_engines)")
    if project.alembic_ini is not None:
        lines += env_py_advice(project.alembic_ini)
    return lines


def pytest_warnings(project: Project) -> List[str]:
    """For ``init --pytest``: fixtures of the project's conftest.py that the output would replace."""
    return [f"warning: {clash} is already a fixture; appending this output would replace it (pytest keeps the "
            "last definition): rename one of the two first" for clash in project.fixture_clashes]


def env_py_advice(ini: Path) -> List[str]:
    """What to add to the project's ``env.py`` when it does not take elefast's connection (else nothing)."""
    try:
        from elefast.extras.alembic import SHARING_BRANCH, AlembicMigrator, env_py_shares_connection

        env_py = AlembicMigrator(ini).env_py_path()
    except Exception as error:  # no Alembic installed, or a config it cannot read: say so, do not reassure
        return [f"env.py:  could not be read ({type(error).__name__}: {str(error).splitlines()[0][:160]})"]
    if env_py is None or env_py_shares_connection(env_py):
        return []
    return [
        f"env.py:  {env_py} does not use config.attributes['connection']. elefast points",
        "         sqlalchemy.url at each template, which is enough if env.py connects through it;",
        "         if env.py builds its URL from your settings, it would migrate that database",
        "         (elefast then fails the build, naming env.py). Add this at the top of",
        "         run_migrations_online():",
        *("           " + line for line in SHARING_BRANCH.splitlines()),
    ]


#: Drivers that only work one way (psycopg 3 does both).
ASYNC_ONLY_DRIVERS = ("asyncpg", "aiopg")
SYNC_ONLY_DRIVERS = ("psycopg2", "pg8000")


def pytest_conftest(project: Project, use_async: bool, driver: str) -> str:
    """A ``conftest.py`` with upstream elefast's fixture names (``db_server``, ``db``,
    ``db_connection``, ``db_session``), on this package's API, for ``init --pytest``."""
    schema_imports, schema_lines = _schema(project, Path.cwd() / "tests" / "conftest.py")
    kind = "Async" if use_async else ""
    fixture = "pytest_asyncio.fixture" if use_async else "pytest.fixture"
    maybe_async, maybe_await = ("async ", "await ") if use_async else ("", "")
    session_scope = 'scope="session", loop_scope="session"' if use_async else 'scope="session"'
    lines = [
        '"""Fixtures giving each test its own PostgreSQL database (written by `python -m elefast init --pytest`)."""',
        "",
        "import os",
        *(["from pathlib import Path"] if project.alembic_ini is not None else []),
        "",
        "import pytest",
        *(["import pytest_asyncio"] if use_async else []),
        f"from elefast import {kind}Database, {kind}DatabaseServer, "
        f"{'MetadataMigrator, ' if project.alembic_ini is None and project.metadata_module else ''}provision",
        *schema_imports,
        "",
        *schema_lines,
        "",
        "",
        f"@{fixture}({session_scope})",
        f"{maybe_async}def db_server():",
        "    # ELEFAST_DATABASE_URL if set, else a throwaway local server, else Docker.",
        f"    url = provision.resolve(os.getenv(\"ELEFAST_DATABASE_URL\"), is_async={use_async})",
        f"    server = {kind}DatabaseServer(url, schema=SCHEMA)",
        f"    yield {maybe_await}server.ensure_is_ready()",
        f"    {maybe_await}server.close()",
        "",
        "",
        f"@{fixture}",
        f"{maybe_async}def db(db_server: {kind}DatabaseServer):",
        f"    {maybe_async}with {maybe_await}db_server.create_database() as database:",
        "        yield database",
        "",
        "",
        f"@{fixture}",
        f"{maybe_async}def db_connection(db: {kind}Database):",
        f"    {maybe_async}with db.engine.begin() as connection:",
        "        yield connection",
        "",
        "",
        f"@{fixture}",
        f"{maybe_async}def db_session(db: {kind}Database):",
        f"    {maybe_async}with db.session() as session:",
        "        yield session",
    ]
    del driver  # the URL's driver comes from provision; kept for upstream's --driver flag
    return "\n".join(lines) + "\n"


def wants_async(driver: Optional[str], preference: List[bool]) -> bool:
    """--async/--sync if given, else what the driver can only do, else sync."""
    if preference:
        return any(preference)
    return driver in ASYNC_ONLY_DRIVERS
