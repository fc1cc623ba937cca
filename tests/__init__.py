"""elefast's own tests; they need a real PostgreSQL server (see README.md)."""
