"""A template is never wrong: fingerprints that tell schemas apart, verification after every build,
``ELEFAST_REBUILD``, and templates per role. Real servers, real migrators, sync and async."""

import logging
import os
import unittest
from unittest import mock

from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, select, text

from elefast import AsyncDatabaseServer, AsyncMetadataMigrator, DatabaseServer, MetadataMigrator
from elefast._schema.fingerprints import identity
from elefast._server.core import core_of
from elefast.errors import MigrationError
from tests import support


def psycopg_url(url):
    """``url`` with the psycopg 3 driver (a bare postgresql:// means psycopg2 to SQLAlchemy)."""
    return url.replace("postgresql://", "postgresql+psycopg://", 1)

metadata = MetaData()
notes = Table("notes", metadata, Column("id", Integer, primary_key=True), Column("body", String(50)))
SEED_SUFFIX = "!"  # a module global that Seeded.migrate reads


class Seeded(MetadataMigrator):
    """A MetadataMigrator subclass that adds seed rows: same tables, different templates."""

    def __init__(self, metadata, seed):
        super().__init__(metadata)
        self.seed = seed

    def migrate(self, connection):
        super().migrate(connection)
        connection.execute(notes.insert().values(body=self.seed + SEED_SUFFIX))


class SeededTwice(Seeded):
    def migrate(self, connection):
        super().migrate(connection)
        connection.execute(notes.insert().values(body="twice"))


class HoldsAnEngine(MetadataMigrator):
    """An attribute elefast cannot reduce to plain values: not safe to share."""

    def __init__(self, metadata):
        super().__init__(metadata)
        self.engine = create_engine(psycopg_url(support.server_url()))


class MigratesElsewhere(MetadataMigrator):
    """A migrate() that builds the tables on an engine of its own, not on the template."""

    target = ""

    def migrate(self, connection):
        engine = create_engine(psycopg_url(self.target))
        with engine.begin() as own:
            metadata.create_all(own)
        engine.dispose()


def bodies(database):
    with database.engine.connect() as connection:
        return connection.execute(select(notes.c.body).order_by(notes.c.id)).scalars().all()


class FingerprintTests(unittest.TestCase):
    def test_seeded_subclasses_get_their_own_templates(self):
        """Same tables, other seed: other template; a plain migrator does not disturb either."""
        a, b, plain = Seeded(metadata, "A"), Seeded(metadata, "B"), MetadataMigrator(metadata)
        digests = [identity(m)[0] for m in (a, b, plain, SeededTwice(metadata, "A"))]
        self.assertNotIn(None, digests)
        self.assertEqual(len(set(digests)), 4)
        self.assertEqual(identity(Seeded(metadata, "A"))[0], digests[0])  # stable for equal config

    def test_module_globals_the_code_reads_count(self):
        before = identity(Seeded(metadata, "A"))[0]
        with mock.patch(f"{__name__}.SEED_SUFFIX", "?"):
            self.assertNotEqual(identity(Seeded(metadata, "A"))[0], before)

    def test_changed_code_changes_the_identity(self):
        namespace = {"MetadataMigrator": MetadataMigrator}
        source = ("class Changing(MetadataMigrator):\n"
                  "    def migrate(self, connection):\n"
                  "        super().migrate(connection)\n"
                  "        connection.exec_driver_sql({!r})\n")
        exec(source.format("SELECT 1"), namespace)
        first = identity(namespace["Changing"](metadata))[0]
        exec(source.format("SELECT 2"), namespace)
        self.assertNotEqual(identity(namespace["Changing"](metadata))[0], first)

    def test_the_projects_helpers_the_code_calls_count(self):
        """A seed_rows() helper (or seeds.add() of a project module) that migrate() calls: a change in
        its code or in what it reads is a new template, not the stale one of the last run."""
        import importlib.util
        import tempfile

        folder = tempfile.mkdtemp(prefix="elefast-seeds-")
        self.addCleanup(__import__("shutil").rmtree, folder)
        source = ("class Helped(MetadataMigrator):\n"
                  "    def migrate(self, connection):\n"
                  "        super().migrate(connection)\n"
                  "        seed_rows(connection)\n"
                  "        seeds.add(connection)\n"
                  "def seed_rows(connection):\n"
                  "    more_rows(connection, {!r})\n"
                  "def more_rows(connection, body):\n"
                  "    connection.execute(notes.insert().values(body=body + SUFFIX))\n"
                  "SUFFIX = {!r}\n")

        def digest(seed, suffix, module_rows):
            path = os.path.join(folder, f"seeds_{seed}_{suffix}_{module_rows}.py")
            with open(path, "w") as file:
                file.write(f"ROWS = {module_rows!r}\ndef add(connection):\n    return ROWS\n")
            spec = importlib.util.spec_from_file_location("seeds", path)
            seeds = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(seeds)
            namespace = {"MetadataMigrator": MetadataMigrator, "notes": notes, "seeds": seeds}
            exec(source.format(seed, suffix), namespace)
            return identity(namespace["Helped"](metadata))[0]

        first = digest("A", "!", 1)
        self.assertIsNotNone(first)
        self.assertEqual(digest("A", "!", 1), first)
        self.assertNotEqual(digest("B", "!", 1), first)  # the helper's code
        self.assertNotEqual(digest("A", "?", 1), first)  # a global the helper's helper reads
        self.assertNotEqual(digest("A", "!", 2), first)  # a project module's value the code reads

    def test_unsafe_migrator_is_for_this_process_only(self):
        migrator = HoldsAnEngine(metadata)
        self.addCleanup(migrator.engine.dispose)
        digest, why = identity(migrator)
        self.assertIsNone(digest)
        self.assertIn("'engine'", why)
        self.assertIn("fingerprint()", why)


