"""The ``elefast`` logger: silent on a green run, its decisions with ``ELEFAST_LOG=info``, pool stats at debug."""

import os
import subprocess
import sys
import unittest

from tests import support

SUITE = """
import logging, os, unittest
if os.environ.get("EFT_APP_LOGGING"):  # an app that configures logging itself
    logging.basicConfig(level=logging.INFO, format="app %(name)s: %(message)s")
from sqlalchemy import Column, Integer, MetaData, Table
from elefast import MetadataMigrator, PostgresTestCase

metadata = MetaData()
Table("logged_{tag}", metadata, Column("id", Integer, primary_key=True))


class Logged(PostgresTestCase, unittest.TestCase):
    schema = MetadataMigrator(metadata)
    database_prefix = "eftlog"

    def test_one(self):
        pass

    def test_two(self):
        pass


unittest.main(module=__name__, verbosity=0)
"""


def run_suite(tag, **env):
    full_env = dict(os.environ, ELEFAST_DATABASE_URL=support.server_url())
    full_env.pop("ELEFAST_LOG", None)
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", SUITE.format(tag=tag)], cwd=str(support.ROOT), env=full_env,
                          capture_output=True, text=True, timeout=120)


class LoggingTests(unittest.TestCase):
    def setUp(self):
        self.tag = support.unique_prefix("log")
        self.addCleanup(support.drop_templates, "eftlog")

    def test_green_run_prints_nothing_of_elefast(self):
        """Without ELEFAST_LOG a green run prints only unittest's own summary."""
        result = run_suite(self.tag)
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        self.assertEqual(lines[-1], "OK", result.stderr)
        self.assertNotIn("elefast", result.stderr + result.stdout)

    def test_info_says_which_server_and_template(self):
        """ELEFAST_LOG=info: where the server came from and why; the template built, then reused."""
        first = run_suite(self.tag, ELEFAST_LOG="info")
        self.assertEqual(first.returncode, 0, first.stderr)
        self.assertIn("elefast INFO: using the server from ELEFAST_DATABASE_URL: postgresql://", first.stderr)
        self.assertRegex(first.stderr, r"template eftlog_tpl_[0-9a-f]{16} built for MetadataMigrator\(.*\) in \d+ ms "
                                       r"\(fingerprint [0-9a-f]{16}\)")
        second = run_suite(self.tag, ELEFAST_LOG="info")
        self.assertRegex(second.stderr, r"template eftlog_tpl_[0-9a-f]{16} reused")
        self.assertNotIn("pool at exit", second.stderr)

    def test_app_logging_prints_each_line_once(self):
        """An app that configures logging itself sees each of elefast's lines once, through its own handler."""
        result = run_suite(self.tag, ELEFAST_LOG="info", EFT_APP_LOGGING="1")
        self.assertEqual(result.returncode, 0, result.stderr)
        server_lines = [line for line in result.stderr.splitlines() if "using the server from" in line]
        self.assertEqual(len(server_lines), 1, result.stderr)
        self.assertTrue(server_lines[0].startswith("app elefast: "), server_lines)

    def test_debug_adds_pool_stats(self):
        """ELEFAST_LOG=debug: the clone pool's counts at exit."""
        result = run_suite(self.tag, ELEFAST_LOG="debug")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertRegex(result.stderr, r"clone pool at exit: taken ready \d+, taken direct \d+, created \d+")


if __name__ == "__main__":
    unittest.main()
