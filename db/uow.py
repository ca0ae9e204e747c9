"""Unit of work: one transaction, rolled back unless committed; repositories on it.

It is also the one way the product publishes a message that follows a database change:
``uow.publish(msg)`` holds the message until ``commit()`` has succeeded, then hands
all of them to the publisher in one batch. So a worker never sees an id whose row is
not visible yet, and a rolled-back change publishes nothing.

Driver errors are wrapped here, at the db edge, into our own hierarchy: connection
problems become DatabaseUnavailableError (transient), so callers never see psycopg.
"""

from __future__ import annotations

from types import TracebackType

from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from db.repositories import (
    AnalyticsRepository,
    ConsoleRepository,
    EntryRepository,
    IntakeRepository,
    ShowcaseRepository,
    UserRepository,
    VisualizationRepository,
)
from domain.errors import ConfigurationError, DatabaseUnavailableError
from domain.messages import MessageV1, Publisher


class UnitOfWork:
    def __init__(
        self, session_factory: sessionmaker[Session], publisher: Publisher | None = None
    ) -> None:
        self._session_factory = session_factory
        self._publisher = publisher
        self._outbox: list[MessageV1] = []
        self.published_ids: list[str] = []  # message ids sent by the last commit

    def __enter__(self) -> UnitOfWork:
        self._outbox = []
        self.session = self._session_factory()
        self.users = UserRepository(self.session)
        self.entries = EntryRepository(self.session)
        self.visualizations = VisualizationRepository(self.session)
        self.intake = IntakeRepository(self.session)
        self.analytics = AnalyticsRepository(self.session)
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
            detail = str(exc.orig or exc).strip().splitlines()[0][:300]
            raise DatabaseUnavailableError(f"database unavailable: {detail}") from exc

    def commit(self) -> None:
        self.session.commit()
        outbox, self._outbox = self._outbox, []
        if outbox:
            assert self._publisher is not None  # publish() checked it
            self.published_ids = self._publisher.publish_many(outbox)

    def publish(self, message: MessageV1) -> None:
        """Publish ``message`` once this unit commits (never if it rolls back)."""
        if self._publisher is None:
            raise ConfigurationError("this unit of work was built without a publisher")
        self._outbox.append(message)
