"""One benchmark run in one process: N unittest tests over a 20-table indexed schema.

``python workload.py MODE URL N BODY`` runs N tests with one way of isolating them and prints
one JSON line with per-test timings. Run by ``bench.py``; the ``upstream`` mode runs in a venv of
its own holding upstream elefast 0.1.0a5 (so ``import elefast`` there is upstream's).

MODE: elefast-database | elefast-transaction | elefast-transaction-app | upstream | janitor | naive | rollback
BODY: ``work`` (insert a row into 3 tables, commit, count), ``nothing`` (SELECT 1) or
``sleep50`` (``work`` plus 50 ms of pretend application work).

Per test we record ``total`` (setUp start to cleanup end) and ``body`` (the test method alone);
overhead = total - body. ``wait`` is the part of setUp spent getting a database.
"""

from __future__ import annotations

import json
import os
import sys
import time
import unittest

import sqlalchemy as sa
from sqlalchemy import text

TABLES = 20
metadata = sa.MetaData()
for number in range(TABLES):
    sa.Table(
        f"t{number:02d}",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, index=True),
        sa.Column("value", sa.Integer, nullable=False, index=True),
        sa.Column("note", sa.Text),
        sa.Column("created", sa.DateTime, server_default=sa.func.now()),
        sa.Index(f"ix_t{number:02d}_name_value", "name", "value"),
    )
T0, T1, T2 = (metadata.tables[f"t{n:02d}"] for n in (0, 7, 13))


def body(connection_or_session, kind: str) -> None:
    """The test's own work, identical in every mode."""
    if kind == "nothing":
        connection_or_session.execute(text("SELECT 1"))
        return
    for table in (T0, T1, T2):
        connection_or_session.execute(table.insert().values(name="row", value=1, note="x"))
    connection_or_session.commit()
    for table in (T0, T1, T2):
        count = connection_or_session.execute(sa.select(sa.func.count()).select_from(table)).scalar()
        assert count == 1, count
    if kind == "sleep50":
        time.sleep(0.05)


RECORDS: list = []


class Timed:
    """Mixin recording per-test timings around unittest's own setUp/cleanup machinery."""

    body_kind = "work"

    def run(self, result=None):  # type: ignore[no-untyped-def]
        self._t_start = time.perf_counter()
        self._wait = 0.0
        self._body = 0.0
        outcome = super().run(result)  # type: ignore[misc]
        record = {"total": time.perf_counter() - self._t_start, "body": self._body, "wait": self._wait}
        if not RECORDS:  # seconds from process start to the end of the first test
            record["first_at"] = time.time() - float(os.environ.get("BENCH_T0", time.time()))
        RECORDS.append(record)
        return outcome

    def timed_body(self, target) -> None:  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        body(target, self.body_kind)
        self._body = time.perf_counter() - start


def make_suite(base: type, count: int, kind: str, setup=None) -> unittest.TestSuite:  # type: ignore[no-untyped-def]
    attributes = {"body_kind": kind}
    for number in range(count):
        attributes[f"test_{number:04d}"] = lambda self: self.timed_body(self.target())
    cls = type("Bench", (Timed, base), attributes)
    return unittest.defaultTestLoader.loadTestsFromTestCase(cls)


def elefast_suite(url: str, count: int, kind: str, isolation: str) -> unittest.TestSuite:
    import elefast
    from elefast import MetadataMigrator, PostgresTestCase

    schema = MetadataMigrator(metadata)

    class Base(PostgresTestCase, unittest.TestCase):
        database_url = url
        database_prefix = "bench"

        def _elefast_set_up(self):  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            super()._elefast_set_up()
            self._wait = time.perf_counter() - start

        def target(self):  # type: ignore[no-untyped-def]
            return self.session

    Base.schema = schema
    Base.isolation = isolation
    assert elefast.__file__
    return make_suite(Base, count, kind)


def elefast_app_suite(url: str, count: int, kind: str) -> unittest.TestSuite:
    """Transaction mode where the body runs on the app's own engine (made at import, a host that does
    not exist), named in ``app_engines``: every commit of the app is a savepoint of the test's transaction."""
    from sqlalchemy.orm import sessionmaker

    from elefast import MetadataMigrator, PostgresTestCase

    app_engine = sa.create_engine("postgresql+psycopg://app:secret@app-db.invalid:5432/app")
    AppSession = sessionmaker(bind=app_engine)

    class Base(PostgresTestCase, unittest.TestCase):
        database_url = url
        database_prefix = "bench"
        schema = MetadataMigrator(metadata)
        isolation = "transaction"
        app_engines = (app_engine,)

        def _elefast_set_up(self):  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            super()._elefast_set_up()
            self.app_session = AppSession()
            self.addCleanup(self.app_session.close)
            self._wait = time.perf_counter() - start

        def target(self):  # type: ignore[no-untyped-def]
            return self.app_session

    return make_suite(Base, count, kind)


def upstream_suite(url: str, count: int, kind: str) -> unittest.TestSuite:
    from elefast import DatabaseServer  # upstream elefast 0.1.0a5, in its own venv

    server = DatabaseServer(url, metadata=metadata)

    class Base(unittest.TestCase):
        def setUp(self):  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            self.database = server.create_database()
            self.addCleanup(self.database.drop)
            self.session = self.database.session()
            self.addCleanup(self.session.close)
            self._wait = time.perf_counter() - start

        def target(self):  # type: ignore[no-untyped-def]
            return self.session

    return make_suite(Base, count, kind)


