"""Users: looked up by email (the seed), listed by id (analytics batches)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import User


@dataclass(frozen=True)
class UserRow:
    id: uuid.UUID
    email: str
    name: str


class UserRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get_by_email(self, email: str) -> UserRow | None:
        row = self.session.execute(
            select(User.id, User.email, User.name).where(User.email == email)
        ).one_or_none()
        return None if row is None else UserRow(row.id, row.email, row.name)

    def add(self, *, email: str, name: str, hashed_password: str) -> uuid.UUID:
        """A new user; returns its id."""
        user = User(email=email, name=name, hashed_password=hashed_password)
        self.session.add(user)
        self.session.flush()
        return user.id

    def list_ids(self) -> list[uuid.UUID]:
        return list(self.session.scalars(select(User.id).order_by(User.id)))
