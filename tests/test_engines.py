"""Tests of elefast._engines: URL parsing, driver defaults and checks, option carrying."""

import unittest

from sqlalchemy import NullPool, QueuePool, create_engine, make_url

from elefast._engines import options as _options
from elefast._engines import urls as _urls
from elefast.errors import ConfigurationError, DriverNotInstalledError, InvalidURLError


class ParseURLTests(unittest.TestCase):
    def test_bare_postgresql_gets_default_drivers(self):
        """postgresql:// means psycopg for sync code and asyncpg for async code."""
        sync = _urls.parse_url("postgresql://u@h/db", is_async=False)
        async_ = _urls.parse_url("postgresql://u@h/db", is_async=True)
        self.assertEqual(sync.drivername, "postgresql+psycopg")
        self.assertEqual(async_.drivername, "postgresql+asyncpg")

    def test_postgres_alias(self):
        """The postgres:// spelling (Heroku and others) is accepted."""
        self.assertEqual(_urls.parse_url("postgres://u@h/db", is_async=False).drivername,
                         "postgresql+psycopg")

    def test_psycopg_serves_async_too(self):
        """postgresql+psycopg:// works for the async API (psycopg 3 is both)."""
        self.assertEqual(_urls.parse_url("postgresql+psycopg://u@h/db", is_async=True).drivername,
                         "postgresql+psycopg")

    def test_other_dialect_is_refused(self):
        """A MySQL or SQLite URL says elefast needs PostgreSQL, without the password."""
        with self.assertRaises(InvalidURLError) as caught:
            _urls.parse_url("mysql://root:hunter2@h/db", is_async=False)
        self.assertIn("needs a PostgreSQL server", str(caught.exception))
        self.assertNotIn("hunter2", str(caught.exception))

    def test_unparseable_url(self):
        """A malformed URL is refused without echoing it (it may hold a password)."""
        with self.assertRaises(InvalidURLError) as caught:
            _urls.parse_url("not a url at all hunter2", is_async=False)
        self.assertNotIn("hunter2", str(caught.exception))
        self.assertIn("postgresql://user:password@host", str(caught.exception))

    def test_port_that_is_not_a_number(self):
        """A malformed port is an InvalidURLError that does not show the password."""
        with self.assertRaises(InvalidURLError) as caught:
            _urls.parse_url("postgresql://u:hunter2@host:notaport/db", is_async=False)
        self.assertIn("port is not a number", str(caught.exception))
        self.assertNotIn("hunter2", str(caught.exception))

    def test_not_a_url(self):
        """Something that is neither a str, a URL nor an engine is refused."""
        with self.assertRaises(InvalidURLError):
            _urls.parse_url(42, is_async=False)  # type: ignore[arg-type]

    def test_unknown_driver(self):
        """An unknown driver names the two that work."""
        with self.assertRaises(InvalidURLError) as caught:
            _urls.parse_url("postgresql+nosuchdriver://u@h/db", is_async=False)
        self.assertIn("postgresql+psycopg://", str(caught.exception))

    def test_driver_not_installed_gives_pip_line(self):
        """A known but missing driver (pg8000 is not a dependency) names its pip line."""
        with self.assertRaises(DriverNotInstalledError) as caught:
            _urls.parse_url("postgresql+pg8000://u@h/db", is_async=False)
        self.assertIn("pip install pg8000", str(caught.exception))
        self.assertIsInstance(caught.exception, ConfigurationError)

    def test_wrong_kind_of_driver(self):
        """asyncpg for the sync API (or psycopg2 for async) says which class to use."""
        with self.assertRaises(InvalidURLError) as caught:
            _urls.parse_url("postgresql+asyncpg://u@h/db", is_async=False)
        self.assertIn("AsyncDatabaseServer", str(caught.exception))

    def test_swap_kind(self):
        """With swap_kind, one URL serves sync and async test classes."""
        url = _urls.parse_url("postgresql+asyncpg://u:pw@h:1/db?sslmode=disable",
                                 is_async=False, swap_kind=True)
        self.assertEqual(url.drivername, "postgresql+psycopg")
        self.assertEqual((url.password, url.port, url.query["sslmode"]), ("pw", 1, "disable"))

    def test_safe_url_hides_password(self):
        """safe_url never shows the password."""
        self.assertEqual(_urls.safe_url("postgresql://u:hunter2@h/db"), "postgresql://u:***@h/db")
        self.assertNotIn("hunter2", _urls.safe_url(make_url("postgresql://u:hunter2@h/db")))


class EngineOptionsTests(unittest.TestCase):
    def test_user_engine_options_are_copied(self):
        """Pool class and sizes, pre-ping, echo, isolation and execution options carry over."""
        engine = create_engine(
            "postgresql+psycopg://u@h/db", pool_size=3, max_overflow=1, pool_pre_ping=True,
            pool_recycle=30, isolation_level="REPEATABLE READ",
            execution_options={"schema_translate_map": {None: "s"}},
        )
        options = _options.engine_options(engine, {"application_name": "x"})
        self.assertEqual(options["poolclass"], QueuePool)
        self.assertEqual((options["pool_size"], options["max_overflow"]), (3, 1))
        self.assertTrue(options["pool_pre_ping"])
        self.assertEqual(options["pool_recycle"], 30)
        self.assertEqual(options["isolation_level"], "REPEATABLE READ")
        self.assertEqual(options["execution_options"], {"schema_translate_map": {None: "s"}})
        self.assertEqual(options["connect_args"], {"application_name": "x"})
        self.assertNotIn("pool_size", _options.without_pool_sizes(options))

    def test_admin_engine_options_are_not_copied(self):
        """elefast's own AUTOCOMMIT/NullPool engine gives clones SQLAlchemy's defaults."""
        engine = _options.mark_admin(
            create_engine("postgresql+psycopg://u@h/db", isolation_level="AUTOCOMMIT", poolclass=NullPool)
        )
        self.assertEqual(_options.engine_options(engine, {}), {})


if __name__ == "__main__":
    unittest.main()
