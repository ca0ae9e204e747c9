"""The scheduler's retention job (issue 24.5): present on SCHEDULE_RETENTION, absent when
it is empty, and a bad cron expression is refused by the settings."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from workers.entrypoints import scheduler
from workers.settings import Settings


def _jobs(**overrides: object) -> dict[str, scheduler.ScheduledJob]:
    settings = Settings(_env_file=None, **overrides)  # type: ignore[call-arg, arg-type]
    return {j.name: j for j in scheduler.default_jobs(settings, None, None)}  # type: ignore[arg-type]


def test_the_retention_job_fires_on_its_cron_expression() -> None:
    job = _jobs(schedule_retention="15 4 * * *")["retention"]
    nxt = job.trigger.get_next_fire_time(None, datetime(2026, 12, 2, 5, 0, tzinfo=UTC))
    assert nxt == datetime(2026, 12, 3, 4, 15, tzinfo=UTC)


def test_an_empty_schedule_means_no_retention_job() -> None:
    assert "retention" not in _jobs(schedule_retention="")
    assert "retention" in _jobs()  # on by default (03:30 UTC)


def test_a_bad_cron_expression_is_refused() -> None:
    with pytest.raises(ValidationError, match="schedule_retention"):
        Settings(_env_file=None, schedule_retention="every night")  # type: ignore[call-arg]
