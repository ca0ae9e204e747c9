"""The one error hierarchy of the project.

Every error we raise on purpose derives from EmotionVizError. The split that matters
operationally is Permanent (fail fast, dead-letter, tell a person why) versus Transient
(retry with backoff, honouring a server-given delay).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Protocol, TypeVar

from domain.redaction import redact
from domain.sanitize import one_line

if TYPE_CHECKING:  # only a type here: pydantic is ~35 ms of every command's start
    from pydantic import ValidationError


class EmotionVizError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigurationError(EmotionVizError):
    """A setting is missing or invalid; the process cannot start."""


class PermanentError(EmotionVizError):
    """Retrying cannot help: the input, the row or the model's answer is unusable."""


class TransientError(EmotionVizError):
    """Retrying later may help. ``retry_after_s`` is a server-given wait, if any."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class InvalidMessageError(PermanentError):
    """A broker message does not match its schema."""


class NotFoundError(PermanentError):
    """A row the message names does not exist."""


class OwnershipError(PermanentError):
    """A row the message names belongs to another user."""


class ConflictError(PermanentError):
    """The request does not fit the row's current state (e.g. a question already
    answered, a session already complete)."""


class CrashLoopError(PermanentError):
    """The row's earlier claims all ended with the worker process dying: a poison entry."""


class DataRejectedError(PermanentError):
    """The database refused the data (a data or integrity error): writing the same
    values again cannot succeed, so neither can a retry."""


class ProviderError(PermanentError):
    """A model API refused the request for good (400/401/403/404, blocked, unusable)."""


class ContentBlockedError(ProviderError):
    """The model's safety system blocked the prompt or the output."""


class InvalidModelOutputError(ProviderError):
    """The model answered, but not with something we can use."""


class InvalidImageError(ProviderError):
    """The image bytes are not a decodable PNG, JPEG or WebP within the limits."""


class ProviderUnavailableError(TransientError):
    """The model API is overloaded, down, slow, or rate-limited us (429/5xx/timeout)."""


class JobTimeLimitError(TransientError):
    """The job ran past JOB_TIME_LIMIT_S and was interrupted. Retried like a timeout
    (the checkpoints keep what finished), failed when the retries run out."""

    def __init__(self, limit_s: float | None) -> None:
        limit = "" if limit_s is None else f" of {limit_s:g} s"
        super().__init__(f"the job took longer than the job time limit{limit}")
        self.limit_s = limit_s


class LeaseHeldError(TransientError):
    """Another worker holds a live lease on this row; try again after it expires."""


class BrokerUnavailableError(TransientError):
    """The broker refused or dropped a publish, after retries."""


class PublishFailedError(EmotionVizError):
    """The change is committed, but its message could not be published: do not write it
    again (the reconciler publishes the work from the database). ``saved_id`` is what
    the call created or advanced (a session id, the entry id). Not a TransientError on
    purpose: a caller that retries transient errors would write the change twice (a
    second intake session)."""

    def __init__(self, message: str, *, saved_id: uuid.UUID | None = None) -> None:
        super().__init__(message)
        self.saved_id = saved_id


class DatabaseUnavailableError(TransientError):
    """The database connection failed or the server restarted."""


class _Owned(Protocol):
    @property
    def user_id(self) -> uuid.UUID: ...


Owned = TypeVar("Owned", bound=_Owned)


def require_owned(row: Owned | None, what: str, row_id: object, user_id: uuid.UUID) -> Owned:
    """``row`` if it exists and belongs to ``user_id``; otherwise the permanent error
    that says which (a message naming another person's row changes nothing)."""
    if row is None:
        raise NotFoundError(f"{what} {row_id} does not exist")
    if row.user_id != user_id:
        raise OwnershipError(f"{what} {row_id} does not belong to user {user_id}")
    return row


def first_problem(exc: ValidationError) -> str:
    """``where: what`` of a pydantic error's first problem, for a one-line reason."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "(root)"
    return f"{where}: {first['msg']}"


REASON_MAX_CHARS = 500


def failure_reason(exc: BaseException, *, prefix: str = "", limit: int = REASON_MAX_CHARS) -> str:
    """The reason we store (a row's error_message, an intake's last_error, a dead
    letter): one line a person can act on, without secrets, SQL, parameters or a
    traceback, at most ``limit`` characters.

    Our own errors say what happened in words we chose. Anything else is a bug or a
    library's raw error, whose text may hold SQL and its parameters: only its type is
    kept; the worker's log line (message id attached) has the details.
    """
    if isinstance(exc, EmotionVizError) and str(exc).strip():
        text = str(exc)
    elif not isinstance(exc, Exception):  # an interruption: a time limit, a shutdown
        text = f"the job was interrupted ({type(exc).__name__}) before it finished"
    else:
        text = f"internal error ({type(exc).__name__}); the worker log has the details"
    return one_line(redact(prefix + text), limit)
