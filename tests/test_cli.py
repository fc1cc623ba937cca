"""``python -m elefast init``, run through subprocess like a user runs them.

(``server`` is tested in test_provision.py, ``sweep`` in test_ownership.py, ``doctor`` in
test_cli_doctor.py, the parser, timeouts and logging in test_cli_commands.py.)
"""

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest
from pathlib import Path

from tests import support

MODELS = textwrap.dedent('''
    from sqlalchemy import String
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


    class Base(DeclarativeBase):
        pass


    class Thing(Base):
        __tablename__ = "things"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(String(50))
''')

FIRST_TEST = textwrap.dedent('''
    import unittest

    from sqlalchemy import func, select

    from myapp.models import Thing
    from tests.base import DatabaseTestCase


    class ThingTests(DatabaseTestCase):
        def test_add(self):
            self.session.add(Thing(name="first"))
            self.session.commit()
            self.assertEqual(self.session.scalar(select(func.count(Thing.id))), 1)

        def test_fresh(self):
            self.assertEqual(self.session.scalar(select(func.count(Thing.id))), 0)
''')


def elefast(*args, cwd, env=None, timeout=120):
    """Run ``python -m elefast ARGS`` in ``cwd`` with stdin not a terminal."""
    full_env = dict(os.environ, PYTHONPATH=str(support.ROOT))
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "elefast", *args], cwd=str(cwd), env=full_env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout)


