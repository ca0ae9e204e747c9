"""fair claim: rank the waiting people once per claim (issue 25.5)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 00:00:00+00:00

``fair_claim``'s fresh lane (0008, step 2) ranked the waiting people, took the first
one's oldest entry that no concurrent claim held, and ranked again after each person it
found held. Concurrent claims read the same snapshot, so they rank alike and find the
same first person: in a burst of 512 claims over 50 people a claim ranked 3.6 times on
average (pg_stat_statements, scripts/bench_scale.py), and each ranking reads every live
job (GROUP BY over the processing rows) and every ring row.

Now a claim ranks once and walks that order (a cursor), one index probe per person,
to the first whose oldest entry it can lock (SKIP LOCKED): a herd walks past what the
others hold instead of ranking again. The order is 0008's: nothing in flight first,
then the fewest jobs in flight, the longest since their turn first among equals; the
cap is checked under the person's advisory lock as before. A person the walk finds
with no fresh entry at all leaves the ring as before (held first, checked after); one
whose entries are only held by other claims stays. Everything else in the function is
0008's, built by its ``fair_claim_function``.
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _revision_0008() -> ModuleType:
    """0008's module (a versions file is not importable by name): the function's other
    steps and the downgrade's definition come from there, unchanged."""
    path = Path(__file__).with_name("20261204_0200_fair_dispatch.py")
    spec = importlib.util.spec_from_file_location("emotionviz_migration_0008", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_0008 = _revision_0008()

# People walked per claim, at most: past them the claim takes the low lane or its own
# entry (0008 stopped after 8 rankings).
WALK_LIMIT = 32

_FRESH_LANE = f"""
    -- 2. Fresh lane: the waiting people ranked once (nothing in flight first, then the
    --    fewest jobs in flight; the longest since their turn first among equals), walked
    --    in that order to the first whose oldest entry no concurrent claim holds. No
    --    wait for a lock (SKIP LOCKED): concurrent claims for one person take their
    --    next entries, and a herd walks past what the others hold.
    FOR v_person IN
        SELECT t.user_id FROM fair_turns t
        LEFT JOIN (SELECT v.user_id, count(*) AS n FROM visualizations v
                   WHERE {_0008._LIVE} GROUP BY v.user_id) b ON b.user_id = t.user_id
        WHERE p_cap <= 0 OR coalesce(b.n, 0) < p_cap
        ORDER BY coalesce(b.n, 0), t.turn_at
        LIMIT {WALK_LIMIT}
    LOOP
        IF p_cap > 0 THEN  -- the cap is exact: one claim per person at a time counts
            CONTINUE WHEN NOT pg_try_advisory_xact_lock({_0008.LOCK_SPACE},
                                                        hashtext(v_person::text));
            CONTINUE WHEN (SELECT count(*) FROM visualizations v
                           WHERE v.user_id = v_person AND {_0008._LIVE}) >= p_cap;
        END IF;
{_0008._OLDEST_FRESH_ENTRY}
        IF v_entry IS NULL THEN
            -- Out of the ring if nothing is left (entries other claims hold are still
            -- theirs to finish), as 0008: held first, then checked.
            IF NOT EXISTS (SELECT 1 FROM fair_waiting w
                           WHERE w.user_id = v_person AND w.lane = 0) THEN
{_0008._DROP_FROM_RING}
            END IF;
            CONTINUE;
        END IF;
{_0008._TAKE_TURN}
    END LOOP;
"""

FAIR_CLAIM = _0008.fair_claim_function(_FRESH_LANE)


def upgrade() -> None:
    op.execute(FAIR_CLAIM)


def downgrade() -> None:
    op.execute(_0008.FAIR_CLAIM)
