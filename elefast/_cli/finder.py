"""What ``python -m elefast init`` finds in a project: its schema, its app engines, its fixtures.

Read from the source text, nothing imported: an ``alembic.ini``; every ``MetaData`` the models
may be declared on, in each SQLAlchemy 2 style (``class Base(DeclarativeBase)``, with
``MappedAsDataclass`` or other mixins too, ``declarative_base()``, ``registry()``, a plain
``MetaData()``, Flask-SQLAlchemy's ``db = SQLAlchemy()`` and SQLModel's ``table=True`` models),
with the modules whose tables land on each; the engines the app builds when a module is imported;
and ``conftest.py`` fixtures with the names ``init --pytest`` writes. Module names are the ones
Python imports: a ``src/`` layout's ``src/pkg/db.py`` is ``pkg.db``.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Optional, Set, Tuple

__all__ = ["Candidate", "Project", "detect", "module_name", "python_modules"]

SKIPPED_DIRS = {".git", ".hg", ".venv", "venv", "env", ".tox", ".nox", "node_modules", "build", "dist",
                "__pycache__", "site-packages", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
#: A class statement with its base list (which may span lines).
_CLASS = re.compile(r"^class\s+(\w+)\s*\(([^)]*)\)", re.M)
#: Base classes that make a class a declarative base (with any mixins beside them).
_DECLARATIVE_BASES = re.compile(r"(?<![\w.])(?:\w+\.)*(?:DeclarativeBase|DeclarativeBaseNoMeta)\b")
_DECLARATIVE_CALL = re.compile(
    r"^(\w+)\s*(?::[^=\n]+)?=\s*(?:\w+\.)*(?:declarative_base\(|registry\([^)]*\)\.generate_base\()", re.M)
_REGISTRY = re.compile(r"^(\w+)\s*(?::[^=\n]+)?=\s*(?:\w+\.)*registry\((?![^)]*\)\.generate_base)", re.M)
_METADATA = re.compile(r"^(\w+)\s*(?::[^=\n]+)?=\s*(?:\w+\.)*MetaData\(", re.M)
_FLASK = re.compile(r"^(\w+)\s*(?::[^=\n]+)?=\s*(?:\w+\.)*SQLAlchemy\(([^)]*)\)", re.M)
_SQLMODEL_TABLE = re.compile(r"^class\s+\w+\s*\(([^)]*\bSQLModel\b[^)]*\btable\s*=\s*True[^)]*)\)", re.M)
#: An engine (or Flask-SQLAlchemy's db) the app builds when its module is imported.
_APP_ENGINE = re.compile(
    r"^(\w+)\s*(?::[^=\n]+)?=\s*(?:\w+\.)?(create_engine|create_async_engine|SQLAlchemy)\("
    r"\s*(?:[rRuU]?[\"']([\w+]+):)?", re.M)  # the scheme of a URL written out: postgresql+psycopg, sqlite
#: The fixtures ``init --pytest`` writes (upstream elefast's names, and the plugin's it overrides).
PYTEST_FIXTURES = ("db_server", "db", "db_connection", "db_session", "elefast_schema", "elefast_app_engines")
_FIXTURE_DEF = re.compile(r"^(?:async\s+)?def\s+(" + "|".join(PYTEST_FIXTURES) + r")\s*\(", re.M)


@dataclass
class Candidate:
    """One ``MetaData`` the project's tables may be declared on."""

    module: str  # "pkg.models", importable
    expression: str  # "Base.metadata": what MetadataMigrator takes, its first name imported from module
    declared: str  # how the source declares it, for the list: "class Base(MappedAsDataclass, DeclarativeBase)"
    path: str  # the file, relative to the project
    in_tests: bool = False
    #: The other modules whose tables land on it (imported too, so that create_all sees them).
    model_modules: List[str] = field(default_factory=list)

    @property
    def spec(self) -> str:
        """``module:expression``, as ``--schema`` takes it."""
        return f"{self.module}:{self.expression}"


