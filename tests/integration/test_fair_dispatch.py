"""The fair claim on real PostgreSQL (migration 0008; docs/reliability.md, "Fairness"):
the pool and its lanes, the ring, the yield, and recovery of a claim whose worker died."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import dramatiq
import pytest
import structlog
from sqlalchemy import Engine, text

from db.engine import make_session_factory
from db.repositories import ClaimedVisualization, EntryRow
from db.repositories.entry_pipeline import LOW_LANE_AFTER_S, FairClaim
from db.uow import UnitOfWork
from domain.analysis import AnalysisResult, EntrySnapshot
from domain.ledger import price_table
from domain.messages import EntryCreated
from domain.vocabulary import VisualizationStyle
from tests.integration.helpers import insert_entry, insert_user
from workers.messaging.producer import Producer
from workers.providers.factory import Providers
from workers.providers.instrumented import CountedAnalysis, CountedImages
from workers.providers.local import LocalAnalysisProvider, LocalImageProvider
from workers.providers.local_intake import LocalIntakeProvider
from workers.providers.storage import LocalImageStore
from workers.services.ledger import PaidCallLedger
from workers.services.reconcile import reconcile
from workers.services.visualize import Outcome, VisualizationService, VisualizeLimits

pytestmark = pytest.mark.integration
LEASE_S = 60


@pytest.fixture
def uow_factory(engine: Engine, broker: dramatiq.Broker) -> Callable[[], UnitOfWork]:
    factory = make_session_factory(engine)
    producer = Producer(broker)
    return lambda: UnitOfWork(factory, producer)


def _person(engine: Engine, entries: int) -> tuple[uuid.UUID, list[uuid.UUID]]:
    with engine.begin() as conn:
        user = insert_user(conn)
        return user, [insert_entry(conn, user) for _ in range(entries)]


def _publish(factory: Callable[[], UnitOfWork], user: uuid.UUID, entries: list[uuid.UUID]) -> None:
    with factory() as uow:
        for entry in entries:
            uow.publish(EntryCreated(entry_id=entry, user_id=user))
        uow.commit()


def _claim(
    factory: Callable[[], UnitOfWork], entry: uuid.UUID, user: uuid.UUID, cap: int = 0
) -> FairClaim:
    """What the token (the message of ``entry``) takes."""
    with factory() as uow:
        uow.single_statement()
        return uow.entry_pipeline.fair_claim(entry, user, None, LEASE_S, cap)


def _taken(pick: FairClaim) -> uuid.UUID:
    assert pick.taken is not None
    return uuid.UUID(pick.taken[0].snapshot.entry_id)


def _pool(engine: Engine) -> dict[uuid.UUID, int]:
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT entry_id, lane FROM fair_waiting")).all())  # type: ignore[arg-type]


def _ring(engine: Engine) -> set[uuid.UUID]:
    with engine.connect() as conn:
        return set(conn.execute(text("SELECT user_id FROM fair_turns")).scalars())


def test_tokens_take_people_in_turn_and_each_entry_once(
    engine: Engine, uow_factory: Callable[[], UnitOfWork]
) -> None:
    a, a_entries = _person(engine, 5)
    b, [b_entry] = _person(engine, 1)
    _publish(uow_factory, a, a_entries)
    _publish(uow_factory, b, [b_entry])
    assert _pool(engine) == {e: 0 for e in [*a_entries, b_entry]}
    assert _ring(engine) == {a, b}
    # A's messages come first; the first takes A's oldest, the second B's (B has
    # nothing running), then A's in order, whatever the message.
    taken = [_taken(_claim(uow_factory, e, a)) for e in a_entries[:2]]
    assert taken == [a_entries[0], b_entry]
    taken += [_taken(_claim(uow_factory, e, a)) for e in a_entries[2:]]
    taken.append(_taken(_claim(uow_factory, b_entry, b)))
    assert sorted(taken) == sorted([*a_entries, b_entry])  # each once
    assert _pool(engine) == {}
    # A spare token (every entry is taken): its own entry is held, nothing is taken;
    # the ring drops whoever it finds with nothing left (lazily, on the next look).
    assert _claim(uow_factory, a_entries[0], a) == FairClaim(None, capped=False)
    assert _ring(engine) == set()


def test_a_claim_walks_past_a_person_whose_entries_other_claims_hold(
    engine: Engine, uow_factory: Callable[[], UnitOfWork]
) -> None:
    """One ranking per claim (migration 0012): the first person's only entry is held by a
    concurrent claim (its statement has not ended), so the claim takes the next person's
    oldest entry in the same statement; the held person stays in the ring."""
    a, [a_entry] = _person(engine, 1)
    b, b_entries = _person(engine, 2)
    _publish(uow_factory, a, [a_entry])  # A first: A's turn is the older
    _publish(uow_factory, b, b_entries)
    with engine.connect() as other:  # a concurrent claim, mid-statement, holds A's entry
        other.execute(
            text("SELECT 1 FROM fair_waiting WHERE entry_id = :e FOR UPDATE"), {"e": a_entry}
        )
        assert _taken(_claim(uow_factory, b_entries[1], b)) == b_entries[0]
        assert _ring(engine) == {a, b}
        other.rollback()
    assert _taken(_claim(uow_factory, b_entries[1], b)) == a_entry  # A: nothing running


def test_fresh_entries_go_before_replays_and_republished_stuck_rows(
    engine: Engine, uow_factory: Callable[[], UnitOfWork], broker: dramatiq.Broker
) -> None:
    c, c_entries = _person(engine, 3)
    _publish(uow_factory, c, c_entries)
    for entry in c_entries[:2]:
        _taken(_claim(uow_factory, entry, c))
    with engine.begin() as conn:  # one failed, one whose worker died (lease ran out)
        conn.execute(
            text("UPDATE visualizations SET status = 'failed' WHERE entry_id = :e"),
            {"e": c_entries[0]},
        )
        conn.execute(
            text(
                "UPDATE visualizations SET lease_expires_at = now() - interval '1 hour', "
                "processing_started_at = now() - interval '2 hours', "
                "dispatched_at = now() - interval '2 hours' WHERE entry_id = :e"
            ),
            {"e": c_entries[1]},
        )
    with uow_factory() as uow:  # an operator's replay (workers/operations/jobs.py)
        for entry_id, user_id, style in uow.visualizations.replay_failed([c_entries[0]]):
            uow.publish(EntryCreated(entry_id=entry_id, user_id=user_id, style=style))
        uow.commit()
    assert reconcile(uow_factory, grace_s=300).stuck == 1
    pool = _pool(engine)
    assert pool[c_entries[0]] == 1 and pool[c_entries[1]] == 1  # the low lane
    assert pool[c_entries[2]] == 0  # never taken: still fresh
    d, [d_entry] = _person(engine, 1)
    _publish(uow_factory, d, [d_entry])
    # Any message, the republished ones included, takes the fresh entries first.
    first = [_taken(_claim(uow_factory, c_entries[0], c)) for _ in range(2)]
    assert sorted(first) == sorted([c_entries[2], d_entry])
    low = [_claim(uow_factory, c_entries[1], c) for _ in range(2)]
    claims = {_taken(p): p.taken[1].claim_count for p in low if p.taken is not None}
    # The replayed row starts afresh; the dead worker's claim counts, so a row that
    # keeps killing workers still fails after MAX_CLAIMS.
    assert claims == {c_entries[0]: 1, c_entries[1]: 2}


def test_a_message_without_a_row_enrols_its_entry(
    engine: Engine, uow_factory: Callable[[], UnitOfWork]
) -> None:
    """A producer that wrote only the message (docs/messages.md): the row is made and
    pooled by its own token, which then takes the fairest entry."""
    a, [a_entry] = _person(engine, 1)
    pick = _claim(uow_factory, a_entry, a)
    assert _taken(pick) == a_entry
    with engine.connect() as conn:
        arrivals = conn.execute(text("SELECT count(*) FROM entry_arrivals")).scalar_one()
    assert arrivals == 0 and _pool(engine) == {}
    # A message naming another person's entry takes nothing (it is rejected).
    b, _ = _person(engine, 1)
    assert _claim(uow_factory, a_entry, b) == FairClaim(None, capped=False)


def test_the_cap_holds_a_person_back_and_their_message_waits(
    engine: Engine, uow_factory: Callable[[], UnitOfWork]
) -> None:
    a, entries = _person(engine, 3)
    _publish(uow_factory, a, entries)
    assert _taken(_claim(uow_factory, entries[0], a, cap=2)) == entries[0]
    assert _taken(_claim(uow_factory, entries[1], a, cap=2)) == entries[1]
    assert _claim(uow_factory, entries[2], a, cap=2) == FairClaim(None, capped=True)
    assert _taken(_claim(uow_factory, entries[2], a, cap=3)) == entries[2]


def test_a_job_yields_its_thread_to_a_person_waiting_with_nothing_running(
    engine: Engine, uow_factory: Callable[[], UnitOfWork]
) -> None:
    a, a_entries = _person(engine, 3)
    _publish(uow_factory, a, a_entries)
    held: list[ClaimedVisualization] = []
    for entry in a_entries[:2]:
        pick = _claim(uow_factory, entry, a)
        assert pick.taken is not None
        held.append(pick.taken[1])

    def yields(claim: ClaimedVisualization, user: uuid.UUID) -> bool:
        with uow_factory() as uow:
            uow.single_statement()
            return uow.entry_pipeline.yield_turn(claim, user)

    assert not yields(held[0], a)  # nobody else waits
    b, [b_entry] = _person(engine, 1)
    _publish(uow_factory, b, [b_entry])
    assert yields(held[0], a)
    assert not yields(held[1], a)  # A has one job left running: it keeps it
    assert _pool(engine)[a_entries[0]] == 0
    assert _taken(_claim(uow_factory, a_entries[2], a)) == b_entry
    # The yielded entry is A's next, before A's later entries.
    assert _taken(_claim(uow_factory, a_entries[2], a)) == a_entries[0]


def _expire(engine: Engine, entry: uuid.UUID) -> None:
    """The worker holding the entry died: its lease ran out."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE visualizations SET lease_expires_at = now() - interval '1 hour', "
                "processing_started_at = now() - interval '2 hours', "
                "dispatched_at = now() - interval '2 hours' WHERE entry_id = :e"
            ),
            {"e": entry},
        )


