"""The project's own modules that migration scripts import, found without importing them.

An Alembic revision's ``from app.constants import ROLES`` shapes the template as much as the
revision does: :func:`project_imports` names ``app/constants.py`` so its contents go into the
fingerprint. Modules of Python and of installed libraries are left out.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Set, Tuple

from elefast._schema.fingerprints import is_project_code

__all__ = ["MAX_PROJECT_IMPORTS", "project_imports"]

#: At most this many project modules are followed from a migration's imports.
MAX_PROJECT_IMPORTS = 500


def project_imports(files: Iterable[Path]) -> Dict[str, Path]:
    """The project's own modules that ``files`` import, and those import in turn: {name: file}.

    Read from the source (``ast``), located on ``sys.path`` without importing anything; modules
    of Python and of installed libraries are left out (they are not the project's). A migration
    that does ``from app.constants import ROLES`` names ``app/constants.py`` here, so a change to
    the constant changes the fingerprint.
    """
    found: Dict[str, Path] = {}
    queue = [Path(path) for path in files]
    read: Set[Path] = set()
    while queue and len(found) < MAX_PROJECT_IMPORTS:
        path = queue.pop(0)
        if path in read:
            continue
        read.add(path)
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (OSError, SyntaxError, ValueError):
            continue
        for name, located in _imports_of(tree, path):
            if located is None or name in found or not is_project_code(str(located)):
                continue
            found[name] = located
            queue.append(located)
    return dict(sorted(found.items()))


def _imports_of(tree: ast.AST, path: Path) -> Iterator[Tuple[str, Optional[Path]]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, _locate(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: found beside the file, not on sys.path
                base = path.parent
                for _ in range(node.level - 1):
                    base = base.parent
                parts = (node.module or "").split(".") if node.module else []
                for alias in node.names:
                    for candidate in (base.joinpath(*parts, alias.name), base.joinpath(*parts)):
                        located = _module_file(candidate)
                        if located is not None:
                            dots = "." * node.level
                            yield f"{path.stem}: from {dots}{node.module or ''} import {alias.name}", located
                            break
            elif node.module:
                for alias in node.names:
                    submodule = f"{node.module}.{alias.name}"
                    located = _locate(submodule)
                    yield (submodule, located) if located is not None else (node.module, _locate(node.module))


def _module_file(base: Path) -> Optional[Path]:
    for candidate in (base.with_name(base.name + ".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _locate(module: str) -> Optional[Path]:
    """The source file of ``module`` on ``sys.path``, else through the finder that makes its top-level
    package importable, found without importing it (None if not found, or not the project's)."""
    relative = module.split(".")
    for entry in sys.path:
        root = Path(entry or os.getcwd())
        if not is_project_code(str(root / "x.py")):
            continue  # the standard library and site-packages: not the project's
        located = _module_file(root.joinpath(*relative))
        if located is not None:
            return located.resolve()
    return _locate_by_finder(relative)


def _locate_by_finder(relative: List[str]) -> Optional[Path]:
    """A project made importable by a meta-path finder, not a ``sys.path`` entry (a setuptools
    editable install's ``__editable___*_finder``): the top-level package's spec, then its
    ``submodule_search_locations`` walked here. ``find_spec`` of a top-level name runs no module's
    code (of a dotted name it would import the parents)."""
    top = relative[0]
    if top in sys.builtin_module_names or top in getattr(sys, "stdlib_module_names", ()):
        return None
    try:
        spec = importlib.util.find_spec(top)
    except Exception:  # a finder that fails, or a module in sys.modules without a spec
        return None
    if spec is None:
        return None
    if len(relative) == 1:
        candidates = [Path(spec.origin)] if spec.has_location and spec.origin else []
    else:
        found = (_module_file(Path(root).joinpath(*relative[1:])) for root in spec.submodule_search_locations or ())
        candidates = [path for path in found if path is not None]
    for path in candidates:
        if path.suffix == ".py" and path.is_file() and _is_project_file(path):
            return path.resolve()
    return None


def _is_project_file(path: Path) -> bool:
    """Not Python's nor an installed library's, wherever they are (a system ``dist-packages`` too)."""
    resolved = path.resolve()
    return is_project_code(str(resolved)) and not {"site-packages", "dist-packages"} & set(resolved.parts)
