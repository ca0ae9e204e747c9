"""Migrations build exactly the models' schema, and every spec constraint and index."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, inspect, text

from db import migrate
from db.engine import normalise_url

pytestmark = pytest.mark.integration

# Every constraint and index the seed spec names, and where a deviation maps it
# (docs/schema-deviations.md explains each).
SPEC_INDEXES = {
    "idx_users_email": "users_email_key",
    "idx_users_created_at": "idx_users_created_at",
    "idx_emotion_entries_user_id": "idx_emotion_entries_user_id",
    "idx_emotion_entries_created_at": "idx_emotion_entries_created_at",
    "idx_emotion_entries_emotions": "idx_emotion_entries_emotions",
    "idx_emotion_entries_emotions_gin": "idx_emotion_entries_emotions",
    "idx_emotion_entries_user_created": "idx_emotion_entries_user_created",
    "idx_emotion_entries_user_date_range": "idx_emotion_entries_user_date_range",
    "idx_visualizations_entry_id": "visualizations_entry_id_key",
    "idx_visualizations_user_id": "idx_visualizations_user_id",
    "idx_visualizations_status": "idx_visualizations_status",
    "idx_visualizations_created_at": "idx_visualizations_created_at",
    "idx_visualizations_user_status": "idx_visualizations_user_status",
    "idx_visualizations_active": "idx_visualizations_active",
    "idx_intake_sessions_user_id": "idx_intake_sessions_user_id",
    "idx_intake_sessions_created_at": "idx_intake_sessions_created_at",
    "idx_intake_sessions_is_complete": "idx_intake_sessions_is_complete",
    "idx_intake_sessions_incomplete": "idx_intake_sessions_incomplete",
    "idx_emotion_analytics_user_id": "idx_emotion_analytics_user_id",
    "idx_emotion_analytics_period": "idx_emotion_analytics_period",
    "idx_api_keys_user_id": "idx_api_keys_user_id",
    "idx_api_keys_key_hash": "api_keys_key_hash_key",
}
SPEC_CONSTRAINTS = [
    "users_email_check",
    "users_email_key",
    "emotions_not_empty",
    "emotion_entries_intensity_check",
    "emotion_entries_user_id_fkey",
    "visualizations_entry_id_key",
    "visualizations_entry_id_fkey",
    "visualizations_user_id_fkey",
    "status_check",
    "intake_sessions_user_id_fkey",
    "emotion_analytics_user_id_fkey",
    "emotion_analytics_user_id_period_start_period_end_key",
    "api_keys_user_id_fkey",
    "api_keys_key_hash_key",
    "emotion_entries_intake_session_id_fkey",
    "emotion_entries_emotions_vocabulary",
    "visualizations_style_check",
]
TABLES = {
    "users",
    "emotion_entries",
    "visualizations",
    "intake_sessions",
    "emotion_analytics",
    "api_keys",
}


def test_upgrade_check_downgrade_from_empty(empty_db_url: str) -> None:
    migrate.upgrade(empty_db_url)
    migrate.check(empty_db_url)  # raises if models and schema differ in any way
    engine = create_engine(normalise_url(empty_db_url))
    try:
        assert set(inspect(engine).get_table_names()) >= TABLES
        migrate.downgrade(empty_db_url, "base")
        inspector = inspect(engine)
        assert set(inspector.get_table_names()) == {"alembic_version"}
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 0
            functions = conn.execute(
                text("SELECT count(*) FROM pg_proc WHERE proname = 'set_updated_at'")
            ).scalar_one()
        assert functions == 0
    finally:
        engine.dispose()


def test_catalog_holds_every_spec_constraint_and_index(db_url: str) -> None:
    engine = create_engine(normalise_url(db_url))
    try:
        with engine.connect() as conn:
            indexes = set(
                conn.execute(
                    text("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")
                ).scalars()
            )
            constraints = set(
                conn.execute(
                    text(
                        "SELECT conname FROM pg_constraint WHERE connamespace = 'public'::regnamespace"
                    )
                ).scalars()
            )
            gin = conn.execute(
                text(
                    "SELECT indexdef FROM pg_indexes WHERE indexname = 'idx_emotion_entries_emotions'"
                )
            ).scalar_one()
            partial = conn.execute(
                text(
                    "SELECT indexdef FROM pg_indexes WHERE indexname = 'idx_visualizations_active'"
                )
            ).scalar_one()
            cascades = dict(
                conn.execute(
                    text("SELECT conname, confdeltype FROM pg_constraint WHERE contype = 'f'")
                ).all()
            )
    finally:
        engine.dispose()
    missing_indexes = {spec for spec, real in SPEC_INDEXES.items() if real not in indexes}
    assert not missing_indexes
    assert not set(SPEC_CONSTRAINTS) - constraints
    assert "USING gin" in gin
    assert "WHERE" in partial and "pending" in partial
    # 'c' = ON DELETE CASCADE; the one deliberate exception is SET NULL ('n').
    assert cascades.pop("emotion_entries_intake_session_id_fkey") == "n"
    assert set(cascades.values()) == {"c"}


def test_a_revision_whose_index_build_failed_runs_again(empty_db_url: str) -> None:
    """0003 builds its index CONCURRENTLY, outside the migration's transaction: if that
    build fails, the DDL before it is committed and the revision not recorded. Running
    the upgrade again must then succeed and build the index."""
    migrate.upgrade(empty_db_url, "0003")
    engine = create_engine(normalise_url(empty_db_url))
    try:
        with engine.begin() as conn:  # as if the build had failed after the DDL
            conn.execute(text("DROP INDEX idx_visualizations_pending_dispatch"))
            conn.execute(text("UPDATE alembic_version SET version_num = '0002'"))
        migrate.upgrade(empty_db_url, "0003")
        with engine.connect() as conn:
            valid = conn.execute(
                text(
                    "SELECT i.indisvalid FROM pg_index i JOIN pg_class c "
                    "ON c.oid = i.indexrelid WHERE c.relname = 'idx_visualizations_pending_dispatch'"
                )
            ).scalar_one()
            version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        assert valid and version == "0003"
    finally:
        engine.dispose()