class TemplateTrustTests(unittest.TestCase):
    def setUp(self):
        self.prefix = support.unique_prefix("trust")
        self.addCleanup(lambda: self.assertEqual(support.databases(self.prefix + "%"), []))
        self.addCleanup(support.drop_templates, self.prefix)

    def server(self, schema, url=None):
        server = DatabaseServer(url or support.server_url(), schema=schema)
        self.addCleanup(server.close)
        return server

    def test_a_late_builder_does_not_wait_for_the_templates_users(self):
        """A process that saw the template unready just before another made it ready, and asks for the
        build lock while users hold it shared (until they exit), takes the ready template instead of
        waiting for them (a parallel run's workers deadlocked on this)."""
        import threading

        user = self.server(MetadataMigrator(metadata))
        with user.create_database(prefix=self.prefix):
            pass  # the template is ready, and `user` holds its key shared until it closes
        name = next(n for n in support.databases(self.prefix + "%") if "_tpl_" in n)
        late = self.server(MetadataMigrator(metadata))
        core, outcome = core_of(late), []

        def build_late():
            with core.connect() as connection:
                outcome.append(core.templates._build_locked(connection, name, self.prefix, "utf8", "f"))

        thread = threading.Thread(target=build_late, daemon=True)
        thread.start()
        thread.join(15)
        self.assertFalse(thread.is_alive(), "the late builder waited for the template's users")
        self.assertTrue(outcome[0].reused)
        self.assertEqual(outcome[0].name, name)

    def test_seeds_are_not_shared_in_one_run_or_the_next(self):
        """Seeded('A'), Seeded('B') and a plain migrator each see their own rows, every time."""
        for _ in range(2):  # the second round reuses the kept templates
            for migrator, expected in ((Seeded(metadata, "A"), ["A!"]), (Seeded(metadata, "B"), ["B!"]),
                                       (MetadataMigrator(metadata), [])):
                with self.server(migrator).create_database(prefix=self.prefix) as database:
                    self.assertEqual(bodies(database), expected)

    def test_unsafe_migrator_builds_a_template_for_this_process(self):
        migrator = HoldsAnEngine(metadata)
        self.addCleanup(migrator.engine.dispose)
        with self.assertLogs("elefast", logging.INFO) as logs:
            server = self.server(migrator)
            server.create_database(prefix=self.prefix).drop()
        self.assertTrue(any("this process only" in line and "'engine'" in line for line in logs.output), logs.output)
        slot = core_of(server).templates.slot("utf8")
        self.assertTrue(core_of(server).ledger.owns(slot.name))  # this process's: dropped at close or exit
        server.close()
        self.assertEqual(support.databases(self.prefix + "%"), [])

    def test_rebuild_builds_fresh_and_keeps_nothing(self):
        self.server(Seeded(metadata, "R")).create_database(prefix=self.prefix).drop()
        shared = support.databases(self.prefix + "_tpl_%")
        with mock.patch.dict(os.environ, {"ELEFAST_REBUILD": "1"}):
            server = self.server(Seeded(metadata, "R"))
            with server.create_database(prefix=self.prefix) as database:
                self.assertEqual(bodies(database), ["R!"])
            fresh = core_of(server).templates.slot("utf8")
            self.assertFalse(fresh.reused)
            self.assertNotIn(fresh.name, shared)
            server.close()
        self.assertEqual(support.databases(self.prefix + "_tpl_%"), shared)

    def test_a_migrator_that_builds_elsewhere_fails_and_keeps_nothing(self):
        """migrate() that ignores the connection: MigrationError naming the migrator, nothing kept."""
        elsewhere = f"{self.prefix}_devdb"
        support.execute(f'CREATE DATABASE "{elsewhere}"')
        self.addCleanup(support.execute, f'DROP DATABASE IF EXISTS "{elsewhere}" WITH (FORCE)')
        migrator = MigratesElsewhere(metadata)
        migrator.target = support.url_with(database=elsewhere)
        for _ in range(2):  # and the next run says the same: nothing was kept
            server = DatabaseServer(support.server_url(), schema=migrator)
            with self.assertLogs("elefast", logging.INFO) as logs, self.assertRaises(MigrationError) as caught:
                server.create_database(prefix=self.prefix)
            server.close()
            self.assertFalse([line for line in logs.output if "reused" in line], logs.output)
            self.assertIn("lacks 1 of the metadata's tables (public.notes)", str(caught.exception))
            self.assertIn("on the connection it is given", str(caught.exception))
            self.assertIn("went to another database", str(caught.exception))
            self.assertIn("super().migrate(connection)", str(caught.exception))
            self.assertEqual(support.databases(self.prefix + "_tpl%"), [])

    def test_a_template_built_by_another_role_is_not_handed_out(self):
        """A CI role with CREATEDB gets its own template: its tables, its permissions."""
        self.server(Seeded(metadata, "role")).create_database(prefix=self.prefix).drop()
        with support.role(createdb=True) as role:
            url = support.url_with(user=role)
            server = DatabaseServer(url, schema=Seeded(metadata, "role"))
            try:
                with server.create_database(prefix=self.prefix) as database:
                    with database.engine.begin() as connection:
                        connection.execute(notes.insert().values(body="mine"))
                        owner = connection.execute(text("SELECT tableowner FROM pg_tables "
                                                        "WHERE tablename = 'notes'")).scalar()
                    self.assertEqual(owner, role)
                    self.assertEqual(bodies(database), ["role!", "mine"])
                self.assertEqual(len(support.databases(self.prefix + "_tpl_%")), 2)
            finally:
                server.close()
                support.drop_templates(self.prefix)