@dataclass
class Project:
    """What ``init`` found in a project directory."""

    root: Path
    alembic_ini: Optional[Path] = None
    candidates: List[Candidate] = field(default_factory=list)  # outside the tests, unless only tests have one
    schema: Optional[Candidate] = None  # the one to build from: the only candidate, or the --schema choice
    has_psycopg: bool = False
    has_asyncpg: bool = False
    src_layout: bool = False  # modules found under src/ (imported without the "src.")
    app_engines: List[str] = field(default_factory=list)  # "module:name" of engines built at import time
    async_engines: List[str] = field(default_factory=list)  # those of app_engines made by create_async_engine
    other_engines: List[str] = field(default_factory=list)  # "module:name (sqlite)": not PostgreSQL, not steered
    fixture_clashes: List[str] = field(default_factory=list)  # "tests/conftest.py: db" already defined

    @property
    def metadata_module(self) -> Optional[str]:
        """The module the schema is imported from (None: no MetaData chosen)."""
        return self.schema.module if self.schema is not None else None

    @property
    def metadata_expression(self) -> Optional[str]:
        """What ``MetadataMigrator`` is given, e.g. ``Base.metadata``."""
        return self.schema.expression if self.schema is not None else None


def _src_root(root: Path) -> Optional[Path]:
    src = root / "src"
    return src if src.is_dir() and not (src / "__init__.py").exists() else None


def module_name(root: Path, path: Path) -> Optional[str]:
    """The name Python imports ``path`` by (``src/`` layouts without the ``src``); None if it has none."""
    base = _src_root(root)
    relative = path.relative_to(base if base is not None and base in path.parents else root)
    parts = list(relative.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    if not parts or not all(part.isidentifier() for part in parts):
        return None
    return ".".join(parts)


def python_modules(root: Path) -> Iterator[Tuple[Path, str, str]]:
    """(path, module name, source) of each importable ``.py`` file under ``root``, in a stable order."""
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if d not in SKIPPED_DIRS and not d.startswith("."))
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            path = Path(directory) / name
            module = module_name(root, path)
            if module is None:
                continue
            try:
                yield path, module, path.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue


def _in_tests(root: Path, path: Path) -> bool:
    return path.name == "conftest.py" or any(part.startswith("test") for part in path.relative_to(root).parts)


def _migration_script(path: Path) -> bool:
    """An Alembic ``env.py`` or revision: run by Alembic, never imported by the app."""
    folder = path.parent.parent if path.parent.name == "versions" else path.parent
    in_versions = path.parent.name == "versions" and (folder / "env.py").exists()
    return in_versions or (folder / "script.py.mako").exists()


def _declared_in(module: str, source: str, relative: str, in_tests: bool,
                 aliases: Set[str]) -> List[Tuple[Candidate, str]]:
    """The candidates one module declares, each with the pattern of the source lines whose tables land on it.

    Adds to ``aliases`` the names a Flask-SQLAlchemy ``db`` takes its MetaData from (``model_class=Base``).
    """
    found: List[Tuple[Candidate, str]] = []

    def add(expression: str, declared: str, users: str) -> None:
        found.append((Candidate(module, expression, declared, relative, in_tests), users))

    for name, bases in _CLASS.findall(source):
        if _DECLARATIVE_BASES.search(bases):
            add(f"{name}.metadata", f"class {name}({' '.join(bases.split())})",
                rf"^class\s+\w+\s*\([^)]*(?<![\w])(?:\w+\.)?{name}\b")
    for name in _DECLARATIVE_CALL.findall(source):
        add(f"{name}.metadata", f"{name} = declarative_base()", rf"^class\s+\w+\s*\([^)]*(?<![\w])(?:\w+\.)?{name}\b")
    for name in _REGISTRY.findall(source):
        add(f"{name}.metadata", f"{name} = registry()", rf"\b{name}\.(?:mapped|map_imperatively|metadata)\b")
    for name, arguments in _FLASK.findall(source):
        given = re.findall(r"\b(?:model_class|metadata)\s*=\s*(?:\w+\.)*(\w+)\b(?!\s*\()", arguments)
        aliases.update(given)  # db.metadata is that base's (or MetaData): one candidate, db
        models = "|".join([rf"{name}\.Model", *given])
        add(f"{name}.metadata", f"{name} = SQLAlchemy()", rf"^class\s+\w+\s*\([^)]*\b(?:{models})\b")
    for name in _METADATA.findall(source):
        if re.search(rf"\bmetadata\s*=\s*{name}\b", source):
            continue  # a declarative base above is declared on it: the same MetaData
        add(name, f"{name} = MetaData()", rf"\bTable\(\s*['\"][^'\"]+['\"]\s*,\s*(?:\w+\.)?{name}\b")
    if _SQLMODEL_TABLE.search(source):  # one MetaData for all: imported from sqlmodel, with every models module
        found.append((Candidate("sqlmodel", "SQLModel.metadata", "class ...(SQLModel, table=True)", relative,
                                in_tests), _SQLMODEL_TABLE.pattern))
    return found


