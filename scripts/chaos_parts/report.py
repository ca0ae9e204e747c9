"""The chaos run's table and its verdict."""

from __future__ import annotations

from dataclasses import dataclass, field

RECOVERY_LIMIT_S = 120.0  # issue 10's acceptance: every row terminal within 120 s


@dataclass
class Disruption:
    name: str
    at: float
    detail: str = ""
    waiting: set[str] = field(default_factory=set)  # entries not terminal at `at`
    all_terminal_s: float | None = None  # until every one of `waiting` was terminal
    resumed_s: float | None = None  # until the next row became terminal
    limited: bool = True  # judged against RECOVERY_LIMIT_S


@dataclass
class Outcome:
    entries: int
    completed: int
    failed_expected: int
    expected_failures: int
    failed_unexpected: int
    lost: int
    duplicated_rows: int
    duplicated_images: int
    orphan_images: int
    analysis_calls: int
    image_calls: int
    poison_status: str
    poison_crashes: int
    secrets_found: int
    hostile_published: int
    seconds: float
    disruptions: list[Disruption]
    notes: list[str] = field(default_factory=list)
    exact_poison_crashes: int | None = None  # else 1-5 (kills beside it may add some)
    # The paid-call ledger (issue 23.3): its rows against the calls the emulator ran
    # (accepted, not answered 429), and how many calls the run's kills could have cut
    # (a call in flight in a killed process ran, but nobody was left to record it).
    ledger_calls: int = 0
    paid_calls: int = 0
    cut_bound: int = 0
    # Completion events (issue 23.1): one per terminal transition (every row of this
    # run ends terminal once: nothing replays it), each delivered to the run's queue
    # subscriber before the workers stop.
    terminal_rows: int = 0
    events: int = 0
    events_undelivered: int = 0

    def problems(self) -> list[str]:
        found = []
        if self.lost:
            found.append(f"{self.lost} lost")
        if self.duplicated_rows or self.duplicated_images or self.orphan_images:
            found.append("duplicates")
        if self.failed_unexpected:
            found.append(f"{self.failed_unexpected} failed unexpectedly")
        if self.failed_expected != self.expected_failures:
            found.append("an expected failure did not fail")
        if self.exact_poison_crashes is not None:
            if (self.poison_status, self.poison_crashes) != (
                "failed (crash loop)",
                self.exact_poison_crashes,
            ):
                found.append(f"poison entry not failed after {self.exact_poison_crashes} crashes")
        elif self.poison_status != "failed (crash loop)" or not 1 <= self.poison_crashes <= 5:
            found.append("poison entry not failed after <= 5 crashes")
        if self.secrets_found:
            found.append("secret found")
        unrecorded = self.paid_calls - self.ledger_calls
        if not 0 <= unrecorded <= self.cut_bound:
            found.append(
                f"ledger has {self.ledger_calls} paid calls, the emulator ran {self.paid_calls} "
                f"(at most {self.cut_bound} may be cut by the kills)"
            )
        if self.events != self.terminal_rows:
            found.append(
                f"{self.events} completion events for {self.terminal_rows} terminal transitions"
            )
        if self.events_undelivered:
            found.append(f"{self.events_undelivered} completion events not delivered")
        for d in self.disruptions:
            if d.limited and (d.all_terminal_s is None or d.all_terminal_s > RECOVERY_LIMIT_S):
                found.append(f"{d.name} did not heal within {RECOVERY_LIMIT_S:.0f} s")
        return found


def _s(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f}"


def render(o: Outcome) -> str:
    per = max(o.entries, 1)
    rows = [
        ("entries", str(o.entries)),
        ("completed", str(o.completed)),
        (
            "failed as expected",
            f"{o.failed_expected} of {o.expected_failures} (permanent + poison)",
        ),
        ("failed unexpectedly", str(o.failed_unexpected)),
        ("lost (not terminal at the end)", str(o.lost)),
        ("duplicated (rows/entry > 1)", str(o.duplicated_rows)),
        ("duplicated (images/entry > 1)", str(o.duplicated_images)),
        ("orphan image files", str(o.orphan_images)),
        (
            "paid calls per entry",
            f"analysis {o.analysis_calls / per:.2f}, image {o.image_calls / per:.2f}",
        ),
        (
            "paid calls: emulator, ledger",
            f"{o.paid_calls}, {o.ledger_calls} (kills may cut at most {o.cut_bound})",
        ),
        (
            "completion events",
            f"{o.events} for {o.terminal_rows} terminal transitions, "
            f"{o.events_undelivered} not delivered",
        ),
        ("poison entry", f"{o.poison_status} after {o.poison_crashes} worker crashes"),
        ("hostile bodies published", str(o.hostile_published)),
        ("secrets found", str(o.secrets_found)),
        ("run time", f"{o.seconds:.0f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    lines += ["", "disruption                    all terminal s  resumed s  detail"]
    for d in o.disruptions:
        lines.append(f"{d.name:<29} {_s(d.all_terminal_s):>14}  {_s(d.resumed_s):>9}  {d.detail}")
    lines += [
        "",
        "all terminal s: from the disruption until every entry then unfinished was completed",
        "or failed (the poison entry excepted); resumed s: until the next entry finished.",
        "Disruptions overlap: only the last is held to the 120 s limit; earlier figures are",
        "upper bounds that include every later disruption and the poison entry's crashes.",
    ]
    lines += [f"note: {n}" for n in o.notes]
    problems = o.problems()
    lines.append("verdict: " + ("PASS" if not problems else "FAIL: " + "; ".join(problems)))
    return "\n".join(lines)
