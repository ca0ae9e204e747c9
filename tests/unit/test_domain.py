"""Pure domain rules: vocabulary, input schema, message contracts, periods, settings."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from pydantic import ValidationError

from domain.errors import ConfigurationError, InvalidMessageError, PermanentError
from domain.messages import AnalyticsRecompute, EntryCreated, IntakeStep, parse_message
from domain.periods import (
    Period,
    period_containing,
    periods_between,
    periods_containing,
    previous_period,
)
from domain.schemas import EmotionEntryCreate
from domain.vocabulary import EMOTIONS, VisualizationStyle, invalid_emotions, sql_text_array
from workers.settings import Settings, load_settings

pytestmark = pytest.mark.unit


def test_vocabulary_is_the_spec_list() -> None:
    assert EMOTIONS == (
        "joy",
        "sadness",
        "anger",
        "fear",
        "disgust",
        "surprise",
        "anxiety",
        "contentment",
        "frustration",
        "excitement",
    )
    assert invalid_emotions(["joy", "boredom", "Joy"]) == ["boredom", "Joy"]
    assert sql_text_array(["a", "it's"]) == "ARRAY['a', 'it''s']::text[]"


def test_entry_schema_rounds_intensity_and_rejects_unknown_emotions() -> None:
    entry = EmotionEntryCreate(situation="x", emotions=["joy"], intensity=Decimal("0.705"))
    assert entry.intensity == Decimal("0.71")
    with pytest.raises(ValidationError, match="Invalid emotion: boredom"):
        EmotionEntryCreate(situation="x", emotions=["boredom"], intensity=Decimal("0.5"))
    with pytest.raises(ValidationError, match="white space"):
        EmotionEntryCreate(situation="   ", emotions=["joy"], intensity=Decimal("0.5"))
    with pytest.raises(ValidationError):
        EmotionEntryCreate(situation="x", emotions=[], intensity=Decimal("0.5"))
    with pytest.raises(ValidationError):
        EmotionEntryCreate(situation="x", emotions=["joy"], intensity=Decimal("1.2"))


def test_entry_created_parses_and_round_trips() -> None:
    entry_id, user_id = uuid.uuid4(), uuid.uuid4()
    message = parse_message(EntryCreated, {"entry_id": str(entry_id), "user_id": str(user_id)})
    assert message.entry_id == entry_id and message.style is None
    payload = EntryCreated(
        entry_id=entry_id, user_id=user_id, style=VisualizationStyle.METAPHOR
    ).to_payload()
    assert payload == {
        "version": 1,
        "entry_id": str(entry_id),
        "user_id": str(user_id),
        "style": "metaphor",
    }
    assert parse_message(EntryCreated, payload).style is VisualizationStyle.METAPHOR


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("not a dict", "must be a JSON object"),
        ({"user_id": str(uuid.uuid4())}, "entry_id: Field required"),
        ({"entry_id": 42, "user_id": str(uuid.uuid4())}, "entry_id"),
        ({"entry_id": str(uuid.uuid4()), "user_id": str(uuid.uuid4()), "style": "cubist"}, "style"),
        (
            {"entry_id": str(uuid.uuid4()), "user_id": str(uuid.uuid4()), "extra": 1},
            "extra: Extra inputs",
        ),
        ({"entry_id": str(uuid.uuid4()), "user_id": str(uuid.uuid4()), "version": 2}, "version"),
    ],
)
def test_entry_created_rejects_bad_payloads_permanently(payload: object, reason: str) -> None:
    with pytest.raises(InvalidMessageError, match=reason) as info:
        parse_message(EntryCreated, payload)
    assert isinstance(info.value, PermanentError)


def test_other_messages() -> None:
    step = parse_message(
        IntakeStep, {"session_id": str(uuid.uuid4()), "user_id": str(uuid.uuid4()), "step": 2}
    )
    assert step.step == 2
    with pytest.raises(InvalidMessageError, match="step"):
        parse_message(
            IntakeStep, {"session_id": str(uuid.uuid4()), "user_id": str(uuid.uuid4()), "step": 0}
        )
    recompute = parse_message(AnalyticsRecompute, {"period": "week", "period_start": "2026-01-05"})
    assert recompute.period_start == date(2026, 1, 5)
    with pytest.raises(InvalidMessageError, match="user_ids"):
        parse_message(
            AnalyticsRecompute, {"period": "week", "period_start": "2026-01-05", "user_ids": []}
        )


@pytest.mark.parametrize(
    ("moment", "day", "week", "month"),
    [
        (
            datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC),
            (2024, 2, 29),
            ((2024, 2, 26), (2024, 3, 3)),
            ((2024, 2, 1), (2024, 2, 29)),
        ),
        (
            datetime(2026, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=2))),
            (2025, 12, 31),
            ((2025, 12, 29), (2026, 1, 4)),
            ((2025, 12, 1), (2025, 12, 31)),
        ),
        (
            datetime(2026, 11, 30, 0, 0, tzinfo=UTC),
            (2026, 11, 30),
            ((2026, 11, 30), (2026, 12, 6)),
            ((2026, 11, 1), (2026, 11, 30)),
        ),
    ],
)
def test_periods_are_utc_day_iso_week_and_month(
    moment: datetime,
    day: tuple[int, int, int],
    week: tuple[tuple[int, int, int], ...],
    month: tuple[tuple[int, int, int], ...],
) -> None:
    d, w, m = periods_containing(moment)
    assert (d.start, d.end) == (date(*day), date(*day))
    assert (w.start, w.end) == (date(*week[0]), date(*week[1]))
    assert w.start.isoweekday() == 1
    assert (m.start, m.end) == (date(*month[0]), date(*month[1]))


def test_period_helpers() -> None:
    march = period_containing("month", date(2024, 3, 15))
    assert previous_period(march) == Period("month", date(2024, 2, 1), date(2024, 2, 29))
    weeks = periods_between("week", date(2026, 1, 1), date(2026, 1, 31))
    assert weeks[0].start == date(2025, 12, 29) and len(weeks) == 5
    with pytest.raises(ValueError, match="aware"):
        periods_containing(datetime(2026, 1, 1))


def test_settings_defaults_and_provider_choice() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.resolved_provider() == "local"
    keyed = Settings(_env_file=None, gemini_api_key="k" * 20)  # type: ignore[call-arg]
    assert keyed.resolved_provider() == "gemini"
    assert "k" * 20 not in repr(keyed)


def test_invalid_setting_is_one_clear_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_THREADS", "many")
    with pytest.raises(
        ConfigurationError, match=r"^invalid configuration: WORKER_THREADS: .*integer"
    ):
        load_settings(_env_file=None)
    monkeypatch.delenv("WORKER_THREADS")
    monkeypatch.setenv("MIN_BACKOFF_MS", "5000")
    monkeypatch.setenv("MAX_BACKOFF_MS", "10")
    with pytest.raises(ConfigurationError, match="MAX_BACKOFF_MS"):
        load_settings(_env_file=None)


def test_env_example_documents_every_setting_with_its_default() -> None:
    from pathlib import Path

    lines = (Path(__file__).resolve().parents[2] / ".env.example").read_text().splitlines()
    documented: dict[str, str] = {}
    for line in lines:
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            documented[key.strip()] = value.split("  #")[0].strip()
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    for name in Settings.model_fields:
        assert name.upper() in documented, f"{name.upper()} is not in .env.example"
    for name in ("intake_max_steps", "analytics_parallelism", "schedule_reconcile", "max_retries"):
        assert documented[name.upper()] == str(getattr(defaults, name)), name


def test_analytics_batches_stay_in_one_lane_and_cover_every_user_once() -> None:
    from workers.services.analytics import LANES, lane_of, plan_batches

    users = [uuid.UUID(int=n * 7919 + 3) for n in range(2000)]
    batches = plan_batches(users + users[:10], size=100)
    flat = [u for batch in batches for u in batch]
    assert sorted(flat) == sorted(users)  # each once, duplicates dropped
    assert all(len(b) <= 100 and len({lane_of(u) for u in b}) == 1 for b in batches)
    first_lanes = [lane_of(b[0]) for b in batches[:LANES]]
    assert sorted(first_lanes) == list(range(LANES))  # lanes in turn: parallel-friendly
