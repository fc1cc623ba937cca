"""``python -m elefast init --pytest`` (and upstream's ``elefast init >> tests/conftest.py``): a conftest.py
on stdout, nothing else, whose fixtures give each pytest test its own database, sync and async."""

import os
import subprocess
import sys
import tempfile
import textwrap
import unittest
from pathlib import Path

from tests import support

MODELS = '''
from sqlalchemy import Column, Integer, String
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


class Post(Base):
    __tablename__ = "posts"
    id = Column(Integer, primary_key=True)
    title = Column(String(80))
'''

SYNC_TESTS = '''
import pytest
from sqlalchemy import text
from app.models import Post


@pytest.mark.parametrize("title", ["a", "b"])
def test_each_test_has_its_own_database(db_session, title):
    db_session.add(Post(title=title))
    db_session.commit()
    assert db_session.execute(text("SELECT count(*) FROM posts")).scalar() == 1


def test_connection(db_connection):
    assert db_connection.execute(text("SELECT count(*) FROM posts")).scalar() == 0


def test_prefix_from_the_node_name(request, db_server):
    with db_server.create_database(prefix=request.node.name) as database:  # upstream's recipe
        assert database.name.startswith("test_prefix_from_the_node_name_")
'''

ASYNC_TESTS = '''
import pytest
from sqlalchemy import text
from app.models import Post


@pytest.mark.asyncio
@pytest.mark.parametrize("title", ["a", "b"])
async def test_each_test_has_its_own_database(db_session, title):
    db_session.add(Post(title=title))
    await db_session.commit()
    assert (await db_session.execute(text("SELECT count(*) FROM posts"))).scalar() == 1
'''


class InitPytestTests(unittest.TestCase):
    def project(self, root: Path) -> dict:
        (root / "app").mkdir()
        (root / "app" / "__init__.py").write_text("")
        (root / "app" / "models.py").write_text(MODELS)
        (root / "tests").mkdir()
        return dict(os.environ, PYTHONPATH=f"{root}{os.pathsep}{support.ROOT}",
                    ELEFAST_DATABASE_URL=support.server_url())

    def run_pytest(self, root: Path, env: dict) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=root,
                              env=env, capture_output=True, text=True, timeout=300)

    def test_upstream_readme_append_to_conftest(self):
        """`init >> tests/conftest.py` appends only Python; the fixtures work, parametrized prefixes too."""
        with tempfile.TemporaryDirectory() as directory:
            root = Path(directory)
            env = self.project(root)
            conftest = root / "tests" / "conftest.py"
            conftest.write_text("# the project's own conftest\n")
            shell = f"{sys.executable} -m elefast init >> tests/conftest.py"
            made = subprocess.run(shell, shell=True, cwd=root, env=env, capture_output=True, text=True, timeout=120)
            self.assertEqual(made.returncode, 0, made.stderr)
            self.assertEqual(made.stdout, "")
            compile(conftest.read_text(), str(conftest), "exec")  # nothing but Python was appended
            self.assertIn("MetadataMigrator(Base.metadata)", conftest.read_text())
            (root / "tests" / "test_posts.py").write_text(SYNC_TESTS)
            result = self.run_pytest(root, env)
            self.assertEqual(result.returncode, 0, result.stdout[-3000:] + result.stderr[-2000:])
            self.assertIn("4 passed", result.stdout)

    def test_async_flags_of_upstream(self):
        with tempfile.TemporaryDirectory() as directory:
            root = Path(directory)
            env = self.project(root)
            made = subprocess.run([sys.executable, "-m", "elefast", "init", "--pytest", "--async", "--no-interaction"],
                                  cwd=root, env=env, capture_output=True, text=True, timeout=120)
            self.assertEqual(made.returncode, 0, made.stderr)
            self.assertIn("pytest-asyncio", made.stderr)
            (root / "tests" / "conftest.py").write_text(made.stdout)
            (root / "tests" / "test_posts.py").write_text(textwrap.dedent(ASYNC_TESTS))
            result = self.run_pytest(root, env)
            self.assertEqual(result.returncode, 0, result.stdout[-3000:] + result.stderr[-2000:])
            self.assertIn("2 passed", result.stdout)

    def test_driver_implies_async(self):
        with tempfile.TemporaryDirectory() as directory:
            root = Path(directory)
            env = self.project(root)
            made = subprocess.run([sys.executable, "-m", "elefast", "init", "--driver", "asyncpg"],
                                  cwd=root, env=env, capture_output=True, text=True, timeout=120)
            self.assertEqual(made.returncode, 0, made.stderr)
            self.assertIn("def db(elefast_async_database):", made.stdout)


if __name__ == "__main__":
    unittest.main()
