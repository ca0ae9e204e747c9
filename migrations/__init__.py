"""Alembic migration scripts, shipped inside the wheel (db/migrate.py locates them with
importlib.resources). Never imported for its code: Alembic loads env.py and versions/
by file path."""