def janitor_suite(url: str, count: int, kind: str) -> unittest.TestSuite:
    from pytest_postgresql.janitor import DatabaseJanitor
    from sqlalchemy.orm import Session

    parsed = sa.make_url(url)
    host = parsed.query.get("host") or parsed.host
    common = dict(user=parsed.username or "postgres", host=host, port=parsed.port or 5432,
                  password=parsed.password, version=None)
    template = f"bench_janitor_tpl_{os.getpid()}"
    template_janitor = DatabaseJanitor(dbname=template, as_template=True, **common)
    template_janitor.init()
    engine = sa.create_engine(parsed.set(database=template), poolclass=sa.NullPool)
    metadata.create_all(engine)
    engine.dispose()
    counter = iter(range(10**9))

    class Base(unittest.TestCase):
        @classmethod
        def tearDownClass(cls):  # type: ignore[no-untyped-def]
            template_janitor.drop()

        def setUp(self):  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            name = f"bench_janitor_{os.getpid()}_{next(counter)}"
            janitor = DatabaseJanitor(dbname=name, template_dbname=template, **common)
            janitor.init()
            self.addCleanup(janitor.drop)
            engine = sa.create_engine(parsed.set(database=name))
            self.addCleanup(engine.dispose)
            self.session = Session(engine)
            self.addCleanup(self.session.close)
            self._wait = time.perf_counter() - start

        def target(self):  # type: ignore[no-untyped-def]
            return self.session

    return make_suite(Base, count, kind)


class OneDatabase(unittest.TestCase):
    """Base of the modes that use one database for the whole suite (made by :func:`one_database`)."""

    engine: sa.Engine
    drop_database: object

    @classmethod
    def tearDownClass(cls):  # type: ignore[no-untyped-def]
        cls.engine.dispose()
        cls.drop_database()  # type: ignore[operator]


def one_database(url: str, label: str) -> dict:
    """Create ``bench_<label>_<pid>``; return class attributes for :class:`OneDatabase`."""
    parsed = sa.make_url(url)
    name = f"bench_{label}_{os.getpid()}"
    admin = sa.create_engine(parsed, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))

    return {"engine": sa.create_engine(parsed.set(database=name)), "drop_database": staticmethod(drop)}


def naive_suite(url: str, count: int, kind: str) -> unittest.TestSuite:
    from sqlalchemy.orm import Session

    attributes = one_database(url, "naive")
    engine = attributes["engine"]

    class Base(OneDatabase):
        def setUp(self):  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            metadata.create_all(engine)
            self.addCleanup(metadata.drop_all, engine)
            self.session = Session(engine)
            self.addCleanup(self.session.close)
            self._wait = time.perf_counter() - start

        def target(self):  # type: ignore[no-untyped-def]
            return self.session

    for key, value in attributes.items():
        setattr(Base, key, value)
    return make_suite(Base, count, kind)


def rollback_suite(url: str, count: int, kind: str) -> unittest.TestSuite:
    """The floor: one database, each test in a transaction rolled back, plain SQLAlchemy."""
    from sqlalchemy.orm import Session

    attributes = one_database(url, "rollback")
    engine = attributes["engine"]
    metadata.create_all(engine)

    class Base(OneDatabase):
        def setUp(self):  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            self.connection = engine.connect()
            self.addCleanup(self.connection.close)
            transaction = self.connection.begin()
            self.addCleanup(transaction.rollback)
            self.session = Session(bind=self.connection, join_transaction_mode="create_savepoint")
            self.addCleanup(self.session.close)
            self._wait = time.perf_counter() - start

        def target(self):  # type: ignore[no-untyped-def]
            return self.session

    for key, value in attributes.items():
        setattr(Base, key, value)
    return make_suite(Base, count, kind)


def main(argv: list) -> int:
    mode, url, count, kind = argv[0], argv[1], int(argv[2]), argv[3]
    started = float(os.environ.get("BENCH_T0", time.time()))
    builders = {
        "elefast-database": lambda: elefast_suite(url, count, kind, "database"),
        "elefast-transaction": lambda: elefast_suite(url, count, kind, "transaction"),
        "elefast-transaction-app": lambda: elefast_app_suite(url, count, kind),
        "upstream": lambda: upstream_suite(url, count, kind),
        "janitor": lambda: janitor_suite(url, count, kind),
        "naive": lambda: naive_suite(url, count, kind),
        "rollback": lambda: rollback_suite(url, count, kind),
    }
    suite = builders[mode]()
    run_start = time.time()  # wall clock, so the caller can time the run to the process's exit
    wall = time.perf_counter()
    with open(os.devnull, "w") as devnull:
        result = unittest.TextTestRunner(stream=devnull, verbosity=0).run(suite)
    wall = time.perf_counter() - wall
    first = RECORDS[0]["first_at"] if RECORDS and "first_at" in RECORDS[0] else None
    print(json.dumps({
        "mode": mode, "ok": result.wasSuccessful(),
        "errors": [str(e[1])[-800:] for e in result.errors + result.failures][:3],
        "records": RECORDS, "wall": wall, "first": first, "process_to_end": time.time() - started,
        "run_start": run_start,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