class AsyncTemplateTrustTests(unittest.IsolatedAsyncioTestCase):
    async def test_async_server_verifies_and_tells_seeds_apart(self):
        prefix = support.unique_prefix("atrust")
        self.addCleanup(support.drop_templates, prefix)
        for seed in ("A", "B"):
            server = AsyncDatabaseServer(support.server_url(), schema=Seeded(metadata, seed))
            async with await server.create_database(prefix=prefix) as database:
                async with database.engine.connect() as connection:
                    rows = (await connection.execute(select(notes.c.body))).scalars().all()
                self.assertEqual(rows, [seed + "!"])
            await server.close()

    async def test_async_server_per_role_and_rebuild(self):
        """The async server shares the sync one's naming: a CREATEDB role gets its own template (its
        tables), and ELEFAST_REBUILD builds fresh and keeps nothing."""
        prefix = support.unique_prefix("atrust")
        self.addCleanup(support.drop_templates, prefix)

        async def owner_and_rows(url):
            server = AsyncDatabaseServer(url, schema=AsyncMetadataMigrator(metadata))
            try:
                async with await server.create_database(prefix=prefix) as database:
                    async with database.engine.begin() as connection:
                        await connection.execute(notes.insert().values(body="mine"))
                        return (await connection.execute(text(
                            "SELECT tableowner FROM pg_tables WHERE tablename = 'notes'"))).scalar()
            finally:
                await server.close()

        self.assertEqual(await owner_and_rows(support.server_url()), "postgres")
        with support.role(createdb=True) as role:
            try:
                self.assertEqual(await owner_and_rows(support.url_with(user=role)), role)
                self.assertEqual(len(support.databases(prefix + "_tpl_%")), 2)
            finally:
                support.drop_templates(prefix)
        self.assertEqual(await owner_and_rows(support.server_url()), "postgres")
        shared = support.databases(prefix + "_tpl_%")
        with mock.patch.dict(os.environ, {"ELEFAST_REBUILD": "1"}):
            with self.assertLogs("elefast", logging.INFO) as logs:
                await owner_and_rows(support.server_url())
        self.assertTrue(any("ELEFAST_REBUILD" in line for line in logs.output), logs.output)
        self.assertFalse(any("reused" in line for line in logs.output), logs.output)
        self.assertEqual(support.databases(prefix + "_tpl_%"), shared)

    async def test_async_migrator_that_builds_elsewhere_fails(self):
        prefix = support.unique_prefix("atrust")
        missing = MetaData()
        Table("never_made", missing, Column("id", Integer, primary_key=True))

        class Forgets(AsyncMetadataMigrator):
            async def migrate_async(self, connection):
                return None  # builds nothing on the template

        server = AsyncDatabaseServer(support.server_url(), schema=Forgets(missing))
        with self.assertRaisesRegex(MigrationError, "public.never_made"):
            await server.create_database(prefix=prefix)
        await server.close()
        self.assertEqual(support.databases(prefix + "%"), [])


if __name__ == "__main__":
    unittest.main()
