"""``python -m elefast init``: write the project's base test module, or (``--pytest``) its conftest.py.

:mod:`elefast._cli.finder` says what the project has (an ``alembic.ini``, else the ``MetaData``
its models are declared on; the engines its modules build when imported; the drivers). This
module writes the code on it: ``DatabaseTestCase`` (and ``AsyncDatabaseTestCase`` when asyncpg
is installed) with ``schema`` and ``app_engines``, or a ``conftest.py`` that sets the plugin's
``elefast_schema`` and ``elefast_app_engines`` and names its fixtures as upstream elefast's
(``db_server``, ``db``, ``db_connection``, ``db_session``). Every engine it reports is steered
by what it writes. With several ``MetaData`` and no ``--schema`` it lists them and writes
nothing (on a terminal, ``init`` asks which).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from elefast._cli.finder import Candidate, Project, detect

__all__ = ["describe", "pytest_conftest", "render", "run", "several_schemas", "write_base_module"]


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
    schema = project.schema
    if schema is not None:
        name = schema.expression.split(".")[0]
        models = [f"import {module}  # noqa: F401  (its tables are on {schema.expression})"
                  for module in schema.model_modules]
        return ([f"from {schema.module} import {name}", *models], [
            "# The tables of the project's models (create_all), built once into a template.",
            f"SCHEMA = MetadataMigrator({schema.expression})",
        ])
    return ([], [
        "# No alembic.ini and no MetaData found: tests start with an empty database.",
        "# Set SCHEMA = MetadataMigrator(Base.metadata) or AlembicMigrator('alembic.ini').",
        "SCHEMA = None",
    ])


def _engines_tuple(project: Project) -> str:
    return "(" + "".join(f"{spec!r}, " for spec in project.app_engines).rstrip(" ") + ")"


def render(project: Project, target: Path) -> str:
    """The text of the base test module for ``project``, to be written at ``target``."""
    imports, definition = _schema(project, target)
    names = ["PostgresTestCase"] + (["AsyncPostgresTestCase"] if project.has_asyncpg else [])
    if project.alembic_ini is None and project.schema is not None:
        names.append("MetadataMigrator")
    engines = []
    if project.app_engines:
        engines = ["    # The app's own engines, built when their modules are imported: during each test every",
                   "    # connection they open goes to the test's database.",
                   f"    app_engines = {_engines_tuple(project)}"]
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
        *engines,
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
            *engines,
        ]
    return "\n".join(lines) + "\n"


def pytest_conftest(project: Project, use_async: bool) -> str:
    """A ``conftest.py`` for ``init --pytest``: the plugin's ``elefast_schema`` and ``elefast_app_engines``
    set for the project, and upstream elefast's fixture names on the plugin's fixtures."""
    schema_imports, schema_lines = _schema(project, Path.cwd() / "tests" / "conftest.py")
    plugin = "elefast_async_" if use_async else "elefast_"
    needs_migrator = project.alembic_ini is None and project.schema is not None
    if project.app_engines:
        engines = ["    # The app's own engines, built when their modules are imported: while a test that uses db,",
                   "    # db_connection or db_session runs, every connection they open goes to its database.",
                   f"    return {_engines_tuple(project)}"]
    else:
        engines = ["    # Engines your app builds when imported (\"package.module:engine\"): on each test's database.",
                   "    return ()"]
    connection = (["@pytest_asyncio.fixture", "async def db_connection(db):",
                   "    async with db.engine.begin() as connection:", "        yield connection"] if use_async else
                  ["@pytest.fixture", "def db_connection(db):",
                   "    with db.engine.begin() as connection:", "        yield connection"])
    lines = [
        '"""Each test gets its own PostgreSQL database (written by `python -m elefast init --pytest`).',
        "",
        f"db_server, db and db_session are elefast's {plugin}server, {plugin}database",
        f"and {plugin}session (its pytest plugin); elefast_schema and elefast_app_engines",
        "say what they build and steer.",
        '"""',
        "",
        *(["from pathlib import Path", ""] if project.alembic_ini is not None else []),
        "import pytest",
        *(["import pytest_asyncio"] if use_async else []),
        *(["from elefast import MetadataMigrator"] if needs_migrator else []),
        *schema_imports,
        "",
        *schema_lines,
        "",
        "",
        '@pytest.fixture(scope="session")',
        "def elefast_schema():",
        "    return SCHEMA",
        "",
        "",
        '@pytest.fixture(scope="session")',
        "def elefast_app_engines():",
        *engines,
        "",
        "",
        '@pytest.fixture(scope="session")',
        f"def db_server({plugin}server):",
        f"    return {plugin}server",
        "",
        "",
        "@pytest.fixture",
        f"def db({plugin}database):",
        f"    return {plugin}database",
        "",
        "",
        *connection,
        "",
        "",
        "@pytest.fixture",
        f"def db_session({plugin}session):",
        f"    return {plugin}session",
    ]
    return "\n".join(lines) + "\n"


def write_base_module(project: Project, target: Path, force: bool = False) -> Path:
    """Write the base module at ``target``; refuses to overwrite an existing file unless ``force``."""
    if target.exists() and not force:
        raise FileExistsError(f"{target} exists; pass --force to overwrite it, or --path to write elsewhere.")
    target.parent.mkdir(parents=True, exist_ok=True)
    package = target.parent / "__init__.py"
    if target.parent.resolve() != project.root.resolve() and not package.exists():
        package.touch()  # `python -m unittest` discovers test directories that are packages
    target.write_text(render(project, target), encoding="utf-8")
    return target


