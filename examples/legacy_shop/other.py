"""Not engines: for the error tests."""

from sqlalchemy import create_engine

settings = {"url": "postgresql://"}
sqlite_engine = create_engine("sqlite://")
