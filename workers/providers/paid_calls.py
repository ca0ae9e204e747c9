"""Where a provider reports each attempt the model API received (domain/ledger.py), so
the ledger gets a row per attempt, a repair attempt included, right after it ends.

The provider wrappers (instrumented.py) open a ``recording`` scope around one provider
call: the kind of call, whose work it is and the ledger to write to. The clients
(gemini.py, local*.py) call ``report`` for each attempt without knowing any of that; a
provider used outside a scope (a test, a benchmark's floor) reports to nobody.

Whose work: the ids the worker's log context binds from the message being processed
(workers/messaging/middleware.py: LogContext), which the service has checked against the
row before any call (a claim names the entry and its owner); an entry's id also comes
with the entry itself. A fair token that takes another person's entry binds that entry
and its person before any call (workers/services/visualize.py), so the call is charged
to, and budgeted as, the entry's person; a context that names another entry than the
one called for names nobody (never the wrong person: tests/integration/
test_paid_call_owner.py).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import structlog

from domain.ledger import Attempt, CallKind, CallOwner, Ledger
from workers.logging import get_logger
from workers.observability import metrics

log = get_logger("emotionviz.paid_calls")


@dataclass(frozen=True)
class _Scope:
    kind: CallKind
    owner: CallOwner
    ledger: Ledger


_scope: ContextVar[_Scope | None] = ContextVar("paid_call_scope", default=None)


def _uuid(value: object) -> uuid.UUID | None:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value)) if value else None
    except ValueError:
        return None


def current_owner(entry_id: str | None = None) -> CallOwner:
    """Whose work the current message is (see the module docstring)."""
    bound = structlog.contextvars.get_contextvars()
    user_id = _uuid(bound.get("user_id"))
    bound_entry = _uuid(bound.get("entry_id"))
    entry = _uuid(entry_id) or bound_entry
    if entry is not None and bound_entry is not None and entry != bound_entry:
        # The bound person is another entry's: charging them would be wrong.
        log.warning("paid call of an entry the log context does not name: no person")
        user_id = None
    return CallOwner(
        user_id=user_id,
        entry_id=entry,
        intake_session_id=_uuid(bound.get("session_id")),
    )


@contextlib.contextmanager
def recording(ledger: Ledger | None, kind: CallKind, owner: CallOwner) -> Iterator[None]:
    if ledger is None:
        yield
        return
    token = _scope.set(_Scope(kind, owner, ledger))
    try:
        yield
    finally:
        _scope.reset(token)


def report(attempt: Attempt) -> None:
    """One attempt the API received: its ledger row now (no-op outside a scope)."""
    scope = _scope.get()
    if scope is not None:
        cost = scope.ledger.record(scope.kind, scope.owner, attempt)
        metrics.count_model_call(attempt.model, scope.kind, attempt.outcome, float(cost))


def count_unrecorded(model: str) -> None:
    """An attempt the ledger could not write (workers/services/ledger.py): spent, but
    missing from model_calls; counted, as the warning alone is easy to miss."""
    metrics.count_paid_call_unrecorded(model)


def estimated_tokens(text: str) -> int:
    """About four characters a token: what the offline providers report, which have no
    tokenizer (their calls cost nothing; the count shows the shape of the work)."""
    return max(1, len(text) // 4)
