"""Tests of elefast._base.sql: statements, names, quoting and error triage (no I/O)."""

import re
import unittest

import psycopg

from elefast._base import sql as _sql
from elefast.errors import ConfigurationError, InvalidPrefixError
from tests import support


class NameTests(unittest.TestCase):
    def test_default_name_has_prefix_and_random_part(self):
        """A generated name is <prefix>_<16 hex digits>."""
        name = _sql.database_name()
        prefix, _, random = name.rpartition("_")
        self.assertEqual(prefix, "elefast")
        self.assertRegex(random, r"^[0-9a-f]{16}$")

    def test_names_are_unique(self):
        """A thousand names in a row never repeat."""
        self.assertEqual(len({_sql.database_name() for _ in range(1000)}), 1000)

    def test_long_prefix_is_shortened_keeping_random_part(self):
        """A prefix too long for 63 bytes is cut, never the random part: no collisions."""
        names = {_sql.database_name("p" * 200) for _ in range(100)}
        self.assertEqual(len(names), 100)
        for name in names:
            self.assertEqual(len(name.encode()), _sql.MAX_IDENTIFIER_BYTES)
            self.assertRegex(name, r"_[0-9a-f]{16}$")

    def test_template_name(self):
        """Templates are named <prefix>_tpl_<fingerprint>, within 63 bytes."""
        self.assertEqual(_sql.template_name("app", "abc"), "app_tpl_abc")
        self.assertLessEqual(len(_sql.template_name("a" * 100)), 63)

    def test_unsafe_prefixes_are_made_safe(self):
        """Quotes, spaces, brackets and unicode become '_': the name stays greppable and unique."""
        cases = {'my"app': "my_app", "my app": "my_app", "drop;": "drop", "données": "donn_es", "a'b": "a_b",
                 "test_get_posts[1-2]": "test_get_posts_1-2",
                 'x"; DROP DATABASE postgres; --': "x_DROP_DATABASE_postgres_--"}
        for given, safe in cases.items():
            with self.subTest(prefix=given):
                name = _sql.database_name(given)
                self.assertRegex(name, "^" + re.escape(safe) + "_[0-9a-f]{16}$")
                self.assertNotEqual(name, _sql.database_name(given))  # unique through the random part

    def test_prefixes_with_nothing_safe_are_refused(self):
        for bad in ["", "[]", "é"]:
            with self.subTest(prefix=bad):
                with self.assertRaises(InvalidPrefixError) as caught:
                    _sql.database_name(bad)
                self.assertIn("ASCII letters", str(caught.exception))

    def test_non_string_prefix(self):
        """A prefix that is not a str is refused."""
        with self.assertRaises(InvalidPrefixError):
            _sql.safe_prefix(5)  # type: ignore[arg-type]

    def test_hyphen_and_digits_allowed(self):
        """Hyphens, digits and underscores are fine (names are always quoted)."""
        self.assertTrue(_sql.database_name("1-my_app").startswith("1-my_app_"))


class StatementTests(unittest.TestCase):
    def test_identifiers_are_always_quoted(self):
        """Every name is quoted by the PostgreSQL dialect, even plain ones."""
        self.assertEqual(_sql.quote_identifier("abc"), '"abc"')
        self.assertEqual(_sql.quote_identifier('a"b'), '"a""b"')

    def test_create_database_statement(self):
        """CREATE DATABASE names template and encoding; template0 when none is given."""
        self.assertEqual(
            _sql.create_database("n", "t", "utf8"),
            'CREATE DATABASE "n" TEMPLATE "t" ENCODING \'utf8\'',
        )
        self.assertIn('TEMPLATE "template0"', _sql.create_database("n"))
        self.assertTrue(_sql.create_database("n", strategy="file_copy").endswith("STRATEGY FILE_COPY"))

    def test_bad_encoding_and_strategy(self):
        """An encoding with quotes, or an unknown strategy, is refused before reaching SQL."""
        with self.assertRaises(ConfigurationError):
            _sql.create_database("n", encoding="utf8'; drop")
        with self.assertRaises(ConfigurationError):
            _sql.create_database("n", strategy="fast")

    def test_drop_statement_by_server_version(self):
        """WITH (FORCE) from PostgreSQL 13 on; plain DROP (after terminating) before."""
        self.assertTrue(_sql.supports_drop_force((13, 0)))
        self.assertFalse(_sql.supports_drop_force((12, 9)))
        self.assertFalse(_sql.supports_drop_force(None))
        self.assertEqual(_sql.drop_database("x", True), 'DROP DATABASE IF EXISTS "x" WITH (FORCE)')
        self.assertEqual(_sql.drop_database("x", False), 'DROP DATABASE IF EXISTS "x"')


class ErrorTriageTests(unittest.TestCase):
    def test_real_connection_errors_are_classified(self):
        """Unknown role and database are fatal; a refused port is transient (real psycopg errors)."""
        cases = [
            (support.url_with(user="eft_no_such_role"), "role"),
            (support.url_with(database="eft_no_such_db"), "database"),
        ]
        for url, word in cases:
            with self.subTest(url=url):
                with self.assertRaises(psycopg.OperationalError) as caught:
                    psycopg.connect(support.libpq_dsn(url), connect_timeout=5)
                reason = _sql.fatal_reason(caught.exception)
                self.assertIsNotNone(reason)
                self.assertIn(word, reason or "")
        with self.assertRaises(psycopg.OperationalError) as caught:
            psycopg.connect(support.libpq_dsn(support.url_with(port=str(support.free_port()))))
        self.assertIsNone(_sql.fatal_reason(caught.exception))

    def test_hide_secret(self):
        """A secret is replaced wherever it appears."""
        self.assertEqual(_sql.hide_secret("a pw b pw", "pw"), "a *** b ***")
        self.assertEqual(_sql.hide_secret("text", None), "text")


if __name__ == "__main__":
    unittest.main()
