"""Small bar charts drawn as inline SVG by the templates: the geometry here, pure.

Attributes only (no style=): the Content-Security-Policy allows no inline styles."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from db.repositories.console import MinuteOutcomes

WIDTH, HEIGHT, BAR = 300, 64, 5  # 60 bars of 5 px: one per minute


@dataclass(frozen=True)
class Bar:
    x: int
    y: int
    height: int
    title: str


@dataclass(frozen=True)
class Chart:
    label: str
    total: int
    peak: int
    bars: list[Bar]
    width: int = WIDTH
    height: int = HEIGHT


def per_minute_chart(label: str, counts: dict[int, int], now: datetime, minutes: int = 60) -> Chart:
    """One bar per minute, the oldest on the left; ``counts`` maps minutes-ago to a
    count (missing minutes are 0)."""
    peak = max(counts.values(), default=0)
    bars = []
    for ago in range(minutes):
        value = counts.get(ago, 0)
        height = 0 if peak == 0 else max(1 if value else 0, round(value / peak * (HEIGHT - 4)))
        minute = (now - timedelta(minutes=ago)).strftime("%H:%M")
        bars.append(
            Bar(
                x=(minutes - 1 - ago) * BAR,
                y=HEIGHT - height,
                height=height,
                title=f"{minute} UTC: {value} {label}",
            )
        )
    return Chart(label=label, total=sum(counts.values()), peak=peak, bars=bars)


def outcome_charts(outcomes: Iterable[MinuteOutcomes], now: datetime) -> list[Chart]:
    rows = list(outcomes)
    return [
        per_minute_chart("completed", {o.minutes_ago: o.completed for o in rows}, now),
        per_minute_chart("failed", {o.minutes_ago: o.failed for o in rows}, now),
    ]
