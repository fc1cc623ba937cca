"""``python -m elefast init`` on a tiny project per SQLAlchemy 2 style, then the suite it wrote, run.

Each project's app builds its engine when imported, pointed at a host that does not exist: a
generated suite that did not steer it would fail to connect. The sample tests also check that the
app's connections reached the test's own database (its name, and rows the test's session sees).
Run as a user runs them: init in a subprocess, its output where the docs say (``tests/base.py``;
``init --pytest >> tests/conftest.py``), then ``python -m unittest`` or ``pytest`` in a subprocess.
"""

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest
from pathlib import Path
from typing import Dict, List

from elefast._cli import finder
from tests import support

NOWHERE = "nobody@unreachable.invalid/db"  # the app's own URL: a host that does not exist

#: src/ layout; MappedAsDataclass beside DeclarativeBase, on a MetaData of its own; models in another module;
#: an async engine built at import.
DATACLASS_ASYNC = {
    "src/notes/__init__.py": "",
    "src/notes/database.py": '''
        from sqlalchemy import MetaData
        from sqlalchemy.orm import DeclarativeBase, MappedAsDataclass

        convention = MetaData(naming_convention={"pk": "pk_%(table_name)s"})


        class Base(MappedAsDataclass, DeclarativeBase):
            metadata = convention
    ''',
    "src/notes/models.py": '''
        from sqlalchemy import String
        from sqlalchemy.orm import Mapped, mapped_column

        from notes.database import Base


        class Note(Base):
            __tablename__ = "notes"
            id: Mapped[int] = mapped_column(primary_key=True, init=False)
            body: Mapped[str] = mapped_column(String(200))
    ''',
    "src/notes/db.py": f'''
        from sqlalchemy import text
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine("postgresql+asyncpg://{NOWHERE}")


        async def where_and_count():
            async with engine.connect() as connection:
                name = (await connection.execute(text("select current_database()"))).scalar()
                return name, (await connection.execute(text("select count(*) from notes"))).scalar()
    ''',
}

#: The app's sync engine and a function that writes through it (used by the sync projects below).
SYNC_DB = f'''
    from sqlalchemy import create_engine, text

    engine = create_engine("postgresql+psycopg://{NOWHERE}")


    def where_and_count(table):
        with engine.begin() as connection:
            connection.execute(text(f"insert into {{table}} (body) values ('from the app')"))
            name = connection.execute(text("select current_database()")).scalar()
            return name, connection.execute(text(f"select count(*) from {{table}}")).scalar()
'''

REGISTRY = {
    "shop/__init__.py": "",
    "shop/orm.py": "from sqlalchemy.orm import registry\n\nmapper_registry = registry()\n",
    "shop/models.py": '''
        from sqlalchemy import String
        from sqlalchemy.orm import Mapped, mapped_column

        from shop.orm import mapper_registry


        @mapper_registry.mapped
        class Note:
            __tablename__ = "notes"
            id: Mapped[int] = mapped_column(primary_key=True)
            body: Mapped[str] = mapped_column(String(200))
    ''',
    "shop/db.py": SYNC_DB,
}

DECLARATIVE_BASE = {
    "legacy/__init__.py": "",
    "legacy/models.py": '''
        from sqlalchemy import Column, Integer, String
        from sqlalchemy.orm import declarative_base

        Base = declarative_base()


        class Note(Base):
            __tablename__ = "notes"
            id = Column(Integer, primary_key=True)
            body = Column(String(200))
    ''',
    "legacy/db.py": SYNC_DB,
}

FLASK = {
    "blog/__init__.py": "",
    "blog/extensions.py": "from flask_sqlalchemy import SQLAlchemy\n\ndb = SQLAlchemy()\n",
    "blog/models.py": '''
        from blog.extensions import db


        class Note(db.Model):
            __tablename__ = "notes"
            id = db.Column(db.Integer, primary_key=True)
            body = db.Column(db.String(200))
    ''',
    "blog/app.py": f'''
        from flask import Flask

        from blog.extensions import db

        app = Flask(__name__)
        app.config["SQLALCHEMY_DATABASE_URI"] = "postgresql+psycopg://{NOWHERE}"
        db.init_app(app)
    ''',
}

