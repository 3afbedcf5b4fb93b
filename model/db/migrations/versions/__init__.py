"""Alembic revisions of the schema, oldest first (Alembic skips this file)."""
