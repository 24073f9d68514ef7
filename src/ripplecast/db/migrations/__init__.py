"""Alembic scripts of the metadata schema (run through `ripplecast.db.migrate`)."""
