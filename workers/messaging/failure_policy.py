"""What happens to a message whose work raised: reject, fail, retry, or give up.

- a wrong message (invalid, unknown or foreign row) is *rejected*: dead-lettered, no
  row changed;
- a permanent error *fails* the job: ``fail(reason)`` records it on the row, then the
  message is dead-lettered (the actor declares ``throws=(PermanentError,)``);
- anything else is *retried*: after the server's own delay (plus jitter) when the error
  carries one, else with Dramatiq's exponential backoff;
- past ``max_retries`` the job is *given up*: failed like a permanent error, with the
  last error as the reason;
- a job interrupted by Dramatiq's time limit (``TimeLimitExceeded``, a BaseException
  that ``except Exception`` would miss) is a ``JobTimeLimitError``: retried like a
  timeout, failed with a reason naming the limit when the retries run out. Retried,
  not failed at once: the checkpoints keep what finished (a retry after an overrun in
  the image step does not analyse again), and an overrun is mostly a slow moment of
  the model API, as a timeout is; a job that always overruns costs at most
  ``max_retries`` more attempts, as any transient error does;
- a person over their daily budget (``BudgetExceededError``, domain/ledger.py) is
  *deferred*: retried after its wait (the next 00:00 UTC), without spending a retry
  (the retry count is given back): a day's wait is not a failure of the job, and a
  person whose budget runs out again the next day must not see their work dead-lettered
  after MAX_RETRIES days. The row keeps the wait (VisualizationService._release records
  ``retry_after_s``), so the reconciler does not publish it again before then.

Pure of I/O except through its arguments, so every branch is unit-tested on Dramatiq's
StubBroker (tests/unit/test_failure_policy.py).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import NoReturn

import dramatiq
from dramatiq.middleware import CurrentMessage
from dramatiq.middleware.time_limit import TimeLimitExceeded

from domain.errors import (
    InvalidMessageError,
    JobTimeLimitError,
    NotFoundError,
    OwnershipError,
    PermanentError,
    TransientError,
    failure_reason,
)
from domain.ledger import BudgetExceededError
from workers.logging import get_logger

log = get_logger("emotionviz.failures")

# Errors that mean "this message is wrong": dead-letter it, change no row.
REJECTED = (InvalidMessageError, NotFoundError, OwnershipError)

Count = Callable[[str], None]


def stored_reason(exc: BaseException, *, prefix: str = "") -> str:
    """What we store about a failure (domain.errors.failure_reason), looking through
    Dramatiq's Retry to the error that asked for it."""
    while isinstance(exc, dramatiq.Retry) and exc.__cause__ is not None:
        exc = exc.__cause__
    return failure_reason(exc, prefix=prefix)


def reject(exc: Exception, count: Count) -> None:
    log.error("message rejected", reason=stored_reason(exc))
    count("rejected")


# A message option (not a contract field: docs/messages.md is unchanged) that keeps a
# first delivery to its own entry: a deferred entry comes back to itself, not as a
# fair token (docs/reliability.md, "Fairness").
OWN_ENTRY = "own_entry"


def current_retries() -> int:
    message = CurrentMessage.get_current_message()
    return int(message.options.get("retries", 0)) if message else 0


def current_own_entry() -> bool:
    """The current message is a deferral of its own entry (``OWN_ENTRY``)."""
    message = CurrentMessage.get_current_message()
    return bool(message.options.get(OWN_ENTRY)) if message else False


def run_classified(
    work: Callable[[], None],
    *,
    fail: Callable[[str], None],
    max_retries: int,
    count: Count,
    time_limit_s: float | None = None,
) -> None:
    """Run one message's work and apply the policy above to what it raises
    (``time_limit_s``: the job time limit, named in the reason of an overrun)."""
    try:
        try:
            work()
        except TimeLimitExceeded as exc:
            # Raised once per message (Dramatiq clears the deadline when it fires), so
            # the handling below is not interrupted again.
            log.warning("job time limit exceeded", time_limit_s=time_limit_s)
            raise JobTimeLimitError(time_limit_s) from exc
    except REJECTED as exc:
        reject(exc, count)
        raise
    except PermanentError as exc:
        fail(stored_reason(exc))
        raise
    except BudgetExceededError as exc:
        defer(exc)
    except Exception as exc:  # every other error is retried, or given up on
        retries = current_retries()
        if retries >= max_retries:
            reason = stored_reason(
                exc, prefix=f"gave up after {retries + 1} attempts; last error: "
            )
            fail(reason)
            raise PermanentError(reason) from exc
        count("retries")
        # Raised as dramatiq.Retry, which Dramatiq does not log again: an expected
        # retry is one warning line, an unexpected error one error line with its
        # traceback (a bug to look at), never both.
        if not isinstance(exc, TransientError):
            log.exception("unexpected error, will retry", attempt=retries + 1)
            raise dramatiq.Retry(stored_reason(exc)) from exc
        log.warning(
            "transient failure, will retry",
            reason=stored_reason(exc),
            retry_after_s=exc.retry_after_s,
            attempt=retries + 1,
        )
        delay_ms = None  # None: Dramatiq's exponential backoff with jitter
        if exc.retry_after_s is not None:
            delay_ms = int(exc.retry_after_s * 1000 + random.uniform(0, 250))
        raise dramatiq.Retry(stored_reason(exc), delay=delay_ms) from exc


def defer(exc: BudgetExceededError) -> NoReturn:
    """Retry after the error's wait without spending a retry: Dramatiq's Retries adds
    one to the message's count when it enqueues the retry, taken back here first. The
    message comes back as a first delivery (retries 0) marked ``OWN_ENTRY``: it claims
    its own entry, whose row the release left pending outside the fair pool, and is
    not a token (that would take another entry and leave this one to the reconciler)."""
    message = CurrentMessage.get_current_message()
    if message is not None:
        message.options["retries"] = int(message.options.get("retries", 0)) - 1
        message.options[OWN_ENTRY] = True
    wait_s = exc.retry_after_s or 0.0
    log.info("deferred: daily budget reached", reason=stored_reason(exc), wait_s=round(wait_s))
    raise dramatiq.Retry(stored_reason(exc), delay=int(wait_s * 1000)) from exc