SQLMODEL = {
    "heroes/__init__.py": "",
    "heroes/models/__init__.py": "",
    "heroes/models/hero.py": '''
        from typing import Optional

        from sqlmodel import Field, SQLModel


        class Note(SQLModel, table=True):
            __tablename__ = "notes"
            id: Optional[int] = Field(default=None, primary_key=True)
            body: str
    ''',
    "heroes/models/team.py": '''
        from typing import Optional

        import sqlmodel


        class Team(sqlmodel.SQLModel, table=True):
            id: Optional[int] = sqlmodel.Field(default=None, primary_key=True)
            name: str
    ''',
    "heroes/db.py": SYNC_DB.replace("from sqlalchemy import create_engine, text",
                                    "from sqlalchemy import text\n    from sqlmodel import create_engine"),
}

#: Two MetaData: a declarative base and a plain MetaData with a Table.
TWO_SCHEMAS = {
    "two/__init__.py": "",
    "two/orm.py": "from sqlalchemy.orm import DeclarativeBase\n\n\nclass Base(DeclarativeBase):\n    pass\n",
    "two/reports.py": '''
        from sqlalchemy import Column, Integer, MetaData, String, Table

        reporting = MetaData()
        notes = Table("notes", reporting, Column("id", Integer, primary_key=True), Column("body", String(200)))
    ''',
    "two/db.py": SYNC_DB,
}

UNITTEST_SYNC = '''
    from sqlalchemy import text

    from {db} import where_and_count
    from tests.base import DatabaseTestCase


    class AppEngineTests(DatabaseTestCase):
        def test_the_apps_engine_writes_to_this_tests_database(self):
            self.assertEqual(where_and_count("notes"), (self.database.name, 1))
            self.assertEqual(self.session.execute(text("select body from notes")).scalar(), "from the app")

        def test_each_test_starts_empty(self):
            self.assertEqual(self.session.execute(text("select count(*) from notes")).scalar(), 0)
'''

PYTEST_SYNC = '''
    from sqlalchemy import text

    from {db} import where_and_count


    def test_the_apps_engine_writes_to_this_tests_database(db, db_session):
        assert where_and_count("notes") == (db.name, 1)
        assert db_session.execute(text("select body from notes")).scalar() == "from the app"


    def test_each_test_starts_empty(db_connection):
        assert db_connection.execute(text("select count(*) from notes")).scalar() == 0
'''


