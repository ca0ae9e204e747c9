"""SQLAlchemy 2 typed models of the six seed tables (docs/schema-deviations.md lists
where and why they differ from the seed spec).

Constraints are enforced by PostgreSQL itself; the @validates hooks only give a clearer
error earlier. The vocabulary and enums come from domain.vocabulary.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, validates

from domain.vocabulary import (
    EMOTIONS,
    EntrySource,
    VisualizationStatus,
    VisualizationStyle,
    invalid_emotions,
    sql_text_array,
)

EMAIL_REGEX = r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$"

UUID_PK = dict(primary_key=True, server_default=text("gen_random_uuid()"), default=uuid.uuid4)


def _values(enum: type[Any]) -> str:
    return ", ".join(f"'{member.value}'" for member in enum)


# PostgreSQL's own default names, so the catalog reads the same however a table was made.
NAMING_CONVENTION = {
    "pk": "%(table_name)s_pkey",
    "uq": "%(table_name)s_%(column_0_N_name)s_key",
    "fk": "%(table_name)s_%(column_0_name)s_fkey",
    "ix": "idx_%(table_name)s_%(column_0_N_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=text("now()")
    )
    # A trigger (set_updated_at) also bumps this for writers that bypass the ORM.
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True),
        nullable=False,
        server_default=text("now()"),
        onupdate=text("now()"),
    )


class User(TimestampMixin, Base):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint(f"email ~* '{EMAIL_REGEX}'", name="users_email_check"),
        Index("idx_users_created_at", text("created_at DESC")),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), **UUID_PK)  # type: ignore[arg-type]
    email: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    hashed_password: Mapped[str] = mapped_column(String(255), nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    is_verified: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    emotion_entries: Mapped[list[EmotionEntry]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )
    intake_sessions: Mapped[list[IntakeSession]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )


class IntakeSession(TimestampMixin, Base):
    __tablename__ = "intake_sessions"
    __table_args__ = (
        CheckConstraint("current_step >= 1", name="intake_sessions_current_step_check"),
        CheckConstraint(
            "jsonb_typeof(conversation_history) = 'array'",
            name="intake_sessions_history_is_array",
        ),
        CheckConstraint(
            "NOT is_complete OR completed_at IS NOT NULL",
            name="intake_sessions_completed_at_check",
        ),
        Index("idx_intake_sessions_user_id", "user_id"),
        Index("idx_intake_sessions_created_at", text("created_at DESC")),
        Index("idx_intake_sessions_is_complete", "is_complete"),
        Index(
            "idx_intake_sessions_incomplete",
            "user_id",
            text("updated_at DESC"),
            postgresql_where=text("is_complete = false"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), **UUID_PK)  # type: ignore[arg-type]
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    initial_situation: Mapped[str] = mapped_column(Text, nullable=False)
    conversation_history: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONB, nullable=False, server_default=text("'[]'::jsonb"), default=list
    )
    current_step: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("1"))
    is_complete: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    ai_context: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    final_summary: Mapped[str | None] = mapped_column(Text)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    user: Mapped[User] = relationship(back_populates="intake_sessions")
    emotion_entry: Mapped[EmotionEntry | None] = relationship(back_populates="intake_session")


class EmotionEntry(TimestampMixin, Base):
    __tablename__ = "emotion_entries"
    __table_args__ = (
        CheckConstraint(
            "intensity >= 0 AND intensity <= 1", name="emotion_entries_intensity_check"
        ),
        # cardinality(), not array_length(): array_length('{}', 1) is NULL and a NULL
        # CHECK passes, so the spec's version would accept an empty array.
        CheckConstraint("cardinality(emotions) > 0", name="emotions_not_empty"),
        CheckConstraint(
            f"emotions <@ {sql_text_array(EMOTIONS)}", name="emotion_entries_emotions_vocabulary"
        ),
        CheckConstraint(f"source IN ({_values(EntrySource)})", name="emotion_entries_source_check"),
        UniqueConstraint("intake_session_id", name="emotion_entries_intake_session_id_key"),
        Index("idx_emotion_entries_user_id", "user_id"),
        Index("idx_emotion_entries_created_at", text("created_at DESC")),
        Index("idx_emotion_entries_emotions", "emotions", postgresql_using="gin"),
        Index("idx_emotion_entries_user_created", "user_id", text("created_at DESC")),
        # The spec's predicate (created_at >= NOW() - 90 days) cannot be indexed: NOW()
        # is not immutable. A covering index serves the same per-user range scans.
        Index(
            "idx_emotion_entries_user_date_range",
            "user_id",
            "created_at",
            postgresql_include=["intensity", "emotions"],
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), **UUID_PK)  # type: ignore[arg-type]
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    situation: Mapped[str] = mapped_column(Text, nullable=False)
    emotions: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    intensity: Mapped[Decimal] = mapped_column(Numeric(3, 2), nullable=False)
    notes: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(50), nullable=False, server_default=text("'manual'"))
    # Deleting a session must not delete what the person wrote: SET NULL, not CASCADE.
    intake_session_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("intake_sessions.id", ondelete="SET NULL")
    )

    user: Mapped[User] = relationship(back_populates="emotion_entries")
    visualization: Mapped[Visualization | None] = relationship(
        back_populates="emotion_entry", cascade="all, delete-orphan", passive_deletes=True
    )
    intake_session: Mapped[IntakeSession | None] = relationship(back_populates="emotion_entry")

    @validates("intensity")
    def _validate_intensity(self, _key: str, value: Decimal) -> Decimal:
        if not (0 <= Decimal(value) <= 1):
            raise ValueError("Intensity must be between 0 and 1")
        return value

    @validates("emotions")
    def _validate_emotions(self, _key: str, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("At least one emotion must be specified")
        unknown = invalid_emotions(value)
        if unknown:
            raise ValueError(f"Invalid emotion: {', '.join(unknown)}")
        return value

    @validates("source")
    def _validate_source(self, _key: str, value: str) -> str:
        return EntrySource(value).value


class Visualization(TimestampMixin, Base):
    __tablename__ = "visualizations"
    __table_args__ = (
        CheckConstraint(f"status IN ({_values(VisualizationStatus)})", name="status_check"),
        CheckConstraint(
            f"style IN ({_values(VisualizationStyle)})", name="visualizations_style_check"
        ),
        CheckConstraint("claim_count >= 0", name="visualizations_claim_count_check"),
        Index("idx_visualizations_user_id", "user_id"),
        Index("idx_visualizations_status", "status"),
        Index("idx_visualizations_created_at", text("created_at DESC")),
        Index("idx_visualizations_user_status", "user_id", "status"),
        # What runs every few seconds (status, the console, the metrics: 0004): finished
        # rows by completion time, failed rows newest first.
        Index(
            "idx_visualizations_finished_at",
            "processing_completed_at",
            postgresql_include=["status"],
            postgresql_where=text("status IN ('completed', 'failed')"),
        ),
        Index(
            "idx_visualizations_failed_at",
            text("coalesce(processing_completed_at, updated_at) DESC"),
            "entry_id",
            postgresql_where=text("status = 'failed'"),
        ),
        Index(
            "idx_visualizations_active",
            "user_id",
            text("created_at DESC"),
            postgresql_where=text("status IN ('pending', 'processing')"),
        ),
        # The reconciler's read of pending rows by the time their last message left
        # (db/repositories/reconcile.py).
        Index(
            "idx_visualizations_pending_dispatch",
            "dispatched_at",
            postgresql_where=text("status = 'pending'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), **UUID_PK)  # type: ignore[arg-type]
    entry_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True),
        ForeignKey("emotion_entries.id", ondelete="CASCADE"),
        nullable=False,
        unique=True,
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    status: Mapped[str] = mapped_column(
        String(50), nullable=False, server_default=text("'pending'")
    )
    style: Mapped[str] = mapped_column(
        String(50), nullable=False, server_default=text("'abstract'")
    )
    image_url: Mapped[str | None] = mapped_column(Text)
    thumbnail_url: Mapped[str | None] = mapped_column(Text)
    summary: Mapped[str | None] = mapped_column(Text)
    insights: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    visual_elements: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    error_message: Mapped[str | None] = mapped_column(Text)
    gemini_analysis: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    nanobanana_response: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    processing_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    processing_completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Not in the seed spec (docs/schema-deviations.md): the lease a worker's heartbeat
    # renews, and how many claims in a row never finished (the crash-loop cap).
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    claim_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    # When a message for this row was last sent, or when its retry is due (a quota's
    # delay): the reconciler republishes a pending row at most once per grace window
    # after this (docs/reliability.md).
    dispatched_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=text("now()")
    )

    emotion_entry: Mapped[EmotionEntry] = relationship(back_populates="visualization")
    user: Mapped[User] = relationship()

    @validates("status")
    def _validate_status(self, _key: str, value: str) -> str:
        return VisualizationStatus(value).value

    @validates("style")
    def _validate_style(self, _key: str, value: str) -> str:
        return VisualizationStyle(value).value


class EmotionAnalytics(Base):
    __tablename__ = "emotion_analytics"
    __table_args__ = (
        UniqueConstraint("user_id", "period_start", "period_end"),
        CheckConstraint("period_end >= period_start", name="emotion_analytics_period_check"),
        CheckConstraint(
            "average_intensity IS NULL OR (average_intensity >= 0 AND average_intensity <= 1)",
            name="emotion_analytics_average_intensity_check",
        ),
        CheckConstraint(
            "total_entries IS NULL OR total_entries >= 0",
            name="emotion_analytics_total_entries_check",
        ),
        Index("idx_emotion_analytics_user_id", "user_id"),
        Index("idx_emotion_analytics_period", "period_start", "period_end"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), **UUID_PK)  # type: ignore[arg-type]
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    period_start: Mapped[date] = mapped_column(Date, nullable=False)
    period_end: Mapped[date] = mapped_column(Date, nullable=False)
    emotion_counts: Mapped[dict[str, int]] = mapped_column(JSONB, nullable=False)
    average_intensity: Mapped[Decimal | None] = mapped_column(Numeric(3, 2))
    total_entries: Mapped[int | None] = mapped_column(Integer)
    most_common_emotions: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    insights: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    computed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=text("now()")
    )


class ApiKey(Base):
    __tablename__ = "api_keys"
    __table_args__ = (Index("idx_api_keys_user_id", "user_id"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), **UUID_PK)  # type: ignore[arg-type]
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    key_hash: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    scopes: Mapped[list[str]] = mapped_column(
        ARRAY(Text), nullable=False, server_default=text("ARRAY['read'::text, 'write'::text]")
    )
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=text("now()")
    )


TABLES_WITH_UPDATED_AT = ("users", "emotion_entries", "visualizations", "intake_sessions")


class AnalyticsRefreshQueue(Base):
    """(person, UTC day) of entries deleted or edited (filled by triggers on
    emotion_entries; not in the seed spec): the maintenance pass refreshes the periods
    of that day (workers/services/analytics.py), then deletes the row."""

    __tablename__ = "analytics_refresh_queue"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    day: Mapped[date] = mapped_column(Date, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class MediaGarbage(Base):
    """Pictures whose visualization was deleted (filled by a trigger; not in the seed
    spec): a worker deletes the files, then the row."""

    __tablename__ = "media_garbage"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    visualization_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class EntryArrival(Base):
    """An entry inserted (by anyone) and not yet seen with a visualization row: filled
    by a statement-level trigger on emotion_entries, emptied by the claim and by the
    reconciler, which adopts what stays (not in the seed spec)."""

    __tablename__ = "entry_arrivals"
    __table_args__ = (Index("idx_entry_arrivals_arrived_at", "arrived_at"),)

    entry_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True),
        ForeignKey("emotion_entries.id", ondelete="CASCADE"),
        primary_key=True,
    )
    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    arrived_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class CompletionEvent(Base):
    """A visualization that reached completed or failed, or an intake session that
    completed (filled by triggers in the writer's transaction, migration 0006; not in the
    seed spec): the outbox the workers deliver to the subscribers EVENTS_* configure
    (workers/services/events.py). ``payload`` is exactly what the NOTIFY carried."""

    __tablename__ = "completion_events"
    __table_args__ = (
        UniqueConstraint("event_id", name="completion_events_event_id_key"),
        Index("idx_completion_events_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), nullable=False, server_default=text("gen_random_uuid()")
    )
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class EventSubscriber(Base):
    """A subscriber's high-water mark: the last completion event given it a delivery row
    (workers/services/events.py; not in the seed spec)."""

    __tablename__ = "event_subscribers"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    fanned_out_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class EventDelivery(Base):
    """One completion event on its way to one subscriber ('queue' or 'webhook'): pending
    (due at next_attempt_at), delivered, or dead after EVENTS_MAX_ATTEMPTS, with the
    reason (not in the seed spec)."""

    __tablename__ = "event_deliveries"
    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'delivered', 'dead')", name="event_deliveries_status_check"
        ),
        Index(
            "idx_event_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
        ),
        Index("idx_event_deliveries_dead", "event_id", postgresql_where=text("status = 'dead'")),
    )

    event_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("completion_events.id", ondelete="CASCADE"), primary_key=True
    )
    subscriber: Mapped[str] = mapped_column(Text, primary_key=True)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("'pending'"))
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    # The claim that holds the row (never reset by a replay, unlike attempts).
    claim: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class OperatorAction(Base):
    """One change an operator made through the CLI or the console, or a console read of
    a person's entry text (migration 0009; not in the seed spec): ``emotionviz audit``."""

    __tablename__ = "operator_actions"
    __table_args__ = (
        CheckConstraint(
            "length(operator) >= 1 AND length(operator) <= 200",
            name="operator_actions_operator_check",
        ),
        CheckConstraint("source IN ('cli', 'console')", name="operator_actions_source_check"),
        CheckConstraint(
            "length(action) >= 1 AND length(action) <= 100", name="operator_actions_action_check"
        ),
        CheckConstraint("length(target) <= 1000", name="operator_actions_target_check"),
        CheckConstraint("count >= 0", name="operator_actions_count_check"),
        Index("idx_operator_actions_at", text("at DESC")),
        Index("idx_operator_actions_operator", "operator", text("at DESC")),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    operator: Mapped[str] = mapped_column(Text, nullable=False)
    source: Mapped[str] = mapped_column(Text, nullable=False)
    action: Mapped[str] = mapped_column(Text, nullable=False)
    target: Mapped[str | None] = mapped_column(Text)
    count: Mapped[int | None] = mapped_column(BigInteger)
    detail: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )


