"""A small SQLAlchemy application with a legacy-style unittest suite that uses elefast."""
