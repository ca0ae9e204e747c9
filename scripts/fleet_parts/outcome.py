"""What a fleet run found, read from the database, the emulator's call log and the
proxies: the table and its verdict."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

RECOVERY_LIMIT_S = 120.0


@dataclass
class Fault:
    name: str
    machine: str
    at: float
    until: float | None = None  # None: permanent (a killed machine)
    in_flight: int = 0  # paid calls that could be repeated because of it
    detail: str = ""


@dataclass
class Connections:
    machine: str
    postgres_peak: int  # through PgBouncer + direct
    redis_peak: int
    postgres_budget: int
    redis_budget: int

    @property
    def fits(self) -> bool:
        return self.postgres_peak <= self.postgres_budget and self.redis_peak <= self.redis_budget


@dataclass
class FleetOutcome:
    entries: int
    sessions: int
    completed: int
    failed: int
    lost: int
    duplicated_rows: int
    sessions_complete: int
    paid_calls: int
    expected_calls: int
    extra_calls: int
    unexplained_calls: int  # made again, but not a call under way at a fault
    faults: list[Fault]
    recovery_s: float | None
    connections: list[Connections]
    pictures: int
    pictures_readable: dict[str, int]  # machine -> pictures it could read
    objects: int
    seconds: float
    unlabelled_lines: int = 0  # JSON log lines without their machine's name
    publish_errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def in_flight(self) -> int:
        return sum(f.in_flight for f in self.faults)

    def problems(self) -> list[str]:
        found = []
        if self.lost:
            found.append(f"{self.lost} lost")
        if self.duplicated_rows:
            found.append(f"{self.duplicated_rows} duplicated")
        if self.failed:
            found.append(f"{self.failed} failed")
        if self.sessions_complete != self.sessions:
            found.append(f"{self.sessions - self.sessions_complete} conversations unfinished")
        if self.extra_calls > self.in_flight:
            found.append(f"{self.extra_calls} extra paid calls > {self.in_flight} in flight")
        if self.unexplained_calls:
            found.append(f"{self.unexplained_calls} paid calls made again that no fault explains")
        if self.recovery_s is None or self.recovery_s > RECOVERY_LIMIT_S:
            found.append(f"no recovery within {RECOVERY_LIMIT_S:.0f} s after the last fault")
        for c in self.connections:
            if not c.fits:
                found.append(f"{c.machine}: connections over the budget")
        for machine, readable in self.pictures_readable.items():
            if readable != self.pictures:
                found.append(f"{machine} read {readable} of {self.pictures} pictures")
        if self.unlabelled_lines:
            found.append(f"{self.unlabelled_lines} log lines without their machine's name")
        if self.objects != self.pictures:
            found.append(f"{self.objects} objects for {self.pictures} pictures")
        return found


def _s(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def render(o: FleetOutcome) -> str:
    rows: list[tuple[str, Any]] = [
        ("entries (published + from intake)", o.entries),
        ("intake conversations complete", f"{o.sessions_complete} of {o.sessions}"),
        ("completed", o.completed),
        ("failed", o.failed),
        ("lost (not terminal at the end)", o.lost),
        ("duplicated rows (rows/entry > 1)", o.duplicated_rows),
        (
            "paid calls",
            f"{o.paid_calls} for {o.expected_calls} needed: extra {o.extra_calls} "
            f"(<= {o.in_flight} in flight at the faults), {o.unexplained_calls} not explained "
            "by a fault",
        ),
        ("recovery after the last fault", _s(o.recovery_s)),
        ("pictures (objects in the store)", f"{o.pictures} ({o.objects})"),
        (
            "pictures readable from",
            ", ".join(f"{m} {n}/{o.pictures}" for m, n in o.pictures_readable.items()),
        ),
        ("log lines without their machine", o.unlabelled_lines),
        ("run time", f"{o.seconds:.0f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    lines += [
        "",
        f"{'fault':<34} {'machine':<8} {'at s':>6} {'until s':>8} {'in flight':>9}  detail",
    ]
    for f in o.faults:
        until = "-" if f.until is None else f"{f.until:.0f}"
        lines.append(
            f"{f.name:<34} {f.machine:<8} {f.at:>6.0f} {until:>8} {f.in_flight:>9}  {f.detail}"
        )
    lines += [
        "",
        f"{'machine':<8} {'postgres peak/budget':>21} {'redis peak/budget':>18}",
    ]
    for c in o.connections:
        lines.append(
            f"{c.machine:<8} {c.postgres_peak:>10}/{c.postgres_budget:<10} "
            f"{c.redis_peak:>8}/{c.redis_budget:<9}"
        )
    lines += [
        "",
        "in flight: the faulted machine's paid calls under way when the fault began or",
        "started while it lasted (an answer it could not store); a call made again must be",
        "one of them.",
        "recovery: from the end of the last fault until every entry and conversation",
        "published before it had finished.",
    ]
    lines += [f"publish refused (reconciled): {e}" for e in o.publish_errors[:5]]
    lines += [f"note: {n}" for n in o.notes]
    problems = o.problems()
    lines.append("verdict: " + ("PASS" if not problems else "FAIL: " + "; ".join(problems)))
    return "\n".join(lines)