def write(root: Path, files: Dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


@support.once_per_ci
class InitStyleTests(unittest.TestCase):
    def project(self, files: Dict[str, str]) -> Path:
        root = Path(tempfile.mkdtemp(prefix="elefast-init-style-"))
        self.addCleanup(shutil.rmtree, root, ignore_errors=True)
        write(root, files)
        (root / "tests").mkdir(exist_ok=True)
        (root / "tests" / "__init__.py").touch()
        return root

    def env(self, root: Path) -> Dict[str, str]:
        paths = [str(root / "src"), str(root)] if (root / "src").is_dir() else [str(root)]
        return dict(os.environ, PYTHONPATH=os.pathsep.join([*paths, str(support.ROOT)]),
                    ELEFAST_DATABASE_URL=support.server_url(), ELEFAST_GUARD="1")

    def init(self, root: Path, *args: str, code: int = 0) -> subprocess.CompletedProcess:
        made = subprocess.run([sys.executable, "-m", "elefast", "init", *args], cwd=root, env=self.env(root),
                              capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
        self.assertEqual(made.returncode, code, made.stdout + made.stderr)
        return made

    def conftest(self, root: Path, *args: str) -> str:
        """``init --pytest ARGS >> tests/conftest.py``, as pytest.md says."""
        made = self.init(root, "--pytest", *args)
        with open(root / "tests" / "conftest.py", "a") as conftest:
            conftest.write(made.stdout)
        return made.stderr

    def run_suite(self, root: Path, command: List[str], expected: str) -> None:
        run = subprocess.run([sys.executable, "-m", *command], cwd=root, env=self.env(root), capture_output=True,
                             text=True, timeout=300)
        output = run.stdout + run.stderr
        self.assertEqual(run.returncode, 0, output[-4000:])
        self.assertIn(expected, output)
        self.assertNotIn("unreachable.invalid", output)

    def run_pytest(self, root: Path, expected: str) -> None:
        self.run_suite(root, ["pytest", "-q", "-p", "no:cacheprovider", "tests"], expected)

    def run_unittest(self, root: Path, expected: str) -> None:
        self.run_suite(root, ["unittest", "-v"], expected)

    def test_src_layout_dataclass_base_async_engine_pytest_async(self):
        root = self.project(DATACLASS_ASYNC)
        notes = self.conftest(root, "--async")
        self.assertIn("notes.database:Base.metadata", notes)  # not src.notes...
        self.assertIn("engine:  notes.db:engine is built when imported", notes)
        write(root, {"tests/test_notes.py": '''
            import pytest
            from sqlalchemy import text

            from notes.db import where_and_count
            from notes.models import Note


            @pytest.mark.asyncio
            async def test_the_apps_engine_reads_this_tests_database(db, db_session):
                db_session.add(Note(body="from the test"))
                await db_session.commit()
                assert await where_and_count() == (db.name, 1)


            @pytest.mark.asyncio
            async def test_each_test_starts_empty(db_connection):
                assert (await db_connection.execute(text("select count(*) from notes"))).scalar() == 0
        '''})
        self.run_pytest(root, "2 passed")

    def test_src_layout_dataclass_base_async_engine_unittest(self):
        root = self.project(DATACLASS_ASYNC)
        written = self.init(root).stdout
        self.assertIn("SQLAlchemy models (notes.database:Base.metadata", written)
        self.assertIn("tables also from notes.models", written)
        write(root, {"tests/test_notes.py": '''
            from notes.db import where_and_count
            from notes.models import Note
            from tests.base import AsyncDatabaseTestCase


            class NoteTests(AsyncDatabaseTestCase):
                async def test_the_apps_engine_reads_this_tests_database(self):
                    self.session.add(Note(body="from the test"))
                    await self.session.commit()
                    self.assertEqual(await where_and_count(), (self.database.name, 1))
        '''})
        self.run_unittest(root, "Ran 1 test")

    def test_registry_pytest_sync(self):
        root = self.project(REGISTRY)
        notes = self.conftest(root)
        self.assertIn("shop.orm:mapper_registry.metadata", notes)
        write(root, {"tests/test_notes.py": PYTEST_SYNC.format(db="shop.db")})
        self.run_pytest(root, "2 passed")

    def test_declarative_base_unittest_sync(self):
        root = self.project(DECLARATIVE_BASE)
        self.assertIn("legacy.models:Base.metadata", self.init(root).stdout)
        write(root, {"tests/test_notes.py": UNITTEST_SYNC.format(db="legacy.db")})
        self.run_unittest(root, "Ran 2 tests")

    @unittest.skipUnless(importlib.util.find_spec("flask_sqlalchemy"), "Flask-SQLAlchemy is not installed")
    def test_flask_sqlalchemy_pytest_sync_and_unittest(self):
        root = self.project(FLASK)
        notes = self.conftest(root)
        self.assertIn("blog.extensions:db.metadata", notes)
        self.assertIn("engine:  blog.extensions:db is built when imported", notes)
        check = '''
            from sqlalchemy import text

            from blog.app import app
            from blog.extensions import db


            def where_and_count(table):
                with app.app_context():
                    db.session.execute(text(f"insert into {table} (body) values ('from the app')"))
                    db.session.commit()
                    name = db.session.execute(text("select current_database()")).scalar()
                    return name, db.session.execute(text(f"select count(*) from {table}")).scalar()
        '''
        write(root, {"blog/check.py": check, "tests/test_notes.py": PYTEST_SYNC.format(db="blog.check")})
        self.run_pytest(root, "2 passed")
        (root / "tests" / "conftest.py").unlink()
        self.init(root)
        (root / "tests" / "test_notes.py").write_text(textwrap.dedent(UNITTEST_SYNC.format(db="blog.check")))
        self.run_unittest(root, "Ran 2 tests")

    @unittest.skipUnless(importlib.util.find_spec("sqlmodel"), "SQLModel is not installed")
    def test_sqlmodel_unittest_sync(self):
        root = self.project(SQLMODEL)
        written = self.init(root).stdout
        self.assertIn("sqlmodel:SQLModel.metadata", written)
        base = (root / "tests" / "base.py").read_text()
        self.assertIn("import heroes.models.hero", base)
        self.assertIn("import heroes.models.team", base)  # every module with tables, each imported
        write(root, {"tests/test_notes.py": UNITTEST_SYNC.format(db="heroes.db") + '''

    class TeamTests(DatabaseTestCase):
        def test_the_other_modules_tables_are_there(self):
            self.assertEqual(self.session.execute(text("select count(*) from team")).scalar(), 0)
'''})
        self.run_unittest(root, "Ran 3 tests")

    def test_several_schemas_are_listed_and_schema_chooses(self):
        root = self.project(TWO_SCHEMAS)
        refused = self.init(root, code=2)
        self.assertIn("--schema two.orm:Base.metadata", refused.stderr)
        self.assertIn("--schema two.reports:reporting", refused.stderr)
        self.assertFalse((root / "tests" / "base.py").exists())
        self.assertEqual(self.init(root, "--pytest", code=2).stdout, "")  # nothing to append to a conftest
        bad = self.init(root, "--schema", "two/reports.py", code=2)
        self.assertIn("MODULE:ATTR", bad.stderr)
        chosen = self.init(root, "--schema", "two.reports:reporting")
        self.assertIn("two.reports:reporting", chosen.stdout)
        write(root, {"tests/test_notes.py": UNITTEST_SYNC.format(db="two.db")})
        self.run_unittest(root, "Ran 2 tests")


class FinderTests(unittest.TestCase):
    """What the finder reads, without running anything."""

    def test_each_style_and_module_names(self):
        with tempfile.TemporaryDirectory() as directory:
            root = Path(directory)
            write(root, {**DATACLASS_ASYNC, **REGISTRY, **DECLARATIVE_BASE, **FLASK, **SQLMODEL, **TWO_SCHEMAS,
                         "tests/test_x.py": "from sqlalchemy import MetaData\nm = MetaData()\n",
                         "not-a-package/x.py": "from sqlalchemy import MetaData\nm = MetaData()\n"})
            project = finder.detect(root)
            self.assertEqual(sorted(candidate.spec for candidate in project.candidates), [
                "blog.extensions:db.metadata", "legacy.models:Base.metadata", "notes.database:Base.metadata",
                "shop.orm:mapper_registry.metadata", "sqlmodel:SQLModel.metadata", "two.orm:Base.metadata",
                "two.reports:reporting"])
            self.assertIsNone(project.schema)  # several: none chosen
            self.assertTrue(project.src_layout)
            self.assertIn("notes.db:engine", project.async_engines)
            self.assertEqual(finder.detect(root, "two.orm:Base").schema.spec, "two.orm:Base.metadata")
            with self.assertRaises(ValueError):
                finder.detect(root, "two.orm")

    def test_engines_it_reports_are_the_ones_it_can_steer(self):
        """A sqlite engine is named as left alone; an Alembic env.py's is not the app's; settings' URLs count."""
        with tempfile.TemporaryDirectory() as directory:
            root = Path(directory)
            write(root, {"app/__init__.py": "", "app/db.py": '''
                from sqlalchemy import create_engine
                from app.settings import URL

                engine = create_engine(URL)
                cache = create_engine("sqlite:///cache.db")
                other = create_engine('postgresql://u@h/d')
            ''', "migrations/script.py.mako": "", "migrations/env.py": "engine = create_engine(url)\n",
                "migrations/versions/0001_first.py": "engine = create_engine(url)\n"})
            project = finder.detect(root)
            self.assertEqual(project.app_engines, ["app.db:engine", "app.db:other"])
            self.assertEqual(project.other_engines, ["app.db:cache (sqlite)"])

    def test_flask_sqlalchemy_on_a_base_of_its_own(self):
        """``SQLAlchemy(model_class=Base)``: one candidate (db.metadata is Base's), its models modules found;
        ``SQLAlchemy(metadata=MetaData(...))`` is found too."""
        with tempfile.TemporaryDirectory() as directory:
            root = Path(directory)
            write(root, {"app/__init__.py": "", "app/ext.py": '''
                from flask_sqlalchemy import SQLAlchemy
                from sqlalchemy.orm import DeclarativeBase, MappedAsDataclass


                class Base(MappedAsDataclass, DeclarativeBase):
                    pass


                db = SQLAlchemy(model_class=Base)
            ''', "app/models.py": "from app.ext import db\n\n\nclass Note(db.Model):\n    pass\n"})
            project = finder.detect(root)
            self.assertEqual([candidate.spec for candidate in project.candidates], ["app.ext:db.metadata"])
            self.assertEqual(project.schema.model_modules, ["app.models"])
            (root / "app" / "ext.py").write_text("from flask_sqlalchemy import SQLAlchemy\nfrom sqlalchemy import "
                                                 "MetaData\n\ndb = SQLAlchemy(metadata=MetaData(schema='x'))\n")
            self.assertEqual(finder.detect(root).schema.spec, "app.ext:db.metadata")


if __name__ == "__main__":
    unittest.main()