def _schema_line(project: Project) -> str:
    if project.alembic_ini is not None:
        return f"Alembic migrations ({project.alembic_ini})"
    schema = project.schema
    if schema is None:
        return "nothing (no alembic.ini, no MetaData found): an empty database per test"
    origin = (f"{schema.path}: {schema.declared}" if schema.path != "?" else "given with --schema")
    models = f"; tables also from {', '.join(schema.model_modules)}" if schema.model_modules else ""
    return f"SQLAlchemy models ({schema.spec}, {origin}{models})"


def describe(project: Project, pytest_style: bool = False) -> List[str]:
    """What ``init`` found, one line each (printed before writing)."""
    drivers = ", ".join(name for name, ok in (("psycopg", project.has_psycopg), ("asyncpg", project.has_asyncpg))
                        if ok) or "none"
    lines = [f"schema:  {_schema_line(project)}", f"drivers: {drivers}"]
    if not project.has_asyncpg:
        lines.append("         (no asyncpg: no async tests; pip install 'elefast[asyncpg]' for them)")
    if not project.has_psycopg:
        lines.append("missing: psycopg (sync tests): pip install 'psycopg[binary]'")
    if project.src_layout:
        lines.append("layout:  src/ (modules named without src.; install the project, pip install -e ., so the "
                     "tests import it)")
    where = "elefast_app_engines in the written conftest" if pytest_style else "app_engines in the written classes"
    for spec in project.app_engines:
        lines.append(f"engine:  {spec} is built when imported: {where} steers it onto each test's database")
    for spec in project.other_engines:
        lines.append(f"engine:  {spec} is built when imported on another database: left alone (elefast steers "
                     "PostgreSQL engines)")
    if project.alembic_ini is not None:
        lines += env_py_advice(project.alembic_ini)
    return lines


def several_schemas(project: Project) -> List[str]:
    """The lines that list the MetaData candidates and say how to choose one."""
    width = max(len(candidate.spec) for candidate in project.candidates)
    return [f"error: {len(project.candidates)} MetaData found and init builds the template from one; nothing "
            "written. Choose it with --schema MODULE:ATTR, one of:",
            *(f"  --schema {candidate.spec:<{width}}  # {candidate.path}: {candidate.declared}"
              for candidate in project.candidates),
            "(tables on the others would be missing from the tests' databases: if they belong together, "
            "give a MetadataMigrator per MetaData in a ChainMigrator by hand)"]


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


def wants_async(driver: Optional[str], preference: List[bool]) -> bool:
    """--async/--sync if given, else what the driver can only do, else sync."""
    if preference:
        return any(preference)
    return driver in ASYNC_ONLY_DRIVERS


def _ask_schema(project: Project, ask: Callable[[str], str]) -> Optional[Candidate]:
    """On a terminal: which of several MetaData (None: the user gave no valid number)."""
    for number, candidate in enumerate(project.candidates, 1):
        print(f"  {number}. {candidate.spec}  ({candidate.path}: {candidate.declared})")
    answer = ask(f"Build the tests' template from which MetaData? [1-{len(project.candidates)}] ").strip()
    if answer.isdigit() and 1 <= int(answer) <= len(project.candidates):
        return project.candidates[int(answer) - 1]
    return None


def run(args: argparse.Namespace, pytest_style: bool) -> int:
    """The ``init`` command: report, choose the schema, write (or print, for pytest); the exit code."""
    try:
        project = detect(Path.cwd(), args.schema)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    interactive = sys.stdin.isatty() and sys.stdout.isatty() and not args.yes and not pytest_style
    undecided = project.schema is None and project.alembic_ini is None and len(project.candidates) > 1
    if undecided and interactive:
        print(f"{len(project.candidates)} MetaData found; the tests' template is built from one:")
        project.schema = _ask_schema(project, input)
        undecided = project.schema is None
    if undecided:
        for line in several_schemas(project):
            print(line, file=sys.stderr)
        return 2
    if pytest_style:
        use_async = wants_async(args.driver, args.async_preference or [])
        for line in describe(project, pytest_style=True) + pytest_warnings(project):
            print(line, file=sys.stderr)
        if project.async_engines and not use_async:
            print(f"note: {', '.join(project.async_engines)} is async: --async writes async fixtures for it",
                  file=sys.stderr)
        sys.stdout.write(pytest_conftest(project, use_async))
        if use_async:
            print("note: the async fixtures need pytest-asyncio (pip install pytest-asyncio)", file=sys.stderr)
        return 0
    for line in describe(project):
        print(line)
    target = Path(args.path)
    if interactive:
        answer = input(f"Write the base test module to {target}? [Y/n/other path] ").strip()
        if answer.lower() in ("n", "no"):
            print("Nothing written.")
            return 0
        if answer and answer.lower() not in ("y", "yes"):
            target = Path(answer)
    try:
        written = write_base_module(project, target, force=args.force)
    except FileExistsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {written}")
    print("Next: subclass DatabaseTestCase in a test module, then run: python -m unittest")
    return 0