def test_the_low_lane_is_lower_but_never_starved_by_a_steady_fresh_lane(
    engine: Engine, uow_factory: Callable[[], UnitOfWork]
) -> None:
    b, [b_entry] = _person(engine, 1)
    _publish(uow_factory, b, [b_entry])
    _taken(_claim(uow_factory, b_entry, b))
    _expire(engine, b_entry)  # B's worker was killed
    assert reconcile(uow_factory, grace_s=300).stuck == 1
    assert _pool(engine)[b_entry] == 1
    a, a_entries = _person(engine, 4)
    _publish(uow_factory, a, a_entries)  # A's import: the fresh lane never runs dry
    # Newly republished: the fresh lane first.
    assert _taken(_claim(uow_factory, a_entries[0], a)) == a_entries[0]
    with engine.begin() as conn:  # B's row has waited longer than LOW_LANE_AFTER_S
        conn.execute(
            text("UPDATE fair_waiting SET queued_at = now() - make_interval(secs => :s)"),
            {"s": LOW_LANE_AFTER_S + 1},
        )
    pick = _claim(uow_factory, a_entries[1], a)
    assert _taken(pick) == b_entry and pick.taken is not None
    assert pick.taken[1].claim_count == 2  # the dead worker's claim still counts
    assert set(_pool(engine)) == set(a_entries[1:])  # A's entries all still waiting


