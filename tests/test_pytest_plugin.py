"""pytest: the mixins run unchanged, and the plugin's fixtures work (sync and async), in a real pytest run."""

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest
from pathlib import Path

from tests import support

CONFTEST = textwrap.dedent('''
    import pytest
    from sqlalchemy import Column, Integer, MetaData, String, Table

    from elefast import MetadataMigrator

    metadata = MetaData()
    things = Table("things", metadata, Column("id", Integer, primary_key=True), Column("name", String(40)))


    @pytest.fixture(scope="session")
    def elefast_schema():
        return MetadataMigrator(metadata)
''')

TESTS = textwrap.dedent('''
    import pytest
    from sqlalchemy import func, insert, select

    from conftest import things


    @pytest.mark.parametrize("name", ["one", "two", "three"])
    def test_each_test_has_its_own_database(elefast_session, name):
        elefast_session.execute(insert(things).values(name=name))
        elefast_session.commit()
        assert elefast_session.scalar(select(func.count()).select_from(things)) == 1


    def test_database_fixture(elefast_database):
        assert elefast_database.name.startswith("elefast_")
        with elefast_database.engine.connect() as connection:
            assert connection.scalar(select(func.count()).select_from(things)) == 0


    @pytest.mark.asyncio
    async def test_async_session(elefast_async_session):
        await elefast_async_session.execute(insert(things).values(name="async"))
        await elefast_async_session.commit()
        assert await elefast_async_session.scalar(select(func.count()).select_from(things)) == 1
''')


APP_CONFTEST = textwrap.dedent('''
    import pytest

    from elefast import MetadataMigrator
    from examples.legacy_shop import db


    @pytest.fixture(scope="session")
    def elefast_schema():
        return MetadataMigrator(db.Base.metadata)


    @pytest.fixture(scope="session")
    def elefast_app_engines():
        return ("examples.legacy_shop.db:engine",)
''')

APP_TESTS = textwrap.dedent('''
    import pytest

    from examples.legacy_shop import db


    @pytest.mark.parametrize("name", ["lamp", "lamp"])
    def test_the_apps_engine_is_on_the_tests_database(elefast_database, name):
        assert db.current_database() == elefast_database.name
        db.add_item(name)  # the same unique name in each test: a database each
        assert db.count_items() == 1
''')


GUARDED_TESTS = textwrap.dedent('''
    import os

    import pytest
    import sqlalchemy

    from elefast.errors import GuardError


    def test_an_engine_elsewhere_fails_with_the_fix(elefast_database):
        url = os.environ["ELEFAST_DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://", 1)
        stray = sqlalchemy.create_engine(url)  # the server's own postgres database
        with pytest.raises(GuardError, match="elefast_app_engines fixture"):
            stray.connect()
        stray.dispose()


    def test_the_tests_own_database_passes(elefast_database):
        with elefast_database.engine.connect() as connection:
            assert connection.exec_driver_sql("select 1").scalar() == 1
''')


def pytest_run(*args, cwd, env=None):
    env = dict(os.environ, PYTHONPATH=f"{cwd}{os.pathsep}{support.ROOT}", **(env or {}))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=str(cwd),
                          env=env, capture_output=True, text=True, timeout=300)


@unittest.skipUnless(importlib.util.find_spec("pytest"), "pytest is not installed")
class PytestTests(unittest.TestCase):
    def test_mixins_run_unchanged_under_pytest(self):
        """pytest collects the example's unittest classes and runs them green."""
        result = pytest_run("examples/legacy_app/tests", cwd=support.ROOT)
        self.assertEqual(result.returncode, 0, result.stdout[-3000:])
        self.assertIn("31 passed", result.stdout)

    @unittest.skipUnless(importlib.util.find_spec("pytest_asyncio"), "pytest-asyncio is not installed")
    def test_plugin_fixtures(self):
        """The fixtures, found through the pytest11 entry point: sync and async, each test isolated."""
        project = Path(tempfile.mkdtemp(prefix="elefast-pytest-"))
        self.addCleanup(shutil.rmtree, project, ignore_errors=True)
        (project / "conftest.py").write_text(CONFTEST)
        (project / "test_things.py").write_text(TESTS)
        before = support.databases("elefast!_%")
        result = pytest_run(cwd=project)
        self.assertEqual(result.returncode, 0, result.stdout[-3000:] + result.stderr[-2000:])
        self.assertIn("5 passed", result.stdout)
        left = [name for name in support.databases("elefast!_%") if name not in before and "_tpl_" not in name]
        self.assertEqual(left, [])

    def test_app_engines_fixture(self):
        """Overriding ``elefast_app_engines`` steers an import-time engine onto each test's database."""
        project = Path(tempfile.mkdtemp(prefix="elefast-pytest-"))
        self.addCleanup(shutil.rmtree, project, ignore_errors=True)
        (project / "conftest.py").write_text(APP_CONFTEST)
        (project / "test_app.py").write_text(APP_TESTS)
        result = pytest_run(cwd=project)
        self.assertEqual(result.returncode, 0, result.stdout[-3000:] + result.stderr[-2000:])
        self.assertIn("2 passed", result.stdout)

    def test_the_guard_under_pytest(self):
        """``ELEFAST_GUARD=1`` guards the plugin's tests as it guards the mixins'."""
        project = Path(tempfile.mkdtemp(prefix="elefast-pytest-"))
        self.addCleanup(shutil.rmtree, project, ignore_errors=True)
        (project / "conftest.py").write_text(APP_CONFTEST)
        (project / "test_guarded.py").write_text(GUARDED_TESTS)
        result = pytest_run(cwd=project, env={"ELEFAST_GUARD": "1"})
        self.assertEqual(result.returncode, 0, result.stdout[-3000:] + result.stderr[-2000:])
        self.assertIn("2 passed", result.stdout)

    def test_plugin_is_registered(self):
        """``pytest --fixtures`` lists elefast's fixtures with their docstrings."""
        empty = Path(tempfile.mkdtemp(prefix="elefast-pytest-"))
        self.addCleanup(shutil.rmtree, empty, ignore_errors=True)
        result = pytest_run("--fixtures", cwd=empty)
        for name in ("elefast_server", "elefast_database", "elefast_session", "elefast_async_session"):
            self.assertIn(name, result.stdout)


if __name__ == "__main__":
    unittest.main()
