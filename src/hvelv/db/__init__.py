"""Database access: engine, sessions and Alembic migrations."""