def test_the_cap_holds_on_the_low_lane_and_on_a_row_whose_lease_ran_out(
    engine: Engine, uow_factory: Callable[[], UnitOfWork]
) -> None:
    a, (running, dead) = _person(engine, 2)
    _publish(uow_factory, a, [running, dead])
    _taken(_claim(uow_factory, running, a))
    _taken(_claim(uow_factory, dead, a))
    _expire(engine, dead)  # one job live, one whose worker died: A runs 1, at cap 1
    # The dead row's own message: its row can be taken, but A is at the cap.
    assert _claim(uow_factory, dead, a, cap=1) == FairClaim(None, capped=True)
    with uow_factory() as uow:  # a first delivery's own claim (visualize._claim)
        uow.single_statement()
        _, claim, capped = uow.entry_pipeline.claim_own(dead, a, None, LEASE_S, 1)
    assert claim is None and capped
    assert reconcile(uow_factory, grace_s=300).stuck == 1
    assert _pool(engine) == {dead: 1}
    # Another person's token passes over A's low-lane row (aged: it would go first).
    with engine.begin() as conn:
        conn.execute(text("UPDATE fair_waiting SET queued_at = now() - interval '1 hour'"))
    b, [b_entry] = _person(engine, 1)
    _publish(uow_factory, b, [b_entry])
    assert _taken(_claim(uow_factory, b_entry, b, cap=1)) == b_entry
    assert _claim(uow_factory, b_entry, b, cap=1) == FairClaim(None, capped=True)
    assert _pool(engine) == {dead: 1}
    with engine.begin() as conn:  # A's live job ends: A has room again
        conn.execute(
            text("UPDATE visualizations SET status = 'completed' WHERE entry_id = :e"),
            {"e": running},
        )
    assert _taken(_claim(uow_factory, b_entry, b, cap=1)) == dead
    assert _pool(engine) == {}


