"""Unit of work: one transaction, rolled back unless committed; repositories on it.

It is also the one way the product publishes a message that follows a database change:
``uow.publish(msg)`` holds the message until ``commit()`` has succeeded, then hands
all of them to the publisher in one batch. So a worker never sees an id whose row is
not visible yet, and a rolled-back change publishes nothing.

A unit runs either on a SQLAlchemy Session (the repositories) or, for the per-entry
path (``uow.entry_pipeline``), on the pooled connection as psycopg's own: one or the
other, chosen by the first use. SQLAlchemy's Session and execution machinery cost
~0.35 ms of CPU per unit before any SQL; on the driver, an entry's three units cost
2.8 ms less (24.1 -> 21.2 ms per entry, one thread). The pool (its pings, its size) is
the same either way.

Driver errors are wrapped here, at the db edge, into our own hierarchy: connection
problems become DatabaseUnavailableError (transient); data and integrity errors (a NUL
in text, a broken constraint) become DataRejectedError (permanent: the same write can
never succeed, so a retry would only pay for the model calls again). Callers never see
psycopg, nor the SQL and parameters its messages carry.

With tracing on, each unit is a span named after the function that opened it (the
completion's among them), through ``trace_units``: db/ imports nothing of tracing.
"""

from __future__ import annotations

import logging
import sys
from types import TracebackType
from typing import Any, Protocol

import psycopg
from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from db.errors import first_line
from db.repositories import (
    AnalyticsRepository,
    ConsoleRepository,
    EntryPipelineRepository,
    EntryRepository,
    IntakeRepository,
    MediaRepository,
    ShowcaseRepository,
    UserRepository,
    VisualizationRepository,
)
from db.repositories.audit import AuditRepository
from db.repositories.reconcile import Dispatch, ReconcileRepository, record_dispatches
from domain.errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    DataRejectedError,
    TransientError,
)
from domain.messages import EntryCreated, MessageV1, Publisher

log = logging.getLogger("emotionviz.uow")

_UNAVAILABLE = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,  # no pooled connection came free in pool_timeout (30 s)
    psycopg.OperationalError,
    psycopg.InterfaceError,
)
_REJECTED = (sa_exc.DataError, sa_exc.IntegrityError, psycopg.DataError, psycopg.IntegrityError)


class UnitTracer(Protocol):
    """A span per unit of work (workers/observability/tracing.py: UnitSpans)."""

    def open(self, module: str, function: str) -> object: ...

    def close(self, handle: object, outcome: str, exc: BaseException | None) -> None: ...


# Set only while tracing is on (workers/observability/tracing.py); off, reading it is a
# unit's whole cost.
_unit_tracer: UnitTracer | None = None


def trace_units(tracer: UnitTracer | None) -> None:
    """Give every unit of work from now on a span (None: none)."""
    global _unit_tracer
    _unit_tracer = tracer


