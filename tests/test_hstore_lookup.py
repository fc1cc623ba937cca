"""Clone engines skip psycopg's hstore lookup once the template showed it has no hstore type.

The lookup is three round trips in every new engine's first connection; every clone of a
template has the same answer. Checked on real servers, each case in a fresh process (a process
that once found a server full keeps its clones unconnected, and learns nothing): without hstore
the third clone's engine skips it and an ``HSTORE`` column made in a test still works; with
hstore in the template every clone's engine keeps the native adapter.
"""

from __future__ import annotations

import unittest

from tests import support

CHILD = """
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import HSTORE
from elefast import DatabaseServer, MetadataMigrator
from elefast.extensions import Extensions
from elefast.migrators import ChainMigrator

metadata = sa.MetaData()
sa.Table("items", metadata, sa.Column("id", sa.Integer, primary_key=True))
schema = MetadataMigrator(metadata)
if {with_hstore}:
    schema = ChainMigrator(Extensions("hstore"), schema)
server = DatabaseServer({url!r}, schema=schema)
databases = [server.create_database({prefix!r}) for _ in range(3)]
for database in databases:
    with database.engine.connect() as connection:
        connection.execute(sa.text("SELECT 1"))
    dialect = database.engine.dialect
    print("native", dialect.use_native_hstore, getattr(dialect, "_has_native_hstore", None))
table = sa.Table("h", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True), sa.Column("d", HSTORE))
with databases[-1].engine.begin() as connection:  # a test that brings hstore itself
    connection.execute(sa.text("CREATE EXTENSION IF NOT EXISTS hstore"))
    table.create(connection)
    connection.execute(table.insert().values(d={{"a": "1", "b": None}}))
    print("value", connection.execute(sa.select(table.c.d)).scalar())
for database in databases:
    database.drop()
server.close()
"""


class HstoreLookupTests(unittest.TestCase):
    def run_child(self, with_hstore):
        prefix = support.unique_prefix("hs")
        self.addCleanup(support.drop_templates, prefix)
        code = CHILD.format(url=support.psycopg_url(), prefix=prefix, with_hstore=with_hstore)
        result = support.run_python(code)
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        self.assertIn("value {'a': '1', 'b': None}", result.stdout)
        return [line for line in result.stdout.splitlines() if line.startswith("native")]

    def test_without_hstore_later_engines_skip_the_lookup_and_hstore_still_works(self):
        natives = self.run_child(False)
        self.assertEqual(natives[0], "native True False")  # the first looked, and found none
        self.assertEqual(natives[-1], "native False False")  # the pool's clones did not look again

    def test_with_hstore_in_the_template_every_engine_keeps_the_native_adapter(self):
        self.assertEqual(self.run_child(True), ["native True True"] * 3)


if __name__ == "__main__":
    unittest.main()
