"""Clone engines skip psycopg's hstore lookup once the template showed it has no hstore type.

The lookup is three round trips in every new engine's first connection; every clone of a
template has the same answer. Checked on real servers: without hstore the second clone's
engine skips it and an ``HSTORE`` column made in a test still works; with hstore in the
template every clone's engine keeps the native adapter.
"""

from __future__ import annotations

import unittest

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import HSTORE

from elefast import DatabaseServer, MetadataMigrator
from elefast.extensions import Extensions
from elefast.migrators import ChainMigrator
from tests import support


def _schema() -> sa.MetaData:
    metadata = sa.MetaData()
    sa.Table("items", metadata, sa.Column("id", sa.Integer, primary_key=True))
    return metadata


class HstoreLookupTests(unittest.TestCase):
    def server(self, schema):
        prefix = support.unique_prefix("hs")
        self.addCleanup(support.drop_templates, prefix)
        server = DatabaseServer(support.psycopg_url(), schema=schema)
        self.addCleanup(server.close)
        return server, prefix

    def test_without_hstore_later_engines_skip_the_lookup_and_hstore_still_works(self):
        server, prefix = self.server(MetadataMigrator(_schema()))
        engines = []
        for _ in range(3):
            database = server.create_database(prefix)
            self.addCleanup(database.drop)
            with database.engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
            engines.append(database.engine)
        self.assertTrue(engines[0].dialect.use_native_hstore)
        self.assertFalse(engines[-1].dialect.use_native_hstore)
        table = sa.Table("h", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True), sa.Column("d", HSTORE))
        with engines[-1].begin() as connection:  # a test that brings hstore itself
            connection.execute(sa.text("CREATE EXTENSION hstore"))
            table.create(connection)
            connection.execute(table.insert().values(d={"a": "1", "b": None}))
            self.assertEqual(connection.execute(sa.select(table.c.d)).scalar(), {"a": "1", "b": None})

    def test_with_hstore_in_the_template_every_engine_keeps_the_native_adapter(self):
        server, prefix = self.server(ChainMigrator(Extensions("hstore"), MetadataMigrator(_schema())))
        for _ in range(3):
            database = server.create_database(prefix)
            self.addCleanup(database.drop)
            with database.engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
            self.assertTrue(database.engine.dialect.use_native_hstore)
            self.assertTrue(database.engine.dialect._has_native_hstore)


if __name__ == "__main__":
    unittest.main()