def test_an_entry_claimed_or_finished_leaves_the_pool(
    engine: Engine, uow_factory: Callable[[], UnitOfWork]
) -> None:
    a, entries = _person(engine, 3)
    _publish(uow_factory, a, entries)
    with uow_factory() as uow:  # its retry's claim (its own entry, not a token)
        uow.single_statement()
        _, claim = uow.entry_pipeline.claim_entry(entries[0], a, None, LEASE_S)
    assert claim is not None and entries[0] not in _pool(engine)
    _taken(_claim(uow_factory, entries[1], a))
    _expire(engine, entries[1])
    reconcile(uow_factory, grace_s=300)  # republished while its slow worker still runs
    assert _pool(engine)[entries[1]] == 1
    with engine.connect() as conn:
        row_id, lease = conn.execute(
            text("SELECT id, processing_started_at FROM visualizations WHERE entry_id = :e"),
            {"e": entries[1]},
        ).one()
    done = ClaimedVisualization(row_id, lease, "abstract", None, None, 2)
    with uow_factory() as uow:  # the slow worker completes under its lease
        uow.single_statement()
        assert uow.entry_pipeline.complete(done, user_id=a, entry_moment=datetime.now(UTC))
    assert set(_pool(engine)) == {entries[2]}


class _AnalysisThen(LocalAnalysisProvider):
    """Runs ``then`` before its first analysis (another person publishes meanwhile)."""

    def __init__(self, then: Callable[[], None]) -> None:
        self.then: Callable[[], None] | None = then

    def analyse(self, entry: EntrySnapshot, style: VisualizationStyle) -> AnalysisResult:
        if self.then is not None:
            then, self.then = self.then, None
            then()
        return super().analyse(entry, style)


