"""Development data from the spec: the test user (bcrypt-hashed password), two more
people, and varied sample entries over the last weeks. Idempotent: users are matched by
email and entries by (user, situation), so a second run adds nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import bcrypt

from db.uow import UnitOfWork


@dataclass(frozen=True)
class SampleEntry:
    days_ago: float
    situation: str
    emotions: tuple[str, ...]
    intensity: str
    notes: str | None = None


SAMPLE_USERS: tuple[tuple[str, str, str], ...] = (
    ("test@example.com", "Test User", "Test123!"),
    ("maya@example.com", "Maya Lindqvist", "Maya-dev-1!"),
    ("omar@example.com", "Omar Haddad", "Omar-dev-1!"),
)

SAMPLE_ENTRIES: dict[str, tuple[SampleEntry, ...]] = {
    "test@example.com": (
        SampleEntry(
            0.2,
            "Morning presentation at work",
            ("anxiety", "excitement"),
            "0.70",
            "Big presentation coming up",
        ),
        SampleEntry(
            1.1, "Coffee with an old friend I had not seen in years", ("joy", "contentment"), "0.80"
        ),
        SampleEntry(
            2.3,
            "The train was cancelled and I missed the meeting",
            ("frustration", "anger"),
            "0.65",
        ),
        SampleEntry(
            3.5, "Got the results of the medical check: all clear", ("surprise", "joy"), "0.90"
        ),
        SampleEntry(4.2, "Quiet evening reading on the balcony", ("contentment",), "0.40"),
        SampleEntry(
            6.0, "Argument with my brother about the holidays", ("anger", "sadness"), "0.75"
        ),
        SampleEntry(8.4, "Heard a strange noise in the flat at night", ("fear", "anxiety"), "0.55"),
        SampleEntry(
            9.9, "My code review was praised in the team meeting", ("joy", "excitement"), "0.60"
        ),
        SampleEntry(12.0, "Found mould behind the wardrobe", ("disgust", "frustration"), "0.50"),
        SampleEntry(15.5, "Anniversary of my grandmother's death", ("sadness",), "0.85"),
        SampleEntry(19.0, "Booked tickets for the trip to Lisbon", ("excitement", "joy"), "0.80"),
        SampleEntry(
            23.7, "Deadline moved up by a week without warning", ("anxiety", "frustration"), "0.80"
        ),
        SampleEntry(31.0, "First swim in the lake this year", ("joy", "surprise"), "0.70"),
        SampleEntry(38.2, "Waiting for the landlord's answer about the rent", ("anxiety",), "0.45"),
    ),
    "maya@example.com": (
        SampleEntry(
            0.5, "The seedlings on the windowsill finally sprouted", ("joy", "contentment"), "0.55"
        ),
        SampleEntry(
            1.7, "Job interview for the design lead role", ("anxiety", "excitement"), "0.85"
        ),
        SampleEntry(
            3.0, "Neighbour's dog barked all night again", ("frustration", "anger"), "0.60"
        ),
        SampleEntry(5.2, "Long phone call with my sister abroad", ("sadness", "joy"), "0.50"),
        SampleEntry(
            7.8,
            "Missed the last bus and walked home in the rain",
            ("frustration", "sadness"),
            "0.45",
        ),
        SampleEntry(
            10.1, "Surprise birthday party at the studio", ("surprise", "joy", "excitement"), "0.95"
        ),
        SampleEntry(14.4, "Saw a news report about the flood", ("fear", "sadness"), "0.70"),
        SampleEntry(20.0, "Finished the half marathon", ("joy", "contentment"), "0.90"),
        SampleEntry(
            27.3, "Spoiled milk in my coffee before a call", ("disgust", "surprise"), "0.30"
        ),
        SampleEntry(
            33.0, "Quarterly review went better than feared", ("contentment", "surprise"), "0.60"
        ),
    ),
    "omar@example.com": (
        SampleEntry(0.3, "Teaching my daughter to ride a bike", ("joy", "fear"), "0.75"),
        SampleEntry(2.0, "Server outage on a Friday evening", ("anxiety", "frustration"), "0.90"),
        SampleEntry(
            4.6, "Cooked my father's recipe for the first time", ("contentment", "sadness"), "0.60"
        ),
        SampleEntry(6.9, "A stranger returned my lost wallet", ("surprise", "joy"), "0.80"),
        SampleEntry(11.2, "Rejected grant application", ("sadness", "frustration"), "0.70"),
        SampleEntry(16.0, "Concert of my favourite band", ("excitement", "joy"), "0.95"),
        SampleEntry(22.5, "Heavy turbulence on the flight home", ("fear",), "0.85"),
        SampleEntry(
            29.0, "Cleaning out the garage after the winter", ("disgust", "contentment"), "0.35"
        ),
    ),
}


@dataclass(frozen=True)
class SeedReport:
    users_created: int
    entries_created: int
    entry_ids: list[tuple[uuid.UUID, uuid.UUID]]  # (entry_id, user_id) created this run


def hash_password(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=12)).decode()


def seed_dev_data(uow: UnitOfWork, *, now: datetime | None = None) -> SeedReport:
    now = now or datetime.now(UTC)
    users_created = 0
    created: list[tuple[uuid.UUID, uuid.UUID]] = []
    with uow:
        for email, name, password in SAMPLE_USERS:
            user = uow.users.get_by_email(email)
            if user is not None:
                user_id = user.id
            else:
                user_id = uow.users.add(
                    email=email, name=name, hashed_password=hash_password(password)
                )
                users_created += 1
            existing = uow.entries.situations_for_user(user_id)
            for sample in SAMPLE_ENTRIES[email]:
                if sample.situation in existing:
                    continue
                entry_id = uow.entries.add(
                    user_id=user_id,
                    situation=sample.situation,
                    emotions=sample.emotions,
                    intensity=Decimal(sample.intensity),
                    notes=sample.notes,
                    created_at=now - timedelta(days=sample.days_ago),
                )
                created.append((entry_id, user_id))
        uow.commit()
    return SeedReport(users_created, len(created), created)