def _find_candidates(root: Path) -> List[Candidate]:
    """Every MetaData candidate, outside the tests unless only the tests have one; models modules filled in."""
    modules = list(python_modules(root))
    pairs: List[Tuple[Candidate, str]] = []
    aliases: Set[str] = set()
    for path, module, source in modules:
        if _migration_script(path):
            continue
        pairs += _declared_in(module, source, str(path.relative_to(root)), _in_tests(root, path), aliases)
    pairs = [pair for pair in pairs if pair[0].expression.removesuffix(".metadata") not in aliases]
    sqlmodel = [pair for pair in pairs if pair[0].module == "sqlmodel"]
    if len(sqlmodel) > 1:  # every SQLModel table is on one MetaData: one candidate
        keep = min(sqlmodel, key=lambda pair: pair[0].in_tests)
        pairs = [pair for pair in pairs if pair[0].module != "sqlmodel" or pair is keep]
    outside = [pair for pair in pairs if not pair[0].in_tests]
    pairs = outside or pairs
    several = len(pairs) > 1
    for candidate, users in pairs:
        pattern = re.compile(users, re.M)
        leaf = candidate.module.rpartition(".")[2]
        for path, module, source in modules:
            if module == candidate.module or (_in_tests(root, path) and not candidate.in_tests):
                continue
            if not pattern.search(source):
                continue
            if several and candidate.module != "sqlmodel" and not re.search(
                    rf"^\s*(?:from|import)\s+[\w.]*\b{leaf}\b", source, re.M):
                continue  # another base of the same name, from another module
            candidate.model_modules.append(module)
    return [candidate for candidate, _ in pairs]


def _scan_engines_and_fixtures(root: Path) -> Tuple[List[str], List[str], List[str], List[str]]:
    """Engines the app builds at import (outside tests and migrations), the async ones, those on another
    database (``sqlite://``: not steered), and conftest.py fixtures named as ours."""
    engines, async_engines, others, clashes = [], [], [], []
    for path, module, source in python_modules(root):
        relative = path.relative_to(root)
        if path.name == "conftest.py":
            clashes += [f"{relative}: {name}" for name in _FIXTURE_DEF.findall(source)]
        elif not _in_tests(root, path) and not _migration_script(path):
            for name, maker, scheme in _APP_ENGINE.findall(source):
                if scheme and scheme.split("+")[0] not in ("postgresql", "postgres"):
                    others.append(f"{module}:{name} ({scheme.split('+')[0]})")
                    continue
                engines.append(f"{module}:{name}")
                if maker == "create_async_engine":
                    async_engines.append(f"{module}:{name}")
    return engines, async_engines, others, clashes


def choose(project: Project, spec: str) -> Candidate:
    """The candidate ``--schema MODULE:ATTR`` names (``pkg.db:Base`` finds ``Base.metadata`` too), or a
    new one as given. Raises ``ValueError`` for a value without ``module:attribute``."""
    module, _, attribute = spec.partition(":")
    if not re.fullmatch(r"[A-Za-z_][\w.]*", module) or not re.fullmatch(r"[A-Za-z_][\w.]*", attribute):
        raise ValueError(f"--schema {spec!r}: give MODULE:ATTR, the module as Python imports it and the "
                         "MetaData in it, e.g. --schema myapp.models:Base.metadata")
    for candidate in project.candidates:
        if spec in (candidate.spec, candidate.spec.removesuffix(".metadata")):
            return candidate
    return Candidate(module, attribute, "given with --schema", "?")


def detect(root: Path, schema: Optional[str] = None) -> Project:
    """Look at ``root``: Alembic config, the MetaData candidates, app engines, installed drivers.

    ``schema`` (``--schema MODULE:ATTR``) picks the MetaData, over an ``alembic.ini`` too.
    """
    project = Project(root=root)
    ini = root / "alembic.ini"
    project.candidates = _find_candidates(root)
    if schema is not None:
        project.schema = choose(project, schema)
    elif ini.is_file():
        project.alembic_ini = ini
    elif len(project.candidates) == 1:
        project.schema = project.candidates[0]
    project.src_layout = _src_root(root) is not None and any(
        root / "src" in path.parents for path, _, _ in python_modules(root))
    (project.app_engines, project.async_engines, project.other_engines,
     project.fixture_clashes) = _scan_engines_and_fixtures(root)
    project.has_psycopg = importlib.util.find_spec("psycopg") is not None
    project.has_asyncpg = importlib.util.find_spec("asyncpg") is not None
    return project