class Operator(Base):
    """A named operator token (migration 0009): ``emotionviz operator add NAME --scope``.
    Only the SHA-256 of the random token is kept; a revoked token keeps its row."""

    __tablename__ = "operators"
    __table_args__ = (
        CheckConstraint("name ~ '^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$'", name="operators_name_check"),
        CheckConstraint("scope IN ('read', 'write')", name="operators_scope_check"),
        CheckConstraint("token_sha256 ~ '^[0-9a-f]{64}$'", name="operators_token_sha256_check"),
        UniqueConstraint("token_sha256", name="operators_token_sha256_key"),
        Index(
            "uq_operators_live_name",
            "name",
            unique=True,
            postgresql_where=text("revoked_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    scope: Mapped[str] = mapped_column(Text, nullable=False)
    token_sha256: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    created_by: Mapped[str] = mapped_column(Text, nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PausedQueue(Base):
    """A queue an operator paused (migration 0009, issue 24.3): the truth the workers'
    Redis mirror is rebuilt from (workers/operations/pauses.py)."""

    __tablename__ = "paused_queues"
    __table_args__ = (
        CheckConstraint(
            "length(name) >= 1 AND length(name) <= 100", name="paused_queues_name_check"
        ),
        CheckConstraint("length(reason) <= 500", name="paused_queues_reason_check"),
    )

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    paused_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    paused_by: Mapped[str] = mapped_column(Text, nullable=False)
    reason: Mapped[str | None] = mapped_column(Text)


# Job search (migration 0010, issue 24.1): failed rows by failure class (the SQL twin of
# domain/failures.py, created by the migration), and the rows not completed by status,
# each newest first in the listing's keyset order.
Index(
    "idx_visualizations_failed_class",
    func.visualization_failure_class(Visualization.error_message),
    Visualization.created_at.desc(),
    Visualization.id.desc(),
    postgresql_where=text("status = 'failed'"),
)
Index(
    "idx_visualizations_open_status",
    Visualization.status,
    Visualization.created_at.desc(),
    Visualization.id.desc(),
    postgresql_where=text("status <> 'completed'"),
)


class ErasedUser(Base):
    """A tombstone of a person erased by ``emotionviz user erase`` (migration 0011; not
    in the seed spec): the SHA-256 of the id, never the id, and the erasure's counts.
    ``emotionviz restore`` applies every tombstone again after loading a backup."""

    __tablename__ = "erased_users"
    __table_args__ = (
        CheckConstraint("length(user_digest) = 32", name="erased_users_user_digest_check"),
    )

    user_digest: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    erased_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    report: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )


# The retention purge's walk over completed rows that still hold raw model responses
# (RETENTION_RAW_RESPONSES_DAYS; migration 0011).
Index(
    "idx_visualizations_raw_responses",
    Visualization.processing_completed_at,
    postgresql_where=text(
        "status = 'completed' AND ((gemini_analysis - 'analysis') <> '{}'::jsonb "
        "OR (nanobanana_response - '{width,height,bytes,mime_type}'::text[]) <> '{}'::jsonb)"
    ),
)
# An erasure's completion events: those whose payload names the person (migration 0011).
Index(
    "idx_completion_events_payload_user",
    CompletionEvent.payload["user_id"].astext,
)


class ModelCall(Base):
    """One attempt the model API received, with its tokens, outcome and estimated cost
    (migration 0007, issue 23.3; not in the seed spec; domain/ledger.py says what counts).
    No foreign keys: the accounting outlives the entry or session it was for."""

    __tablename__ = "model_calls"
    __table_args__ = (
        CheckConstraint("kind IN ('analysis', 'image', 'intake')", name="model_calls_kind_check"),
        Index("idx_model_calls_user_at", "user_id", "at"),
        Index("idx_model_calls_at", "at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    user_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    entry_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    intake_session_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    model: Mapped[str] = mapped_column(Text, nullable=False)
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    input_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    image: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    outcome: Mapped[str] = mapped_column(Text, nullable=False)
    cost_usd: Mapped[Decimal] = mapped_column(
        Numeric(12, 6), nullable=False, server_default=text("0")
    )


class FairTurn(Base):
    """A person with fresh entries waiting in the pool, and when they last had a turn
    (migration 0008, issue 23.2; not in the seed spec): the ring ``fair_claim`` takes
    people from (docs/reliability.md, "Fairness")."""

    __tablename__ = "fair_turns"
    __table_args__ = (Index("idx_fair_turns_turn_at", "turn_at"),)

    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    turn_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class FairWaiting(Base):
    """An entry whose message is a token in the pool (migration 0008): lane 0 its first
    dispatch (fresh), lane 1 a republish (the reconciler, a replay)."""

    __tablename__ = "fair_waiting"
    __table_args__ = (
        CheckConstraint("lane IN (0, 1)", name="fair_waiting_lane_check"),
        Index(
            "idx_fair_waiting_fresh",
            "user_id",
            "queued_at",
            "seq",
            postgresql_where=text("lane = 0"),
        ),
        Index("idx_fair_waiting_low", "queued_at", "seq", postgresql_where=text("lane = 1")),
    )

    entry_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True),
        ForeignKey("emotion_entries.id", ondelete="CASCADE"),
        primary_key=True,
    )
    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    lane: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    queued_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    # Publish order among rows of one transaction (the same queued_at): oldest first
    # must not depend on a sort's order of ties.
    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=True), nullable=False)
