"""The entry.created use case: validate, claim, analyse, draw, complete.

Each step is one unit of work. Finished steps are checkpoints in the row
(``gemini_analysis``, ``image_url``), so a retry after the image failed does not ask
for the analysis again, and a duplicate delivery of a finished entry calls nothing.
The lease token (``processing_started_at``) guards every write: a worker whose lease
was reclaimed can no longer change the row.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import structlog

from db.repositories import ClaimedVisualization, EntryRow
from db.uow import UnitOfWork
from domain.analysis import Analysis
from domain.errors import (
    CrashLoopError,
    LeaseHeldError,
    TransientError,
    failure_reason,
    require_owned,
)
from domain.ledger import PaidCall
from domain.messages import EntryCreated
from domain.vocabulary import VisualizationStatus, VisualizationStyle
from workers.logging import get_logger
from workers.providers.factory import Providers
from workers.providers.ratelimit import releases_batched
from workers.services.imaging import check_image, thumbnail
from workers.services.isolation import SuspectLock
from workers.services.leases import LeaseKeeper
from workers.services.ledger import PaidCallLedger
from workers.services.media import (
    MediaLifecycle,
    all_keys,
    image_key,
    slot_of,
    thumbnail_key,
)

log = get_logger("emotionviz.visualize")


class Outcome(StrEnum):
    COMPLETED = "completed"
    ALREADY_COMPLETED = "already_completed"
    ALREADY_FAILED = "already_failed"
    LEASE_LOST = "lease_lost"
    AT_CAP = "at_cap"  # the person has USER_MAX_IN_FLIGHT jobs running: try again soon
    YIELDED = "yielded"  # back to the pool after its analysis: someone else waited
    REDRAW_REFUSED = "redraw_refused"  # a redraw of an entry with no analysed row


@dataclass(frozen=True)
class VisualizeLimits:
    lease_s: int
    thumbnail_px: int
    max_image_bytes: int
    max_image_pixels: int
    max_claims: int = 3


class _Job(threading.local):
    held: tuple[uuid.UUID, ClaimedVisualization] | None = None
    # The pooled entry this thread took in the message's stead (its own message is
    # another's token): a failure of its job is that entry's, not the message's.
    turn: EntryCreated | None = None
    may_yield: bool = False  # a token's job: may give its thread to a waiting person
    yielded: bool | None = None  # what the analysis checkpoint's yield did (None: none ran)
    redraw: bool = False  # draws its claimed row again (docs/operations.md, "Redraw")


class VisualizationService:
    def __init__(
        self,
        uow_factory: Callable[[], UnitOfWork],
        providers: Providers,
        limits: VisualizeLimits,
        leases: LeaseKeeper | None = None,
        ledger: PaidCallLedger | None = None,
    ) -> None:
        self.uow_factory = uow_factory
        self.providers = providers
        self.limits = limits
        # The ledger the providers record to: the job's rows ride with its writes.
        self.ledger = ledger
        self.leases = leases or LeaseKeeper(uow_factory, limits.lease_s)
        self.media = MediaLifecycle(uow_factory, providers.store)
        self.suspects = SuspectLock()
        # Per worker thread: the entry and claim of the job it runs (or last ran).
        self._job = _Job()

    def process(
        self, message: EntryCreated, *, fair: bool = False, max_in_flight: int = 0
    ) -> Outcome:
        """``fair``: the message is a token (a first delivery): it takes the fairest
        entry waiting in the pool, maybe another person's (``turn_taken`` then names
        it), else its own. A retry claims its own entry only. A token's job may yield
        its thread after the analysis to a person waiting with nothing running; the
        token then takes that person's entry. A redraw is never a token: it claims its
        own completed row (``_claim``)."""
        if message.redraw:
            fair = False
        outcome = self._process(message, fair, max_in_flight, may_yield=fair)
        if outcome is Outcome.YIELDED:
            outcome = self._process(message, fair, max_in_flight, may_yield=False)
        return outcome

    def _process(
        self, message: EntryCreated, fair: bool, max_in_flight: int, *, may_yield: bool
    ) -> Outcome:
        self._job.held = None
        self._job.turn = None
        self._job.yielded = None
        self._job.may_yield = may_yield and not message.redraw
        self._job.redraw = bool(message.redraw)
        # Claimed under an ordinary share of the suspect lock: a suspect of this
        # process runs alone (services/isolation.py).
        with self.suspects.ordinary():
            taken = self._claim(message, fair=fair, max_in_flight=max_in_flight)
            if taken is None:
                return Outcome.AT_CAP
            entry, claim = taken
            entry_id = uuid.UUID(entry.snapshot.entry_id)
            if claim is None:
                return self._not_claimed(entry_id, redraw=bool(message.redraw))
            self._job.held = (entry_id, claim)  # mark_failed fails under it
            # The job's lines and its paid calls' owner (the ledger reads the context)
            # name the entry it runs, on every claim: a second pass after a yield may
            # run the message's own entry after the first ran another in turn.
            structlog.contextvars.bind_contextvars(
                entry_id=str(entry_id), user_id=str(entry.user_id)
            )
            if entry_id != message.entry_id:
                self._job.turn = EntryCreated(
                    entry_id=entry_id, user_id=entry.user_id, style=VisualizationStyle(claim.style)
                )
                # The message's own entry, as in_turn_for.
                structlog.contextvars.bind_contextvars(in_turn_for=str(message.entry_id))
                log.info("took a waiting entry in turn")
            else:
                structlog.contextvars.unbind_contextvars("in_turn_for")
            crashes = claim.claim_count - 1  # earlier claims of this row that never finished
            if crashes >= self.limits.max_claims:
                raise CrashLoopError(
                    f"the worker stopped {crashes} times while processing this entry; "
                    "'emotionviz replay' tries it again"
                )
            try:
                self.leases.hold(claim)  # renewed while it runs (and while a suspect waits)
                if crashes == 0:
                    return self._run(entry, claim)
                return self._run_alone(entry, claim, crashes)
            except BaseException as exc:
                # Also what is not an Exception: Dramatiq's time limit (TimeLimitExceeded)
                # or a shutdown interrupts the job here. The job ends without finishing
                # either way: the lease goes back now, and the claim is not left to count
                # as a crash when its lease runs out.
                self._release(claim, exc)
                raise
            finally:
                self.leases.drop(claim)

    def _run_alone(self, entry: EntryRow, claim: ClaimedVisualization, crashes: int) -> Outcome:
        """A suspect (its earlier claims died with their process) waits for the jobs
        under way in this process, then runs alone. While it waits, its claim is not
        counted: if another row's job kills the process meanwhile, that crash is not
        blamed on this row (it was not running). Counted again once it runs."""
        if not self._count(claim, -1):
            return Outcome.LEASE_LOST
        log.warning("row held by a worker that died: processing it alone", crashes=crashes)
        self._job.may_yield = False  # a suspect runs to its end
        with self.suspects.alone(holding_ordinary=True):
            if not self._count(claim, +1):
                return Outcome.LEASE_LOST
            return self._run(entry, claim)

    def _run(self, entry: EntryRow, claim: ClaimedVisualization) -> Outcome:
        """The steps under the lease; the caller holds it, renews it and gives it back
        if this raises. A rate gate's release is not waited for: its reply is read with
        the next gate command or at the end (workers/providers/ratelimit.py). The paid
        calls' ledger rows ride with the job's next write (the checkpoint, the
        completion), and what none carried is written at the end
        (workers/services/ledger.py: ``holding``)."""
        holding = self.ledger.holding() if self.ledger is not None else contextlib.nullcontext()
        with releases_batched(), holding:
            return self._steps(entry, claim)

    @contextlib.contextmanager
    def _riding_calls(self) -> Iterator[list[PaidCall]]:
        """The ledger rows held for the write made inside the block."""
        if self.ledger is None:
            yield []
            return
        with self.ledger.riding() as calls:
            yield calls

    def _steps(self, entry: EntryRow, claim: ClaimedVisualization) -> Outcome:
        style = VisualizationStyle(claim.style)
        started = time.monotonic()
        analysis = self._analysis_step(entry, claim, style)
        if analysis is None:
            return Outcome.LEASE_LOST
        if self._yield_turn(entry, claim):
            log.info("gave the thread to a person waiting with nothing running")
            return Outcome.YIELDED
        # The picture is saved with the completion, in one write. A redraw draws into
        # the row's other slot: the row names its old picture until this write.
        redraw = self._job.redraw
        old_slot = self._slot(claim.image_url) if redraw else None
        new_slot = 1 - old_slot if old_slot is not None else 0
        picture = (
            {}
            if claim.image_url and not redraw
            else self._image_step(entry, claim, analysis, style, slot=new_slot)
        )
        if redraw:
            picture["style"] = style.value
        with self._riding_calls() as paid_calls, self.uow_factory() as uow:
            # One statement in autocommit: one round trip, its own transaction.
            uow.single_statement()
            completed = uow.entry_pipeline.complete(
                claim,
                user_id=entry.user_id,
                entry_moment=entry.created_at,
                paid_calls=paid_calls,
                **picture,
            )
        if not completed:
            if picture:
                self._drop_picture_if_row_gone(claim)
            return Outcome.LEASE_LOST
        if old_slot is not None:
            self.media.retired(claim.id, old_slot)  # committed: the old picture goes
        log.info("visualization completed", seconds=round(time.monotonic() - started, 3))
        return Outcome.COMPLETED

    def _slot(self, url: str | None) -> int | None:
        """The slot of the picture a row names; None: none, or not this store's."""
        return slot_of(self.providers.store.key_for_url(url)) if url else None

    def _drop_picture_if_row_gone(self, claim: ClaimedVisualization) -> None:
        """The completion found no row (its entry or person was deleted meanwhile): the
        picture and thumbnail this job just stored belong to nobody, and the delete's
        garbage outbox may have been collected before they were written. A row that
        still exists (another worker took the lease over) keeps them: its keys are the
        same, its job may be storing its own picture there."""
        with self.uow_factory() as uow:
            if uow.media.referenced([claim.id]):
                return
        for key in all_keys(claim.id):
            try:
                self.providers.store.delete(key)
            except TransientError as exc:
                log.warning(
                    "a deleted row's picture could not be removed; media gc will",
                    key=key,
                    reason=str(exc),
                )
        log.info("row deleted while its job ran: its picture removed")

    # --- steps ---------------------------------------------------------------------

    def turn_taken(self) -> EntryCreated | None:
        """The pooled entry this thread's last job ran in its message's stead, if any."""
        return self._job.turn

    def _claim(
        self, message: EntryCreated, *, fair: bool, max_in_flight: int
    ) -> tuple[EntryRow, ClaimedVisualization | None] | None:
        """The entry and its lease (None: not claimable now); None when the person is
        at the cap."""
        with self.uow_factory() as uow:
            uow.single_statement()
            if message.redraw:
                found, claim = uow.entry_pipeline.redraw_claim(
                    message.entry_id,
                    message.user_id,
                    message.style.value if message.style else None,
                    self.limits.lease_s,
                )
                entry = require_owned(found, "entry", message.entry_id, message.user_id)
                uow.commit()
                return entry, claim
            if fair:
                pick = uow.entry_pipeline.fair_claim(
                    message.entry_id,
                    message.user_id,
                    message.style.value if message.style else None,
                    self.limits.lease_s,
                    max_in_flight,
                )
                if pick.taken is not None:
                    return pick.taken
                if pick.capped:
                    return None
            # A first delivery's own claim is under the cap too (fair_claim found nothing
            # to take: a row that became claimable since must not pass it). A retry's is
            # not: it finishes a job the cap admitted when its first delivery claimed it
            # (docs/reliability.md, "Fairness").
            style = message.style.value if message.style else None
            capped = False
            if fair and max_in_flight > 0:
                found, claim, capped = uow.entry_pipeline.claim_own(
                    message.entry_id, message.user_id, style, self.limits.lease_s, max_in_flight
                )
            else:
                found, claim = uow.entry_pipeline.claim_entry(
                    message.entry_id, message.user_id, style, self.limits.lease_s
                )
            entry = require_owned(found, "entry", message.entry_id, message.user_id)
            uow.commit()
        if capped:
            return None
        return entry, claim

    def _may_yield(self, claim: ClaimedVisualization) -> bool:
        return self._job.may_yield and not claim.image_url

    def _yield_turn(self, entry: EntryRow, claim: ClaimedVisualization) -> bool:
        """Whether the job gave its row back to the pool (only a token's job, before its
        picture, may): decided with the analysis checkpoint in its round trip, else (a
        checkpoint found) asked now."""
        if not self._may_yield(claim):
            return False
        if self._job.yielded is not None:
            return self._job.yielded
        with self.uow_factory() as uow:
            uow.single_statement()
            return uow.entry_pipeline.yield_turn(claim, entry.user_id)

    def _count(self, claim: ClaimedVisualization, delta: int) -> bool:
        """Count (+1) or uncount (-1) this claim as one that may end in a crash; False
        if the lease was taken over."""
        with self.uow_factory() as uow:
            uow.single_statement()
            held = uow.entry_pipeline.count_claim(claim, delta)
            uow.commit()
        return held

    def _not_claimed(self, entry_id: uuid.UUID, *, redraw: bool = False) -> Outcome:
        with self.uow_factory() as uow:
            row = uow.visualizations.get_by_entry(entry_id)
        if redraw and (row is None or row.summary is None):  # saved with the analysis
            # Nothing to draw again (never analysed): refused, the row left as it is.
            log.warning("redraw refused: the entry has no analysed visualization")
            return Outcome.REDRAW_REFUSED
        assert row is not None  # the claim made sure it exists
        status, error = row.status, row.error_message
        if status == VisualizationStatus.COMPLETED:
            log.info("duplicate message: visualization already completed")
            return Outcome.ALREADY_COMPLETED
        if status == VisualizationStatus.FAILED:
            log.info("visualization already failed; 'emotionviz replay' retries it", error=error)
            return Outcome.ALREADY_FAILED
        # Look again once a lease could have run out (its holder renews it while alive).
        raise LeaseHeldError(
            f"another worker holds the lease on entry {entry_id}",
            retry_after_s=float(self.limits.lease_s),
        )

    def _analysis_step(
        self, entry: EntryRow, claim: ClaimedVisualization, style: VisualizationStyle
    ) -> Analysis | None:
        if claim.gemini_analysis is not None:
            log.info("analysis checkpoint found, not asking again")
            return Analysis.model_validate(claim.gemini_analysis["analysis"])
        result = self.providers.analysis.analyse(entry.snapshot, style)
        analysis = result.analysis
        # A token's job asks, in the checkpoint's round trip, whether to yield its thread.
        yield_for = entry.user_id if self._may_yield(claim) else None
        with self._riding_calls() as paid_calls, self.uow_factory() as uow:
            uow.single_statement()
            checkpoint = uow.entry_pipeline.checkpoint_analysis(
                claim,
                summary=analysis.summary,
                insights=analysis.insights,
                visual_elements=analysis.visual_elements.model_dump(),
                raw={**result.raw_response, "analysis": analysis.model_dump()},
                yield_for=yield_for,
                paid_calls=paid_calls,
            )
            uow.commit()
        if yield_for is not None:
            self._job.yielded = checkpoint.yielded
        return analysis if checkpoint.saved else None

    def _image_step(
        self,
        entry: EntryRow,
        claim: ClaimedVisualization,
        analysis: Analysis,
        style: VisualizationStyle,
        *,
        slot: int = 0,
    ) -> dict[str, Any]:
        """Draw, check and store the picture and its thumbnail (under ``slot``'s keys,
        services/media.py); the columns to save."""
        drawn = self.providers.images.draw(entry.snapshot, analysis, style)
        image = check_image(
            drawn.data,
            max_bytes=self.limits.max_image_bytes,
            max_pixels=self.limits.max_image_pixels,
        )
        store = self.providers.store
        image_url = store.put(
            image_key(claim.id, image.extension, slot), image.data, image.mime_type
        )
        thumb_url = store.put(
            thumbnail_key(claim.id, slot),
            thumbnail(image.data, self.limits.thumbnail_px),
            "image/webp",
        )
        if claim.gemini_analysis is not None:
            # An earlier run got past the analysis: it may have stored a picture in
            # another format before it stopped. Without that checkpoint no run of this
            # row has drawn (the picture comes after it), and there is nothing to remove.
            self.media.replaced(claim.id, image.extension, slot)
        raw = {
            **drawn.raw_response,
            "width": image.width,
            "height": image.height,
            "bytes": len(image.data),
            "mime_type": image.mime_type,
        }
        return {"image_url": image_url, "thumbnail_url": thumb_url, "nanobanana_response": raw}

    def _release(self, claim: ClaimedVisualization, exc: BaseException) -> None:
        interrupted: BaseException | None = None
        # Twice at most: the time limit's interruption, if it lands here, lands once
        # (the release is a compare-and-set on the lease: a second one is harmless).
        for _ in range(2):
            try:
                with self.uow_factory() as uow:
                    # A wait the failure asked for (a quota's retry delay) is recorded, so
                    # the reconciler does not republish the entry while it is waited out.
                    retry_in_s = getattr(exc, "retry_after_s", None) or 0.0
                    uow.visualizations.release(claim, failure_reason(exc), retry_in_s=retry_in_s)
                    uow.commit()
                break
            except Exception:
                log.warning("could not release the lease", exc_info=True)
                break
            except BaseException as interrupt:  # noqa: BLE001 - raised again below
                interrupted = interrupt
        if interrupted is not None:
            raise interrupted

    # --- failure bookkeeping (called by the actor) ---------------------------------

    def mark_failed(self, entry_id: uuid.UUID, reason: str) -> bool:
        """Fail the row of this thread's last job, under the lease it holds if it still
        holds one (a crash-looping row, a release that did not get through). A row that
        another worker holds live is left alone: its job may yet complete. True if this
        call failed the row."""
        held = self._job.held
        lease = held[1].lease if held is not None and held[0] == entry_id else None
        with self.uow_factory() as uow:
            failed = uow.visualizations.fail(entry_id, reason[:2000], lease=lease)
            uow.commit()
        if failed:
            with self.uow_factory() as uow:  # a failed entry leaves the fair pool
                uow.single_statement()
                uow.entry_pipeline.unpool(entry_id)
            log.warning("visualization failed", reason=reason)
        else:
            log.info("not failed: the row is finished or held live elsewhere", reason=reason)
        return failed