def test_after_a_yield_the_own_entrys_job_is_named_and_charged_as_its_own(
    engine: Engine, uow_factory: Callable[[], UnitOfWork], tmp_path: Path
) -> None:
    """The first pass runs another entry in turn and yields; the second claims the
    message's own: its log context and its paid calls' owner name the own entry and
    its person, with no in_turn_for left from the first pass."""
    a, (a_live, a_turn, a_own) = _person(engine, 3)
    b, [b_entry] = _person(engine, 1)
    _publish(uow_factory, a, [a_live, a_turn, a_own])
    assert _taken(_claim(uow_factory, a_live, a)) == a_live  # A runs one job
    ledger = PaidCallLedger(uow_factory, price_table({}), None, 0)
    providers = Providers(
        CountedAnalysis(_AnalysisThen(lambda: _publish(uow_factory, b, [b_entry])), "x", ledger),
        CountedImages(LocalImageProvider(size_px=64), "x", ledger),
        LocalImageStore(tmp_path, "http://m.test"),
        LocalIntakeProvider(),
    )
    service = VisualizationService(
        uow_factory, providers, VisualizeLimits(LEASE_S, 32, 10_000_000, 10_000_000)
    )
    yield_turn = service._yield_turn

    def yield_then_others_claim(entry: EntryRow, claim: ClaimedVisualization) -> bool:
        yielded = yield_turn(entry, claim)
        if yielded:  # other threads take B's entry, then the yielded one, first of A's
            assert [_taken(_claim(uow_factory, b_entry, b)) for _ in range(2)] == [
                b_entry,
                a_turn,
            ]
        return yielded

    service._yield_turn = yield_then_others_claim  # type: ignore[method-assign]
    message = EntryCreated(entry_id=a_own, user_id=a)
    structlog.contextvars.bind_contextvars(user_id=str(a), entry_id=str(a_own))  # middleware
    try:
        assert service.process(message, fair=True) is Outcome.COMPLETED
        bound = structlog.contextvars.get_contextvars()
    finally:
        structlog.contextvars.clear_contextvars()
    assert service.turn_taken() is None  # the second pass ran the message's own entry
    assert bound["entry_id"] == str(a_own) and bound["user_id"] == str(a)
    assert "in_turn_for" not in bound
    with engine.connect() as conn:
        calls = conn.execute(
            text("SELECT user_id, entry_id, kind FROM model_calls ORDER BY id")
        ).all()
    # The first pass's analysis of the entry taken in turn, then the own entry's calls,
    # charged to A (a context naming the turn's entry would charge nobody).
    assert [tuple(c) for c in calls] == [
        (a, a_turn, "analysis"),
        (a, a_own, "analysis"),
        (a, a_own, "image"),
    ]


def test_a_capped_backlog_is_not_republished_while_its_tokens_circulate(
    engine: Engine, uow_factory: Callable[[], UnitOfWork]
) -> None:
    a, (running, waiting, lost) = _person(engine, 3)
    _publish(uow_factory, a, [running, waiting, lost])
    _taken(_claim(uow_factory, running, a, cap=1))
    with engine.begin() as conn:  # published long ago, behind the cap since
        conn.execute(
            text(
                "UPDATE visualizations SET dispatched_at = now() - interval '1 hour' "
                "WHERE status = 'pending'"
            )
        )
    # ``waiting``'s message comes back at the cap (and is queued again): its row is
    # dispatched now. ``lost``'s message never comes: its row is republished.
    assert _claim(uow_factory, waiting, a, cap=1) == FairClaim(None, capped=True)
    report = reconcile(uow_factory, grace_s=300)
    assert report.unfinished == 1
    with engine.connect() as conn:
        recent = (
            conn.execute(
                text(
                    "SELECT entry_id FROM visualizations WHERE status = 'pending' "
                    "AND dispatched_at > now() - interval '1 minute' ORDER BY entry_id"
                )
            )
            .scalars()
            .all()
        )
    assert sorted(recent) == sorted([waiting, lost])
    assert reconcile(uow_factory, grace_s=300).unfinished == 0
