"""The app's database: an engine from the app's settings, made when the module is imported."""

import os

from sqlmodel import Session, create_engine

DATABASE_URL = os.environ.get("HEROES_DATABASE_URL", "postgresql+psycopg://heroes:secret@heroes-db:5432/heroes")
engine = create_engine(DATABASE_URL)


def get_db():
    """The FastAPI dependency: one session per request."""
    with Session(engine) as session:
        yield session