class UnitOfWork:
    def __init__(
        self, session_factory: sessionmaker[Session], publisher: Publisher | None = None
    ) -> None:
        self._session_factory = session_factory
        self._publisher = publisher
        self._outbox: list[MessageV1] = []
        self.published_ids: list[str] = []  # message ids sent by the last commit
        self.unpublished: list[MessageV1] = []  # held messages the broker refused
        self.publish_error: str | None = None

    def __enter__(self) -> UnitOfWork:
        self._outbox = []
        self._session: Session | None = None
        self._pooled: Any = None  # the pool's wrapper of the driver connection
        self._autocommit = False
        self._committed = False
        tracer = self._span_tracer = _unit_tracer
        if tracer is not None:  # named after the function that opened the unit
            caller = sys._getframe(1)
            self._span = tracer.open(
                caller.f_globals.get("__name__", "?"), caller.f_code.co_qualname
            )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._span_tracer is None:
            self._close(exc)
            return
        try:
            self._close(exc)
        except BaseException as raised:
            self._close_span("error", raised)
            raise
        outcome = (
            "committed" if self._committed else "autocommit" if self._autocommit else "rolled back"
        )
        self._close_span("error" if exc else outcome, exc)

    def _close_span(self, outcome: str, exc: BaseException | None) -> None:
        """End the unit's span; a failure there never replaces the unit's outcome."""
        assert self._span_tracer is not None
        try:
            self._span_tracer.close(self._span, outcome, exc)
        except Exception as failed:  # noqa: BLE001 - tracing never fails a unit of work
            log.warning("the unit's span could not be ended (%s)", type(failed).__name__)

    def _close(self, exc: BaseException | None) -> None:
        if self._session is not None:
            try:
                self._session.rollback()
            finally:
                self._session.close()
        if self._pooled is not None:
            self._return_driver(exc)
        # (SQLAlchemy's wrappers on a Session, psycopg's own on the driver connection.)
        if isinstance(exc, _UNAVAILABLE):
            raise DatabaseUnavailableError(f"database unavailable: {first_line(exc)}") from exc
        if isinstance(exc, _REJECTED):
            raise DataRejectedError(f"the database refused the data: {first_line(exc)}") from exc
        if isinstance(exc, UnicodeEncodeError):  # psycopg cannot encode a lone surrogate
            raise DataRejectedError(
                "the database refused the data: text is not valid Unicode"
            ) from exc

    # --- the unit's connection: a Session, or the driver's own ------------------------

    @property
    def session(self) -> Session:
        if self._session is None:
            if self._pooled is not None:
                raise RuntimeError("this unit of work already runs on the driver connection")
            self._session = self._session_factory()
            if self._autocommit:
                self._session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        return self._session

    @property
    def driver(self) -> psycopg.Connection[Any]:
        """The unit's pooled connection as psycopg's own (for db/repositories only)."""
        if self._pooled is None:
            if self._session is not None:
                raise RuntimeError("this unit of work already runs on a Session")
            engine = self._session_factory.kw["bind"]
            assert isinstance(engine, Engine)
            self._pooled = engine.raw_connection()
            self._pooled.driver_connection.autocommit = self._autocommit
        driver = self._pooled.driver_connection
        assert isinstance(driver, psycopg.Connection)
        return driver

    def _return_driver(self, exc: BaseException | None) -> None:
        pooled, self._pooled = self._pooled, None
        driver = pooled.driver_connection
        if driver.broken or driver.closed or isinstance(exc, psycopg.OperationalError):
            pooled.invalidate()  # the pool opens a new one
            return
        try:
            if driver.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                driver.rollback()
            driver.autocommit = False  # the pool's connections run transactions
        except psycopg.Error:
            pooled.invalidate()
            return
        pooled.close()  # back to the pool

    def single_statement(self) -> UnitOfWork:
        """For a unit that makes one write: run it in autocommit, so PostgreSQL commits
        that statement by itself, without the BEGIN and COMMIT round trips (two of the
        three per claim on the per-entry path); or one pipeline, whose statements the
        server runs as one transaction, committed at its end (the completion:
        db/repositories/entry_pipeline.py). Call
        before the first statement; ``commit()`` is then a no-op and nothing can be
        rolled back."""
        if self._session is not None or self._pooled is not None:
            raise RuntimeError("single_statement() must come before the unit's first statement")
        self._autocommit = True
        return self

    # --- repositories ----------------------------------------------------------------

    @property
    def users(self) -> UserRepository:
        return UserRepository(self.session)

    @property
    def entries(self) -> EntryRepository:
        return EntryRepository(self.session)

    @property
    def visualizations(self) -> VisualizationRepository:
        return VisualizationRepository(self.session)

    @property
    def entry_pipeline(self) -> EntryPipelineRepository:
        """The per-entry path's statements, on the driver connection."""
        return EntryPipelineRepository(self.driver)

    @property
    def reconcile(self) -> ReconcileRepository:
        return ReconcileRepository(self.session)

    @property
    def intake(self) -> IntakeRepository:
        return IntakeRepository(self.session)

    @property
    def analytics(self) -> AnalyticsRepository:
        return AnalyticsRepository(self.session)

    @property
    def media(self) -> MediaRepository:
        return MediaRepository(self.session)

    @property
    def showcase(self) -> ShowcaseRepository:
        """The devtools' read model."""
        return ShowcaseRepository(self.session)

    @property
    def audit(self) -> AuditRepository:
        """The operators' trail (workers/operations/audit.py)."""
        return AuditRepository(self.session)

    @property
    def console(self) -> ConsoleRepository:
        """The operator console's read model."""
        return ConsoleRepository(self.session)

    def commit(self) -> None:
        """Commit, then publish what ``publish`` held. The change is durable before a
        message leaves; if the broker still refuses after the producer's retries, the
        change stays committed (the reconciler republishes its work from the database),
        ``unpublished`` and ``publish_error`` say so, and a warning is logged."""
        self._record_dispatches()
        if self._session is not None:
            self._session.commit()
        elif self._pooled is not None and not self._autocommit:
            self.driver.commit()
        self._committed = True
        outbox, self._outbox = self._outbox, []
        self.unpublished, self.publish_error = [], None
        if outbox:
            assert self._publisher is not None  # publish() checked it
            try:
                self.published_ids = self._publisher.publish_many(outbox)
            except TransientError as exc:
                self.unpublished, self.publish_error = outbox, str(exc)
                log.warning(
                    "committed, but the messages could not be published; the reconciler "
                    "will publish their work again: %s",
                    exc,
                )

    def _record_dispatches(self) -> None:
        """Every entry.created leaves its time and requested style on the row, in this
        transaction: the reconciler republishes from that record (at most once per grace
        window, never a message still queued), and a failed publish loses no style."""
        dispatches = [
            Dispatch(m.entry_id, m.user_id, m.style.value if m.style else None)
            for m in self._outbox
            if isinstance(m, EntryCreated)
        ]
        if not dispatches:
            return
        if self._pooled is not None:
            record_dispatches(self.driver, dispatches)
        else:
            # The Session's own DBAPI connection, inside its transaction.
            record_dispatches(self.session.connection().connection.driver_connection, dispatches)

    def publish(self, message: MessageV1) -> None:
        """Publish ``message`` once this unit commits (never if it rolls back)."""
        if self._publisher is None:
            raise ConfigurationError("this unit of work was built without a publisher")
        self._outbox.append(message)