class InitTests(unittest.TestCase):
    def setUp(self):
        self.project = Path(tempfile.mkdtemp(prefix="elefast-init-"))
        self.addCleanup(shutil.rmtree, self.project, ignore_errors=True)

    def run_first_test(self):
        """The user's first test, on the written base module, with python -m unittest."""
        tests = self.project / "tests"
        (tests / "__init__.py").touch()
        (tests / "test_first.py").write_text(FIRST_TEST)
        env = dict(os.environ, PYTHONPATH=f"{self.project}{os.pathsep}{support.ROOT}")
        return subprocess.run([sys.executable, "-m", "unittest", "-v"], cwd=str(self.project), env=env,
                              capture_output=True, text=True, timeout=180)

    def test_models_project_gets_a_metadata_base_and_a_green_first_test(self):
        """A project with a declarative Base: init finds it, writes tests/base.py, a first test runs green."""
        (self.project / "myapp").mkdir()
        (self.project / "myapp" / "__init__.py").touch()
        (self.project / "myapp" / "models.py").write_text(MODELS)
        result = elefast("init", cwd=self.project)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("SQLAlchemy models (myapp.models:Base.metadata, myapp/models.py", result.stdout)
        self.assertIn("wrote tests/base.py", result.stdout)
        written = (self.project / "tests" / "base.py").read_text()
        self.assertIn("from myapp.models import Base", written)
        self.assertIn("SCHEMA = MetadataMigrator(Base.metadata)", written)
        self.assertIn("class AsyncDatabaseTestCase", written)  # asyncpg is installed here
        compile(written, "base.py", "exec")
        run = self.run_first_test()
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        self.assertIn("Ran 2 tests", run.stderr)

    def test_an_engine_built_at_import_is_found_and_steered(self):
        """``engine = create_engine(settings...)`` in the app: the base class lists it in app_engines, and
        the app's own code then runs on each test's database (its URL names a host that does not exist)."""
        (self.project / "myapp").mkdir()
        (self.project / "myapp" / "__init__.py").touch()
        (self.project / "myapp" / "models.py").write_text(MODELS)
        (self.project / "myapp" / "db.py").write_text(textwrap.dedent('''
            from sqlalchemy import create_engine, text

            engine = create_engine("postgresql+psycopg://app:secret@db.invalid:5432/app")


            def where():
                with engine.connect() as connection:
                    return connection.execute(text("select current_database()")).scalar()
        '''))
        result = elefast("init", cwd=self.project)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("engine:  myapp.db:engine is built when imported", result.stdout)
        self.assertIn("app_engines = ('myapp.db:engine',)", (self.project / "tests" / "base.py").read_text())
        tests = self.project / "tests"
        (tests / "__init__.py").touch()
        (tests / "test_where.py").write_text(textwrap.dedent('''
            from myapp.db import where
            from tests.base import DatabaseTestCase


            class WhereTests(DatabaseTestCase):
                def test_the_apps_engine_is_on_this_tests_database(self):
                    self.assertEqual(where(), self.database.name)
        '''))
        env = dict(os.environ, PYTHONPATH=f"{self.project}{os.pathsep}{support.ROOT}")
        run = subprocess.run([sys.executable, "-m", "unittest", "-v"], cwd=str(self.project), env=env,
                             capture_output=True, text=True, timeout=180)
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        self.assertIn("Ran 1 test", run.stderr)

    def test_pytest_output_warns_of_fixtures_it_would_replace(self):
        (self.project / "tests").mkdir()
        (self.project / "tests" / "conftest.py").write_text("import pytest\n\n@pytest.fixture\ndef db():\n    pass\n")
        result = elefast("init", "--pytest", cwd=self.project)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("warning: tests/conftest.py: db is already a fixture", result.stderr)
        self.assertIn("def db(", result.stdout)  # the fixtures are still written, to stdout

    def test_alembic_project_gets_an_alembic_base(self):
        """A project with alembic.ini: the base module points at it relative to itself."""
        shutil.copytree(support.ROOT / "tests" / "alembic_project", self.project, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
        result = elefast("init", "--path", "tests/unit/base.py", cwd=self.project)
        self.assertEqual(result.returncode, 0, result.stderr)
        written = (self.project / "tests" / "unit" / "base.py").read_text()
        self.assertIn('AlembicMigrator(Path(__file__).resolve().parent.parent.parent / "alembic.ini")', written)
        namespace = {"__file__": str(self.project / "tests" / "unit" / "base.py")}
        exec(compile(written, "base.py", "exec"), namespace)  # the path resolves to the real alembic.ini
        self.assertEqual(Path(namespace["SCHEMA"].config_path), self.project / "alembic.ini")

    def test_empty_project_and_no_overwrite(self):
        """Nothing to find: SCHEMA = None with a hint; a second init refuses to overwrite without --force."""
        first = elefast("init", cwd=self.project)
        self.assertEqual(first.returncode, 0, first.stderr)
        self.assertIn("SCHEMA = None", (self.project / "tests" / "base.py").read_text())
        again = elefast("init", cwd=self.project)
        self.assertEqual(again.returncode, 1)
        self.assertIn("--force", again.stderr)
        forced = elefast("init", "--force", cwd=self.project)
        self.assertEqual(forced.returncode, 0, forced.stderr)


class ConsoleScriptTests(unittest.TestCase):
    def test_elefast_script_runs_help(self):
        """The ``elefast`` console script is installed and lists every command."""
        script = Path(sys.executable).parent / "elefast"
        if not script.exists():
            self.skipTest("the elefast console script is not installed in this environment")
        result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        for command in ("server", "sweep", "init", "doctor"):
            self.assertIn(command, result.stdout)


if __name__ == "__main__":
    unittest.main()


class RunTests(unittest.TestCase):
    """``run --env NAME -- command``: a scratch database for apps that connect when imported."""

    def test_the_command_gets_a_scratch_database_that_is_gone_afterwards(self):
        probe = ("import os, sqlalchemy as sa; e = sa.create_engine(os.environ['SCRATCH_URL']); "
                 "c = e.connect(); print(c.exec_driver_sql('select current_database()').scalar()); "
                 "print(os.environ['ELEFAST_DATABASE_URL']); c.close(); raise SystemExit(3)")
        result = elefast("run", "--env", "SCRATCH_URL", "--url", support.server_url(), "--",
                         sys.executable, "-c", probe, cwd=support.ROOT,
                         env={"ELEFAST_DATABASE_URL": support.server_url()})
        self.assertEqual(result.returncode, 3, result.stderr)  # the command's own exit code
        name, server = result.stdout.split()
        self.assertRegex(name, r"^elefast_scratch_[0-9a-f]{16}$")
        self.assertEqual(server, support.server_url())  # set already: left as it was
        self.assertNotIn(name, support.databases("elefast_scratch%"))

    def test_on_the_local_server_the_url_has_a_host(self):
        """The throwaway server's URL names its socket in the query (no host); apps' settings
        validators (pydantic's PostgresDsn) reject that, so ``run`` gives its TCP URL, in the driver asked."""
        probe = ("import os, psycopg; url = os.environ['DATABASE_URL']; print(url.split('@')[1]); "
                 "c = psycopg.connect(url); print(c.execute('select current_database()').fetchone()[0]); c.close()")
        result = elefast("run", "--driver", "libpq", "--", sys.executable, "-c", probe, cwd=support.ROOT,
                         env={"ELEFAST_DATABASE_URL": "", "ELEFAST_SERVER": "local"}, timeout=300)
        self.assertEqual(result.returncode, 0, result.stderr)
        where, name = result.stdout.split()
        self.assertRegex(where, r"^127\.0\.0\.1:[0-9]+/elefast_scratch_[0-9a-f]{16}$")
        self.assertEqual(where.split("/")[1], name)

    def test_no_command(self):
        result = elefast("run", "--url", support.server_url(), cwd=support.ROOT)
        self.assertEqual(result.returncode, 2)
        self.assertIn("give the command after --", result.stderr)
