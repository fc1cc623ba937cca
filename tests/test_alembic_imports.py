"""AlembicMigrator's fingerprint covers the project modules that env.py and the revisions import.

A data migration that does ``from <app>.constants import ROLES`` inserts what that module says:
editing the constant must build a new template (before, the old one was reused and the tests saw
the old roles).
"""

import contextlib
import io
import json
import shutil
import tempfile
import textwrap
import unittest
import uuid
from pathlib import Path

from alembic import command
from alembic.config import Config

from elefast._schema.fingerprints import identity
from elefast._schema.imports import project_imports
from elefast.extras.alembic import AlembicMigrator
from tests import support

REVISION = '''
"""Roles, from the app's constants."""
from alembic import op
import sqlalchemy as sa

from {package}.constants import ROLES

revision = "r1"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    table = op.create_table("roles", sa.Column("name", sa.String(40), primary_key=True))
    op.bulk_insert(table, [{{"name": name}} for name in ROLES])


def downgrade():
    op.drop_table("roles")
'''

RUN = '''
import json, sys
sys.path.insert(0, {root!r})
from sqlalchemy import text
from elefast import DatabaseServer
from elefast.extras.alembic import AlembicMigrator
server = DatabaseServer({url!r}, schema=AlembicMigrator({ini!r}))
with server.create_database(prefix={prefix!r}) as database, database.engine.connect() as connection:
    print(json.dumps(sorted(connection.execute(text("SELECT name FROM roles")).scalars())))
server.close()
'''


class AlembicImportsTests(unittest.TestCase):
    def setUp(self):
        self.root = Path(tempfile.mkdtemp(prefix="elefast-alembic-imports-"))
        self.addCleanup(shutil.rmtree, self.root, True)
        self.package = f"eftapp_{uuid.uuid4().hex[:8]}"
        (self.root / self.package).mkdir()
        (self.root / self.package / "__init__.py").write_text("")
        self.constants = self.root / self.package / "constants.py"
        self.constants.write_text('ROLES = ["admin", "user"]\n')
        self.ini = self.root / "alembic.ini"
        with contextlib.redirect_stdout(io.StringIO()):
            command.init(Config(str(self.ini)), str(self.root / "migrations"))
        env_py = self.root / "migrations" / "env.py"  # alembic init's env.py, made to share elefast's connection
        env_py.write_text(textwrap.dedent('''
            from alembic import context
            connection = context.config.attributes["connection"]
            context.configure(connection=connection, target_metadata=None)
            with context.begin_transaction():
                context.run_migrations()
        '''))
        (self.root / "migrations" / "versions" / "r1_roles.py").write_text(REVISION.format(package=self.package))
        self.prefix = support.unique_prefix("aimp")
        self.addCleanup(support.drop_templates, self.prefix)

    def fingerprint(self):
        import sys

        sys.path.insert(0, str(self.root))
        try:
            found, why = identity(AlembicMigrator(str(self.ini)))
        finally:
            sys.path.remove(str(self.root))
        self.assertIsNotNone(found, why)
        return found

    def test_the_imported_module_is_found_and_fingerprinted(self):
        import sys

        sys.path.insert(0, str(self.root))
        try:
            found = project_imports([self.root / "migrations" / "versions" / "r1_roles.py"])
        finally:
            sys.path.remove(str(self.root))
        self.assertEqual(found.get(f"{self.package}.constants"), self.constants.resolve())
        self.assertNotIn("sqlalchemy", " ".join(found))  # installed libraries are not the project's
        before = self.fingerprint()
        self.assertEqual(self.fingerprint(), before)
        self.constants.write_text('ROLES = ["admin", "auditor", "user"]\n')
        self.assertNotEqual(self.fingerprint(), before)

    def test_a_package_that_a_finder_provides_is_fingerprinted(self):
        """A project importable through a meta-path finder (as a setuptools editable install makes
        it), not a sys.path entry: its modules are found without being imported, and fingerprinted."""
        import importlib.abc
        import importlib.util
        import sys

        package, directory = self.package, self.root / self.package

        class EditableFinder(importlib.abc.MetaPathFinder):
            def find_spec(self, fullname, path=None, target=None):
                if fullname != package:
                    return None
                return importlib.util.spec_from_file_location(
                    fullname, directory / "__init__.py", submodule_search_locations=[str(directory)])

        finder = EditableFinder()
        sys.meta_path.append(finder)
        self.addCleanup(sys.meta_path.remove, finder)
        self.assertNotIn(str(self.root), sys.path)
        found = project_imports([self.root / "migrations" / "versions" / "r1_roles.py"])
        self.assertEqual(found.get(f"{package}.constants"), self.constants.resolve())
        self.assertNotIn(package, sys.modules)  # found, not imported
        self.assertEqual(sorted(found), [f"{package}.constants"])  # not alembic nor sqlalchemy, installed
        before, why = identity(AlembicMigrator(str(self.ini)))
        self.assertIsNotNone(before, why)
        self.assertEqual(identity(AlembicMigrator(str(self.ini)))[0], before)
        self.constants.write_text('ROLES = ["admin", "auditor", "user"]\n')
        self.assertNotEqual(identity(AlembicMigrator(str(self.ini)))[0], before)

    def test_editing_the_constant_between_runs_builds_a_new_template(self):
        def roles():
            result = support.run_python(RUN.format(root=str(self.root), url=support.server_url(), ini=str(self.ini),
                                                   prefix=self.prefix))
            self.assertEqual(result.returncode, 0, result.stderr[-2000:])
            return json.loads(result.stdout.strip().splitlines()[-1])

        self.assertEqual(roles(), ["admin", "user"])
        self.constants.write_text('ROLES = ["admin", "auditor", "user"]\n')
        self.assertEqual(roles(), ["admin", "auditor", "user"])  # before: ['admin', 'user'], the old template


if __name__ == "__main__":
    unittest.main()
