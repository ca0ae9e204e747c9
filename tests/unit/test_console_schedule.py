"""The console shows each scheduled job at the period the scheduler really runs it
(issue 20: reconcile was shown as `* * * * *` while it ran every RECONCILE_EVERY_S)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from workers.console.data import next_runs
from workers.entrypoints import scheduler
from workers.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 2, 4, 41, 7, tzinfo=UTC)


def _reconcile(settings: Settings) -> dict[str, object]:
    return next(run for run in next_runs(settings, NOW) if run["name"] == "reconcile")


def _scheduler_next(settings: Settings) -> datetime | None:
    jobs = scheduler.default_jobs(settings, None, None)  # type: ignore[arg-type]
    job = next(j for j in jobs if j.name == "reconcile")
    return job.trigger.get_next_fire_time(None, NOW)  # type: ignore[no-any-return]


def test_reconcile_is_shown_at_reconcile_every_s() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    shown = _reconcile(settings)
    every = settings.reconcile_every_s
    assert shown["cron"] == f"every {every} s"
    nxt = shown["next"]
    assert isinstance(nxt, datetime)
    assert 0 < (nxt - NOW).total_seconds() <= every
    assert nxt == _scheduler_next(settings)


def test_the_cron_expression_is_shown_only_when_the_interval_is_off() -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, reconcile_every_s=0, schedule_reconcile="*/10 * * * *"
    )
    shown = _reconcile(settings)
    assert shown["cron"] == "*/10 * * * *"
    assert shown["next"] == _scheduler_next(settings) == datetime(2026, 12, 2, 4, 50, tzinfo=UTC)


def test_the_docs_give_the_same_period() -> None:
    every = Settings(_env_file=None).reconcile_every_s  # type: ignore[call-arg]
    for doc in ("README.md", "docs/analytics.md"):
        text = (ROOT / doc).read_text()
        assert f"`RECONCILE_EVERY_S` seconds ({every}" in text, doc
        assert "runs it every minute" not in text and "*/10 * * * *`); each" not in text, doc
