"""Settings that would be silently ignored are said: misspelt class attributes fail class creation,
unknown ELEFAST_* variables and unreadable values are warned about (once per process)."""

import os
import subprocess
import sys
import unittest

from elefast import PostgresTestCase
from elefast._base import settings
from elefast.errors import ConfigurationError
from tests import support


class ClassAttributeTests(unittest.TestCase):
    def test_a_misspelt_attribute_fails_class_creation_with_the_name_meant(self):
        for wrong, meant in [("isolaton", "isolation"), ("app_engine", "app_engines"), ("databse_url", "database_url"),
                             ("extension", "extensions"), ("Schema", "schema")]:
            with self.subTest(wrong), self.assertRaises(ConfigurationError) as caught:
                type("Misspelt", (PostgresTestCase, unittest.TestCase), {wrong: "transaction"})
            self.assertIn(f"did you mean `{meant}`?", str(caught.exception))

    def test_a_misspelt_hook_fails_too(self):
        with self.assertRaises(ConfigurationError) as caught:
            class Hooked(PostgresTestCase, unittest.TestCase):
                @classmethod
                def setupTestData(cls, connection):  # lower-case u: never called
                    pass
        self.assertIn("did you mean `setUpTestData`?", str(caught.exception))

    def test_names_far_from_elefast_ones_and_a_base_class_own_names_are_left_alone(self):
        class Base:
            guards = ("mine",)  # a name of the hierarchy's own, near "guard"

        class Fine(PostgresTestCase, Base, unittest.TestCase):
            guards = ("still mine",)
            isolation = "transaction"
            fixtures_path = "x"
            client = None

            def test_nothing(self):
                pass

        self.assertEqual(Fine.guards, ("still mine",))


class EnvironmentTests(unittest.TestCase):
    def test_problems_name_the_variable_meant_and_the_values_read(self):
        found = settings.problems({
            "ELEFAST_GAURD": "1", "ELEFAST_POOL_SIZE": "two", "ELEFAST_GUARD": "2", "ELEFAST_SERVER": "lokal",
            "ELEFAST_DATABASE_URL": "anything", "ELEFAST_TEMPLATE_DAYS": "1.5", "ELEFAST_UNRELATED_THING": "x",
            "PATH": "/bin",
        })
        joined = "\n".join(found)
        self.assertIn("ELEFAST_GAURD is not a variable elefast reads: did you mean ELEFAST_GUARD?", joined)
        self.assertIn("ELEFAST_POOL_SIZE='two' is not a whole number", joined)
        self.assertIn("ELEFAST_GUARD='2' reads as off", joined)
        self.assertIn("ELEFAST_SERVER='lokal' is not one of url, local, docker", joined)
        self.assertIn("ELEFAST_UNRELATED_THING is not a variable elefast reads (it knows", joined)
        self.assertEqual(len(found), 5, found)

    def test_every_variable_the_package_reads_is_known(self):
        import re
        from pathlib import Path

        package = Path(settings.__file__).resolve().parents[1]
        read = set()
        for path in package.rglob("*.py"):
            if path.name == "settings.py":  # its examples of misspellings
                continue
            read |= set(re.findall(r"ELEFAST_[A-Z0-9_]*[A-Z0-9]", path.read_text()))
        self.assertEqual(sorted(read - set(settings.ENVIRONMENT)), [])

    def test_a_run_warns_once_about_a_misspelt_variable(self):
        code = ("import unittest\n"
                "from elefast import DatabaseServer\n"
                "from tests import support\n"
                "for _ in range(2):\n"
                "    server = DatabaseServer(support.server_url())\n"
                "    server.create_database(prefix=support.unique_prefix('env')).drop()\n"
                "    server.close()\n")
        env = dict(os.environ, ELEFAST_KEEP_FAILD="1", PYTHONPATH=str(support.ROOT))
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                                env=env, cwd=str(support.ROOT))
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stderr.count("ELEFAST_KEEP_FAILD is not a variable elefast reads: "
                                            "did you mean ELEFAST_KEEP_FAILED?"), 1, result.stderr)


if __name__ == "__main__":
    unittest.main()
