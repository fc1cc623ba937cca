"""An env.py that runs the migrations on a connection of its own, as mlflow's does.

mlflow's migrations start from tables its models create (``InitialBase.metadata``), so the
documented recipe is ``ChainMigrator(MetadataMigrator(InitialBase.metadata), AlembicMigrator(...))``.
Its env.py takes the connection elefast hands it only for its engine, and opens a connection of
its own: that one could not see the tables the first step made in elefast's (uncommitted)
transaction, and the first revision failed with ``relation "metrics" does not exist``. The
env.py here is written in that shape (not copied); elefast now commits the earlier steps first.
"""

import asyncio
import contextlib
import io
import shutil
import tempfile
import textwrap
import unittest
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Column, Float, Integer, MetaData, String, Table, text

from elefast import AsyncDatabaseServer, ChainMigrator, DatabaseServer, MetadataMigrator
from elefast.extras.alembic import AlembicMigrator
from tests import support

OWN_CONNECTION_ENV = '''
from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config


def run_migrations_online():
    given = config.attributes.get("connection", None)
    if given is None:
        engine = engine_from_config(config.get_section(config.config_ini_section), prefix="sqlalchemy.",
                                    poolclass=pool.NullPool)
    else:
        engine = given.engine  # only its engine is used: the migrations get a connection of their own
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=None)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
'''

REVISION = '''
"""The step after the initial tables: a column on metrics."""
from alembic import op
import sqlalchemy as sa

revision = "m1"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("metrics", sa.Column("step", sa.Integer, nullable=False, server_default="0"))
    op.execute("INSERT INTO metrics (key, value, step) VALUES ('loss', 0.5, 1)")


def downgrade():
    op.drop_column("metrics", "step")
'''

INITIAL = MetaData()
Table("metrics", INITIAL, Column("id", Integer, primary_key=True), Column("key", String(250)), Column("value", Float))


class EnvPyOwnConnectionTests(unittest.TestCase):
    def setUp(self):
        self.root = Path(tempfile.mkdtemp(prefix="elefast-own-connection-"))
        self.addCleanup(shutil.rmtree, self.root, True)
        self.ini = self.root / "alembic.ini"
        with contextlib.redirect_stdout(io.StringIO()):
            command.init(Config(str(self.ini)), str(self.root / "migrations"))
        (self.root / "migrations" / "env.py").write_text(textwrap.dedent(OWN_CONNECTION_ENV))
        (self.root / "migrations" / "versions" / "m1_step.py").write_text(REVISION)
        self.prefix = support.unique_prefix("ownc")
        self.addCleanup(support.drop_templates, self.prefix)

    def schema(self):
        return ChainMigrator(MetadataMigrator(INITIAL), AlembicMigrator(str(self.ini)))

    def test_the_chain_recipe_works_on_the_sync_server(self):
        server = DatabaseServer(support.server_url(), schema=self.schema())
        try:
            with self.assertLogs("elefast", "INFO") as logs:
                with server.create_database(prefix=self.prefix) as database, database.engine.connect() as c:
                    rows = c.execute(text("SELECT key, value, step FROM metrics")).all()
        finally:
            server.close()
        self.assertEqual([tuple(row) for row in rows], [("loss", 0.5, 1)])
        said = "\n".join(logs.output)
        self.assertRegex(said, r"env.py:\d+: .*connection of its own; the 1 ChainMigrator step")

    def test_the_chain_recipe_works_on_the_async_server(self):
        async def run():
            server = AsyncDatabaseServer(support.server_url(), schema=self.schema())
            try:
                async with await server.create_database(prefix=self.prefix) as database:
                    async with database.engine.connect() as connection:
                        return (await connection.execute(text("SELECT key, step FROM metrics"))).all()
            finally:
                await server.close()

        self.assertEqual([tuple(row) for row in asyncio.run(run())], [("loss", 1)])


if __name__ == "__main__":
    unittest.main()
