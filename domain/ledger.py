"""The paid-call ledger's vocabulary (issue 23.3): one attempt at a model API, what it
is estimated to cost, and the per-person daily budget's wait. Pure.

What counts as a paid attempt: a request the model API received and set out to run.
Answered 200 (usable or not: a safety block, a cut-off or malformed answer, a repair
attempt), answered with a server error (5xx), or left without an answer once sent (a
timeout, a dropped connection). Not one: a 4xx (the API refused the request without
running it: a 429 for quota, a bad key, an unknown model), a call our own rate gate or
the budget held back, a connection that never opened. Only an answer with usage
metadata has a cost; an attempt without one is recorded at cost 0 with its outcome class
(Google does not bill a request that failed; a timed-out one may still be billed, which
the ledger cannot know).
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal, Protocol

from domain.errors import TransientError

CallKind = Literal["analysis", "image", "intake"]
CALL_KINDS: tuple[CallKind, ...] = ("analysis", "image", "intake")
OK = "ok"

# A budget wait ends at 00:00 UTC plus up to this much, so a day's waiting rows do not
# all resume in the same second.
MIDNIGHT_JITTER_S = 300.0
_MILLION = Decimal(1_000_000)


@dataclass
class Attempt:
    """One request the API received (see the module docstring). ``outcome`` is "ok" or
    a failure class of domain/failures.py."""

    model: str
    input_tokens: int | None = None
    output_tokens: int | None = None
    image: bool = False
    outcome: str = OK


@dataclass(frozen=True)
class CallOwner:
    """Whose work a call is: known from the message being processed (any may be
    unknown: a call outside a worker's message)."""

    user_id: uuid.UUID | None = None
    entry_id: uuid.UUID | None = None
    intake_session_id: uuid.UUID | None = None


@dataclass(frozen=True)
class PaidCall:
    """An attempt's ledger row, priced: what a job holds until its next write carries
    it (workers/services/ledger.py: ``holding``)."""

    kind: CallKind
    owner: CallOwner
    attempt: Attempt
    cost_usd: Decimal


@dataclass(frozen=True)
class Price:
    """USD per million input tokens, per million output tokens of a text answer, and
    per image answered (an image answer's output is priced per image, not per token)."""

    input_per_m: Decimal = Decimal(0)
    output_per_m: Decimal = Decimal(0)
    per_image: Decimal = Decimal(0)


def attempt_cost(attempt: Attempt, price: Price) -> Decimal:
    """The estimated cost of one attempt, rounded to the ledger's 6 decimals."""
    cost = Decimal(attempt.input_tokens or 0) * price.input_per_m / _MILLION
    if attempt.image:
        cost += price.per_image
    else:
        cost += Decimal(attempt.output_tokens or 0) * price.output_per_m / _MILLION
    return cost.quantize(Decimal("0.000001"))


@dataclass(frozen=True)
class PriceTable:
    prices: dict[str, Price]
    default: Price

    def of(self, model: str) -> Price:
        return self.prices.get(model, self.default)


# USD. The text models as Gemini Flash's paid tier prices them (input $0.30 and output,
# thinking included, $2.50 per million tokens); the image model's answer as one 1K image
# ($0.039: 1290 output tokens at $30 per million). "default" prices a model not listed;
# "local" is the offline providers (free). Check them against the current price list:
# PRICE_TABLE overrides them.
DEFAULT_PRICES: dict[str, dict[str, float]] = {
    "gemini-3.5-flash": {"input_per_m": 0.30, "output_per_m": 2.50, "per_image": 0.0},
    "gemini-3.1-flash-image": {"input_per_m": 0.30, "output_per_m": 2.50, "per_image": 0.039},
    "default": {"input_per_m": 0.30, "output_per_m": 2.50, "per_image": 0.039},
    "local": {"input_per_m": 0.0, "output_per_m": 0.0, "per_image": 0.0},
}
_PRICE_FIELDS = ("input_per_m", "output_per_m", "per_image")


def price_table(raw: dict[str, dict[str, float]]) -> PriceTable:
    """The table from its JSON form, merged over DEFAULT_PRICES; ValueError naming
    what is wrong."""
    prices: dict[str, Price] = {}
    for model, fields in {**DEFAULT_PRICES, **raw}.items():
        if not isinstance(fields, dict):
            raise ValueError(f"price of {model!r}: expected an object of prices")
        unknown = set(fields) - set(_PRICE_FIELDS)
        if unknown:
            raise ValueError(
                f"price of {model!r}: unknown field {sorted(unknown)[0]!r} "
                f"(expected {', '.join(_PRICE_FIELDS)})"
            )
        try:
            values = {name: Decimal(str(fields.get(name, 0))) for name in _PRICE_FIELDS}
        except ArithmeticError:
            raise ValueError(f"price of {model!r}: every price must be a number") from None
        if any(not value.is_finite() or value < 0 for value in values.values()):
            raise ValueError(f"price of {model!r}: every price must be a number >= 0")
        prices[model] = Price(**values)
    return PriceTable(prices, prices["default"])


def price_table_from_json(text: str) -> PriceTable:
    """PRICE_TABLE's value: a JSON object (empty: the defaults)."""
    if not text.strip():
        return price_table({})
    try:
        raw = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError('not JSON: expected {"model": {"input_per_m": ...}}') from None
    if not isinstance(raw, dict):
        raise ValueError("expected a JSON object of models")
    return price_table(raw)


class BudgetExceededError(TransientError):
    """A person's spend today reached USER_DAILY_BUDGET_USD: their new paid calls wait
    until the next UTC day. A deferral, not a failure: it spends no retry
    (workers/messaging/failure_policy.py)."""


def next_utc_midnight(now: datetime) -> datetime:
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day + timedelta(days=1)


def start_of_utc_day(now: datetime) -> datetime:
    return next_utc_midnight(now) - timedelta(days=1)


def usd(amount: Decimal) -> str:
    """$1.25; a fraction of a cent keeps its digits ($0.0042)."""
    if abs(amount) >= Decimal("0.01") or amount == 0:
        return f"${amount:.2f}"
    return f"${amount.normalize():f}"


def budget_exceeded(
    budget: Decimal, spent: Decimal, now: datetime, jitter_s: float | None = None
) -> BudgetExceededError:
    """The wait for a person over budget: until the next 00:00 UTC (+ jitter)."""
    wait = (next_utc_midnight(now) - now).total_seconds()
    jitter = random.uniform(0, MIDNIGHT_JITTER_S) if jitter_s is None else jitter_s
    return BudgetExceededError(
        f"daily budget of {usd(budget)} reached (spent {usd(spent)} today); resumes at 00:00 UTC",
        retry_after_s=wait + jitter,
    )


class Ledger(Protocol):
    """What the provider wrappers record to (workers/services/ledger.py writes it)."""

    def check_budget(self, owner: CallOwner) -> None:
        """Raise BudgetExceededError if the owner's spend today reached the budget."""
        ...

    def record(self, kind: CallKind, owner: CallOwner, attempt: Attempt) -> Decimal:
        """Write one attempt's row now (its own transaction), or hold it for the job's
        next write on this thread when the job holds its rows; its estimated cost.
        Never raises."""
        ...
