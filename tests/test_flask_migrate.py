"""A Flask-Migrate project as ``flask db init`` writes it: its env.py runs unchanged, given the app (or its
factory), and migrates the template, not the app's configured database (sqlite here)."""

import contextlib
import io
import tempfile
import unittest
from pathlib import Path

from sqlalchemy import text

from elefast import AsyncDatabaseServer, DatabaseServer
from elefast.errors import MigrationError
from elefast.extras.alembic import AlembicMigrator
from tests import support

try:
    import flask
    import flask_migrate
    import flask_sqlalchemy
except ImportError:  # the test extra installs them
    flask = None

REVISION = '''"""users"""
from alembic import op
import sqlalchemy as sa

revision = "f1"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("user", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("email", sa.String(120), unique=True))
    op.execute("INSERT INTO \\"user\\" (email) VALUES ('admin@example.com')")


def downgrade():
    op.drop_table("user")
'''


def make_app(database_uri="sqlite://"):
    """An app factory as Flask projects have one: Flask-SQLAlchemy's db and Flask-Migrate on it."""
    app = flask.Flask("eft_flask_app")
    app.config["SQLALCHEMY_DATABASE_URI"] = database_uri
    db = flask_sqlalchemy.SQLAlchemy()
    db.init_app(app)
    flask_migrate.Migrate(app, db)
    return app


def flask_project(root: Path) -> Path:
    """``flask db init`` (Flask-Migrate's own template, unchanged) plus one revision; the folder."""
    folder = root / "migrations"
    with make_app().app_context(), contextlib.redirect_stdout(io.StringIO()):
        flask_migrate.init(directory=str(folder))
    (folder / "versions" / "f1_users.py").write_text(REVISION)
    return folder


@unittest.skipIf(flask is None, "Flask, Flask-SQLAlchemy and Flask-Migrate are not installed")
class FlaskMigrateTests(unittest.TestCase):
    def setUp(self):
        self.prefix = support.unique_prefix("flk")
        self.root = Path(tempfile.mkdtemp(prefix="elefast-flask-"))
        self.folder = flask_project(self.root)
        self.addCleanup(lambda: self.assertEqual(support.databases(self.prefix + "%"), []))
        self.addCleanup(support.drop_templates, self.prefix)

    def emails(self, migrator):
        server = DatabaseServer(support.server_url(), schema=migrator)
        try:
            with server.create_database(prefix=self.prefix) as database, database.engine.connect() as c:
                return c.execute(text('SELECT email FROM "user"')).scalars().all()
        finally:
            server.close()

    def test_unchanged_env_py_given_the_app_factory(self):
        self.assertIn("current_app.extensions['migrate']", (self.folder / "env.py").read_text())
        self.assertNotIn("script_location", (self.folder / "alembic.ini").read_text())
        self.assertEqual(self.emails(AlembicMigrator(self.folder, app=make_app)), ["admin@example.com"])

    def test_given_the_app_whose_engine_is_left_as_it_was(self):
        app = make_app()
        with app.app_context():
            before = app.extensions["sqlalchemy"].engine
        self.assertEqual(self.emails(AlembicMigrator(self.folder, app=app)), ["admin@example.com"])
        with app.app_context():
            self.assertIs(app.extensions["sqlalchemy"].engine, before)
            self.assertEqual(before.dialect.name, "sqlite")

    def test_an_older_env_py_that_reads_the_apps_config_uri(self):
        """Flask-Migrate's env.py of a few years ago (microblog's): sqlalchemy.url from the app's config
        URI, handed to set_main_option unescaped; here over a socket (``?host=%2Fvar%2Frun...``)."""
        env = self.folder / "env.py"
        env.write_text(env.read_text().replace(
            "config.set_main_option('sqlalchemy.url', get_engine_url())",
            "config.set_main_option('sqlalchemy.url', current_app.config.get('SQLALCHEMY_DATABASE_URI'))"))
        app = make_app()
        url = "postgresql+psycopg://postgres@/postgres?host=/var/run/postgresql"
        if not Path("/var/run/postgresql/.s.PGSQL.5432").exists():
            url = support.psycopg_url()
        server = DatabaseServer(url, schema=AlembicMigrator(self.folder, app=app))
        try:
            with server.create_database(prefix=self.prefix) as database, database.engine.connect() as c:
                emails = c.execute(text('SELECT email FROM "user"')).scalars().all()
        finally:
            server.close()
        self.assertEqual(emails, ["admin@example.com"])
        self.assertEqual(app.config["SQLALCHEMY_DATABASE_URI"], "sqlite://")  # put back

    def test_an_env_py_that_sets_its_own_url_is_named_with_that_url(self):
        """An env.py that points sqlalchemy.url at its own database and connects through it: the
        error says where the migrations went."""
        env, own = self.folder / "env.py", f"sqlite:///{self.root}/app.db"
        text_ = env.read_text().replace("config.set_main_option('sqlalchemy.url', get_engine_url())",
                                        f"config.set_main_option('sqlalchemy.url', {own!r})")
        env.write_text(text_.replace(
            "connectable = get_engine()",
            "from sqlalchemy import engine_from_config; "
            "connectable = engine_from_config(config.get_section(config.config_ini_section), prefix='sqlalchemy.')"))
        expected = f"env.py:\\d+: .*about to run the migrations on a connection to {own}"
        with self.assertRaisesRegex(MigrationError, expected):
            self.emails(AlembicMigrator(self.folder, app=make_app))

    def test_without_the_app_the_error_says_to_give_it(self):
        with self.assertRaisesRegex(MigrationError, r"app=create_app"):
            self.emails(AlembicMigrator(self.folder))


@unittest.skipIf(flask is None, "Flask, Flask-SQLAlchemy and Flask-Migrate are not installed")
class AsyncFlaskMigrateTests(unittest.IsolatedAsyncioTestCase):
    async def test_on_the_async_server(self):
        prefix = support.unique_prefix("flka")
        self.addCleanup(support.drop_templates, prefix)
        with tempfile.TemporaryDirectory() as root:
            server = AsyncDatabaseServer(support.server_url(),
                                         schema=AlembicMigrator(flask_project(Path(root)), app=make_app))
            async with await server.create_database(prefix=prefix) as database:
                async with database.engine.connect() as connection:
                    emails = (await connection.execute(text('SELECT email FROM "user"'))).scalars().all()
            await server.close()
        self.assertEqual(emails, ["admin@example.com"])


if __name__ == "__main__":
    unittest.main()
