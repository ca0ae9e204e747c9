"""Unit of work: one transaction, rolled back unless committed; repositories on it.

Driver errors are wrapped here, at the db edge, into our own hierarchy: connection
problems become DatabaseUnavailableError (transient), so callers never see psycopg.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from db.repositories import (
    AnalyticsRepository,
    EntryRepository,
    IntakeRepository,
    UserRepository,
    VisualizationRepository,
)
from domain.errors import DatabaseUnavailableError


class UnitOfWork:
    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory
        self._after_commit: list[Callable[[], None]] = []

    def __enter__(self) -> UnitOfWork:
        self.session = self._session_factory()
        self.users = UserRepository(self.session)
        self.entries = EntryRepository(self.session)
        self.visualizations = VisualizationRepository(self.session)
        self.intake = IntakeRepository(self.session)
        self.analytics = AnalyticsRepository(self.session)
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
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            callback()

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once this unit commits (e.g. publish a message)."""
        self._after_commit.append(callback)
