"""The package's layout: the top level is the public API, private rooms import only downwards, no circles.

Read from the source (every import statement, those inside functions and ``TYPE_CHECKING`` too).
"""

import ast
import unittest
from pathlib import Path
from typing import Dict, List, Set

PACKAGE = Path(__file__).resolve().parent.parent / "elefast"

#: Each private room and the rooms of elefast it may import (besides itself; errors for all).
ALLOWED: Dict[str, Set[str]] = {
    "_base": set(),
    "_engines": {"_base"},
    "_schema": {"_base"},
    "_server": {"_base", "_engines", "_schema", "migrators"},
    "_testing": {"_base", "_engines", "_schema", "_server", "sync", "asyncio", "migrators", "extensions", "queries",
                 "provision", "snapshots"},
    "_cli": {"_base", "_engines", "_schema", "_server", "sync", "asyncio", "migrators", "extensions", "sql_files",
             "provision", "extras", "elefast", "queries", "snapshots"},
}
PUBLIC_TOP = {"__init__", "__main__", "errors", "sync", "asyncio", "testcase", "pytest_plugin", "migrators",
              "sql_files", "extensions", "queries", "snapshots", "testing_postgresql"}


def modules() -> Dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ["elefast", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: Dict[str, Path]) -> Set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: List[str] = []
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        found.update(t for t in targets if t in known and t != name)
    return found


def room(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "elefast"


class LayoutTests(unittest.TestCase):
    def setUp(self):
        self.known = modules()
        self.graph = {name: imports(name, path, self.known) for name, path in self.known.items()}

    def test_the_top_level_is_the_public_api(self):
        """`ls elefast/` lists the public modules, the two public packages and the private rooms: nothing else."""
        files = {path.stem for path in PACKAGE.glob("*.py")}
        self.assertEqual(files, PUBLIC_TOP)
        folders = {path.name for path in PACKAGE.iterdir() if path.is_dir() and path.name != "__pycache__"}
        self.assertEqual(folders, {"extras", "provision", *ALLOWED})

    def test_each_private_room_says_what_it_does_and_may_import(self):
        for name in ALLOWED:
            with self.subTest(name):
                doc = ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text())) or ""
                self.assertIn("May import", doc)

    def test_private_rooms_import_only_downwards(self):
        wrong = []
        for name, targets in self.graph.items():
            here = room(name)
            if here not in ALLOWED:
                continue
            for target in targets:
                there = room(target)
                if there not in (here, "errors") and there not in ALLOWED[here]:
                    wrong.append(f"{name} -> {target}")
        self.assertEqual(wrong, [])

    def test_public_modules_do_not_reach_into_the_test_side_or_the_cli(self):
        wrong = [f"{name} -> {target}" for name, targets in self.graph.items() for target in targets
                 if room(name) in ("sync", "asyncio", "snapshots", "migrators", "extensions", "queries", "sql_files",
                                   "errors", "provision", "extras")
                 and room(target) in ("_testing", "_cli", "testcase", "pytest_plugin")]
        self.assertEqual(wrong, [])

    def test_no_import_circles(self):
        circles: List[List[str]] = []
        index: Dict[str, int] = {}
        low: Dict[str, int] = {}
        stack: List[str] = []
        on_stack: Set[str] = set()

        def visit(node: str) -> None:  # Tarjan's strongly connected components
            index[node] = low[node] = len(index)
            stack.append(node)
            on_stack.add(node)
            for target in sorted(self.graph[node]):
                if target not in index:
                    visit(target)
                    low[node] = min(low[node], low[target])
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    circles.append(sorted(component))

        for node in sorted(self.graph):
            if node not in index:
                visit(node)
        self.assertEqual(circles, [])


if __name__ == "__main__":
    unittest.main()
