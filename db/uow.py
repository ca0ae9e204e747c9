"""Unit of work: one transaction, rolled back unless committed; repositories on it.

It is also the one way the product publishes a message that follows a database change:
``uow.publish(msg)`` holds the message until ``commit()`` has succeeded, then hands
all of them to the publisher in one batch. So a worker never sees an id whose row is
not visible yet, and a rolled-back change publishes nothing.

Driver errors are wrapped here, at the db edge, into our own hierarchy: connection
problems become DatabaseUnavailableError (transient); data and integrity errors (a NUL
in text, a broken constraint) become DataRejectedError (permanent: the same write can
never succeed, so a retry would only pay for the model calls again). Callers never see
psycopg, nor the SQL and parameters its messages carry.
"""

from __future__ import annotations

import logging
from types import TracebackType

from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from db.repositories import (
    AnalyticsRepository,
    ConsoleRepository,
    EntryRepository,
    IntakeRepository,
    MediaRepository,
    ShowcaseRepository,
    UserRepository,
    VisualizationRepository,
)
from domain.errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    DataRejectedError,
    TransientError,
)
from domain.messages import MessageV1, Publisher

log = logging.getLogger("emotionviz.uow")


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
        self.session = self._session_factory()
        self.users = UserRepository(self.session)
        self.entries = EntryRepository(self.session)
        self.visualizations = VisualizationRepository(self.session)
        self.intake = IntakeRepository(self.session)
        self.analytics = AnalyticsRepository(self.session)
        self.media = MediaRepository(self.session)
        self.showcase = ShowcaseRepository(self.session)  # the devtools' read model
        self.console = ConsoleRepository(self.session)  # the operator console's read model
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.session.rollback()
        finally:
            self.session.close()
        if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
            raise DatabaseUnavailableError(f"database unavailable: {_detail(exc)}") from exc
        if isinstance(exc, sa_exc.DataError | sa_exc.IntegrityError):
            raise DataRejectedError(f"the database refused the data: {_detail(exc)}") from exc
        if isinstance(exc, UnicodeEncodeError):  # psycopg cannot encode a lone surrogate
            raise DataRejectedError(
                "the database refused the data: text is not valid Unicode"
            ) from exc

    def single_statement(self) -> UnitOfWork:
        """For a unit that makes one write: run it in autocommit, so PostgreSQL commits
        that statement by itself, without the BEGIN and COMMIT round trips (two of the
        three per claim on the per-entry path). Call before the first statement;
        ``commit()`` is then a no-op and nothing can be rolled back."""
        self.session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        return self

    def commit(self) -> None:
        """Commit, then publish what ``publish`` held. The change is durable before a
        message leaves; if the broker still refuses after the producer's retries, the
        change stays committed (the reconciler republishes its work from the database),
        ``unpublished`` and ``publish_error`` say so, and a warning is logged."""
        self.session.commit()
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

    def publish(self, message: MessageV1) -> None:
        """Publish ``message`` once this unit commits (never if it rolls back)."""
        if self._publisher is None:
            raise ConfigurationError("this unit of work was built without a publisher")
        self._outbox.append(message)


def _detail(exc: sa_exc.DBAPIError) -> str:
    """The driver's first line only: SQLAlchemy appends the statement and its
    parameters on the lines after it."""
    lines = str(exc.orig or exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__
