"""A PostgreSQL version matrix: each class once per major version, on that version's throwaway
server, the version in the test ids; a version not here is listed in the skip reason, never
silently left out. Real servers (the machine's PostgreSQL 15, the wheel's 18), in child processes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest
from pathlib import Path

from elefast import PostgresTestCase
from elefast.errors import ConfigurationError
from elefast.provision import versions
from tests import support

SUITE = textwrap.dedent('''
    import unittest
    import sqlalchemy as sa
    from elefast import AsyncPostgresTestCase, MetadataMigrator, PostgresTestCase

    metadata = sa.MetaData()
    sa.Table("things", metadata, sa.Column("id", sa.Integer, primary_key=True))


    class Base(PostgresTestCase, unittest.TestCase):  # no tests: not copied, its subclasses are
        schema = MetadataMigrator(metadata)


    class VersionTests(Base):
        def test_the_class_pickles(self):  # unittest-parallel sends tests to its workers by pickle
            import pickle

            self.assertIs(pickle.loads(pickle.dumps(type(self))), type(self))

        def test_version(self):
            number = self.session.execute(sa.text("show server_version_num")).scalar()
            print("VERSION", type(self).__name__, number, flush=True)
            self.session.execute(sa.text("insert into things default values"))
            self.session.commit()


    class AsyncVersionTests(AsyncPostgresTestCase, unittest.IsolatedAsyncioTestCase):
        schema = MetadataMigrator(metadata)
        postgres_versions = (18,)  # the class's own list wins over the environment's

        async def test_version(self):
            number = (await self.session.execute(sa.text("show server_version_num"))).scalar()
            print("VERSION", type(self).__name__, number, flush=True)
''')


class VersionMatrixTests(unittest.TestCase):
    def run_suite(self, env, *extra):
        directory = tempfile.mkdtemp(prefix="elefast-matrix-")
        self.addCleanup(shutil.rmtree, directory, True)
        Path(directory, "test_matrix_suite.py").write_text(SUITE)
        full = dict(os.environ, ELEFAST_DATABASE_URL="", PYTHONPATH=str(support.ROOT), **env)
        return subprocess.run([sys.executable, "-m", "unittest", "-v", *extra, "test_matrix_suite"], cwd=directory,
                              env=full, capture_output=True, text=True, timeout=600)

    def test_each_class_runs_once_per_version_and_a_missing_one_is_listed(self):
        found = versions.available()
        missing = next(major for major in range(10, 40) if major not in found)
        asked = [*sorted(found)[:2], missing]
        result = self.run_suite({"ELEFAST_POSTGRES_VERSIONS": ",".join(map(str, asked))})
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        # unittest's verbose lines: "test_version (module.Class.test_version) ... ok" (3.11+),
        # "test_version (module.Class) ... ok" before
        for major in asked[:-1]:
            self.assertRegex(result.stderr, rf"test_matrix_suite\.VersionTests_pg{major}(\.test_version)?\) \.\.\. ok")
            self.assertRegex(result.stdout, rf"VERSION VersionTests_pg{major} {major}\d{{4}}")
        self.assertRegex(result.stderr, rf"VersionTests_pg{missing}(\.test_version)?\) \.\.\. skipped ")
        self.assertIn(f"PostgreSQL {missing} is not on this machine (found: ", result.stderr)
        self.assertNotIn("test_matrix_suite.Base", result.stderr)
        self.assertNotRegex(result.stderr, r"\.VersionTests(\.test_version)?\)")  # only the copies run
        if 18 in found:
            self.assertRegex(result.stdout, r"VERSION AsyncVersionTests_pg18 18\d{4}")
            self.assertNotIn("AsyncVersionTests_pg15", result.stderr)

    def test_a_missing_first_version_skips_only_its_own_copy(self):
        found = versions.available()
        missing = next(major for major in range(10, 40) if major not in found)
        present = sorted(found)[0]
        result = self.run_suite({"ELEFAST_POSTGRES_VERSIONS": f"{missing},{present}"})
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        self.assertRegex(result.stderr, rf"VersionTests_pg{missing}(\.test_version)?\) \.\.\. skipped ")
        self.assertRegex(result.stderr, rf"VersionTests_pg{present}(\.test_version)?\) \.\.\. ok")
        self.assertRegex(result.stderr, rf"VersionTests_pg{present}(\.test_the_class_pickles)?\) \.\.\. ok")

    def test_without_a_matrix_nothing_changes(self):
        result = self.run_suite({"ELEFAST_POSTGRES_VERSIONS": ""}, "-k", "VersionTests.test_version")
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        self.assertRegex(result.stderr, r"test_matrix_suite\.VersionTests(\.test_version)?\) \.\.\. ok")

    def test_a_bad_version_and_a_url_beside_a_matrix_fail_with_the_fix(self):
        with self.assertRaises(ConfigurationError) as caught:
            type("Bad", (PostgresTestCase, unittest.TestCase),
                 {"postgres_versions": ("fifteen",), "test_x": lambda self: None})
        self.assertIn("is not a PostgreSQL major version", str(caught.exception))
        with self.assertRaises(ConfigurationError) as caught:
            type("Both", (PostgresTestCase, unittest.TestCase),
                 {"postgres_versions": (15,), "database_url": support.server_url(), "test_x": lambda self: None})
        self.assertIn("Remove one of the two", str(caught.exception))


if __name__ == "__main__":
    unittest.main()
