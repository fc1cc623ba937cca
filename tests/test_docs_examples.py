"""The Python examples of the documentation (docs/pages/*.md, README.md) are real code.

Every ```python block must compile (a fragment elides with ``...``, it does not break the syntax;
top-level ``await`` is allowed, as in a notebook or an async test's body), and every class
that mixes in one of elefast's test case classes must also be a ``unittest`` test case: a class
with ``PostgresTestCase`` alone is collected by no runner and its tests never run, silently.
"""

from __future__ import annotations

import ast
import re
import textwrap
import unittest
from typing import Dict, Iterator, List, NamedTuple, Set

import elefast.testcase
from tests import support

#: Where the examples are.
SOURCES = [*sorted((support.ROOT / "docs" / "pages").glob("*.md")), support.ROOT / "README.md"]
#: A fenced block: the fence may be indented (inside a list item); the closing one matches it.
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[\w+-]*)[^\n]*\n"
                   r"(?P<body>.*?)^(?P=indent)(?P=fence)[ \t]*$", re.S | re.M)
#: elefast's test case mixins (the public classes of elefast.testcase) and the runner class each needs.
MIXINS: Dict[str, Set[str]] = {
    name: ({"IsolatedAsyncioTestCase"} if name.startswith("Async") else {"TestCase", "IsolatedAsyncioTestCase"})
    for name in elefast.testcase.__all__
    if isinstance(getattr(elefast.testcase, name), type)
}


class Block(NamedTuple):
    """One ```python block: where it is and its code (dedented)."""

    where: str
    code: str


def python_blocks() -> Iterator[Block]:
    for source in SOURCES:
        text = source.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            if match.group("lang").lower() not in {"python", "py", "python3"}:
                continue
            line = text.count("\n", 0, match.start("body")) + 1
            yield Block(f"{source.relative_to(support.ROOT)}:{line}", textwrap.dedent(match.group("body")))


def base_names(node: ast.ClassDef) -> List[str]:
    """The last part of each base's name: ``unittest.TestCase`` -> ``TestCase``."""
    names = []
    for base in node.bases:
        if isinstance(base, ast.Attribute):
            names.append(base.attr)
        elif isinstance(base, ast.Name):
            names.append(base.id)
    return names


def missing_test_case(tree: ast.AST) -> List[str]:
    """The classes of ``tree`` that mix in an elefast test case but are no unittest test case.

    A class counts as a test case when it names the runner class itself, or subclasses a class
    of the same block that does; a class that only mixes in and is itself mixed into a test case
    by another class of the block (a shared base) is fine too.
    """
    classes = [node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]
    bases = {node.name: base_names(node) for node in classes}
    needs: Dict[str, Set[str]] = {}
    for node in classes:
        for base in bases[node.name]:
            if base in MIXINS:
                needs.setdefault(node.name, set()).update(MIXINS[base])
            elif base in needs:  # a subclass of a class of this block that mixes one in
                needs.setdefault(node.name, set()).update(needs[base])

    def is_test_case(name: str, seen: Set[str]) -> bool:
        if name in seen:
            return False
        for base in bases.get(name, []):
            if base in needs.get(name, set()) or (base in bases and is_test_case(base, seen | {name})):
                return True
        return False

    missing = []
    for name, wanted in needs.items():
        if is_test_case(name, set()):
            continue
        used_by_test_case = any(name in bases[other] and is_test_case(other, set()) for other in bases)
        if not used_by_test_case:
            missing.append(f"class {name}({', '.join(bases[name])}) needs one of {sorted(wanted)} as a base")
    return missing


class DocsExamplesTests(unittest.TestCase):
    def test_blocks_are_found(self) -> None:
        blocks = list(python_blocks())
        self.assertGreater(len(blocks), 20)
        self.assertTrue(any(block.where.startswith("README.md") for block in blocks))
        self.assertEqual(set(MIXINS), {"PostgresTestCase", "AsyncPostgresTestCase"})

    def test_every_python_block_compiles(self) -> None:
        flags = ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        for block in python_blocks():
            with self.subTest(block=block.where):
                try:
                    compile(block.code, block.where, "exec", flags=flags)
                except SyntaxError as error:
                    self.fail(f"{block.where}: {error.msg} (line {error.lineno} of the block):\n{block.code}")

    def test_every_elefast_test_class_is_a_unittest_test_case(self) -> None:
        checked = 0
        for block in python_blocks():
            tree = ast.parse(block.code)
            checked += sum(1 for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
                           and set(base_names(node)) & set(MIXINS))
            with self.subTest(block=block.where):
                self.assertEqual(missing_test_case(tree), [], block.where)
        self.assertGreater(checked, 10)


class CheckerTests(unittest.TestCase):
    """The checker itself, on classes written here: it must catch what the docs once had."""

    def check(self, code: str) -> List[str]:
        return missing_test_case(ast.parse(textwrap.dedent(code)))

    def test_a_mixin_alone_is_caught(self) -> None:
        self.assertEqual(len(self.check("class MigrationsTest(PostgresTestCase):\n    pass\n")), 1)
        self.assertEqual(len(self.check("class T(elefast.AsyncPostgresTestCase, unittest.TestCase): pass\n")), 1)

    def test_test_cases_pass(self) -> None:
        self.assertEqual(self.check("""
            class A(PostgresTestCase, unittest.TestCase): pass
            class B(AsyncPostgresTestCase, IsolatedAsyncioTestCase): pass
            class Base(PostgresTestCase, unittest.TestCase): pass
            class C(Base): pass
            class Shared(PostgresTestCase): pass
            class D(Shared, unittest.TestCase): pass
        """), [])

    def test_a_subclass_of_a_bare_mixin_is_caught(self) -> None:
        self.assertEqual(len(self.check("class Shared(PostgresTestCase): pass\nclass E(Shared): pass\n")), 2)


if __name__ == "__main__":
    unittest.main()
