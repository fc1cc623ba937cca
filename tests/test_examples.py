"""The examples' own unittest suites pass as a user would run them."""

import subprocess
import sys
import unittest

from tests import support


def have(module):
    import importlib.util

    return importlib.util.find_spec(module) is not None


class ExampleSuiteTests(unittest.TestCase):
    def run_suite(self, folder):
        result = subprocess.run([sys.executable, "-m", "unittest", "discover", "-s", folder, "-t", "."],
                                cwd=str(support.ROOT), capture_output=True, text=True, timeout=300)
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 0, output[-3000:])
        self.assertRegex(output, r"Ran \d+ tests")
        self.assertIn("\nOK", output)

    def test_legacy_shop(self):
        """A module-level engine and scoped_session, on each test's database, writes from a thread."""
        self.run_suite("examples/legacy_shop/tests")

    @unittest.skipUnless(have("flask_sqlalchemy"), "flask-sqlalchemy is not installed")
    def test_flask_app(self):
        """A Flask-SQLAlchemy app configured for SQLite runs its tests on PostgreSQL, both modes."""
        self.run_suite("examples/flask_app/tests")

    @unittest.skipUnless(have("fastapi") and have("sqlmodel") and have("httpx"), "fastapi, sqlmodel or httpx missing")
    def test_fastapi_app(self):
        """A FastAPI + SQLModel app's import-time engine, through TestClient's thread, both modes."""
        self.run_suite("examples/fastapi_app/tests")


if __name__ == "__main__":
    unittest.main()
