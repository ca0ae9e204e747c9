"""The database edge: what PostgreSQL refuses is a permanent error without SQL, and a
service that hits one releases its lease with a stored reason a person can read."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text

from db.engine import make_session_factory
from db.uow import UnitOfWork
from domain.errors import DataRejectedError, PermanentError
from tests.integration.helpers import insert_entry, insert_user

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        ("NUL \x00 inside", "NUL"),  # psycopg refuses it client-side (a DataError)
        ("lone \ud800 surrogate", "not valid Unicode"),  # psycopg cannot encode it
    ],
)
def test_text_postgresql_refuses_is_a_permanent_data_error(
    engine: Engine, value: str, detail: str
) -> None:
    with engine.begin() as conn:
        entry_id = insert_entry(conn, insert_user(conn))
    uow = UnitOfWork(make_session_factory(engine))
    with pytest.raises(DataRejectedError) as caught, uow:
        uow.session.execute(
            text("UPDATE emotion_entries SET notes = :n WHERE id = :id"),
            {"n": value, "id": entry_id},
        )
    assert isinstance(caught.value, PermanentError)
    message = str(caught.value)
    assert message.startswith("the database refused the data") and detail in message
    assert "UPDATE" not in message and value not in message and len(message) < 300


def test_a_broken_constraint_is_a_permanent_data_error(engine: Engine) -> None:
    with engine.begin() as conn:
        user_id = insert_user(conn, email="taken@example.com")
    uow = UnitOfWork(make_session_factory(engine))
    with pytest.raises(DataRejectedError, match="duplicate key") as caught, uow:
        uow.session.execute(
            text(
                "INSERT INTO users (email, hashed_password, name) VALUES ('taken@example.com', 'x', 'y')"
            )
        )
        uow.commit()
    assert "taken@example.com" not in str(caught.value) and str(user_id) not in str(caught.value)
