"""Alembic's entry point for the example application.

Two ways in: a connection someone hands over in ``config.attributes["connection"]``
(elefast does, to migrate its template database inside its own transaction), or the
URL in ``APP_DATABASE_URL`` when a person runs ``alembic upgrade head``.
"""

import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine

from examples.legacy_app.models import Base

config = context.config
if config.config_file_name and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name)


def migrate(connection) -> None:
    """Run every pending migration on ``connection``, in one transaction."""
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()


handed_over = config.attributes.get("connection")
if handed_over is not None:
    migrate(handed_over)
elif context.is_offline_mode():
    context.configure(url=os.environ["APP_DATABASE_URL"], target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = create_engine(os.environ["APP_DATABASE_URL"])
    with engine.connect() as own_connection:
        migrate(own_connection)
    engine.dispose()
