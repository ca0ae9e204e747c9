"""fair dispatch: per-person turns (issue 23.2)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 00:00:00+00:00

A message on ``visualizations`` is a token: a first delivery claims the fairest entry
waiting in the pool, not necessarily its own (docs/reliability.md, "Fairness").

- ``fair_waiting``: the pool, one row per entry whose message counts as a token. Lane 0
  (fresh): an entry's first dispatch; lane 1 (low): a republish (the reconciler, a
  replay). Filled when the dispatch is recorded (db/repositories/reconcile.py), emptied
  by ``fair_claim``.
- ``fair_turns``: the ring of people with fresh entries waiting, each with the time of
  their last turn. Every change to a person's lane-0 pool rows is made holding their
  ``fair_turns`` row, so "no row left" is exact when the ring drops them.
- ``fair_claim(...)``: in one statement, enrol the message's own entry if nothing else
  pooled it, then claim a fresh entry of the waiting person with the fewest jobs in
  flight (none first, then the longest since their turn), else the oldest low-lane
  entry (first, when it has waited ``p_low_after_s``: lower, never starved), else the
  message's own. The cap (``p_cap``) holds on every lane. No row: nothing could be
  taken (the caller's claim says why: a duplicate, a held lease). A row with
  ``capped``: the caller's person is at the cap and their entry waits.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The advisory locks of the cap: (this space, hash of the person).
LOCK_SPACE = 0x46414952  # "FAIR"

# A live job of a person: processing under a lease that has not run out.
_LIVE = "v.status = 'processing' AND coalesce(v.lease_expires_at, v.processing_started_at) >= now()"

# Claim one pooled entry's row if it can be taken now (pending, or its lease ran out);
# a row locked by another claim is left to it. What it takes leaves the pool.
_TAKE = """
        RETURN QUERY
        WITH taken AS (
        UPDATE visualizations AS v
        SET status = 'processing',
            processing_started_at = clock_timestamp(),
            lease_expires_at = clock_timestamp() + make_interval(secs => p_lease_s),
            claim_count = v.claim_count + 1
        WHERE v.id = (
            SELECT c.id FROM visualizations c
            WHERE c.entry_id = v_entry
              AND (c.status = 'pending'
                   OR (c.status = 'processing'
                       AND coalesce(c.lease_expires_at, c.processing_started_at) < now()))
            FOR UPDATE SKIP LOCKED)
        RETURNING v.entry_id, v.id, v.processing_started_at, v.style::text,
                  v.gemini_analysis, v.image_url, v.claim_count, false)
        SELECT * FROM taken;
        IF FOUND THEN
            DELETE FROM fair_waiting w WHERE w.entry_id = v_entry;  -- by its key: stale if left
            RETURN;
        END IF;
"""

_LOW_LANE = f"""
    FOR v_entry, v_person IN
        SELECT w.entry_id, w.user_id FROM fair_waiting w WHERE w.lane = 1
        ORDER BY w.queued_at, w.seq LIMIT 8
        FOR UPDATE SKIP LOCKED
    LOOP
        IF p_cap > 0 AND NOT (
            pg_try_advisory_xact_lock({LOCK_SPACE}, hashtext(v_person::text))
            AND (SELECT count(*) FROM visualizations v WHERE v.user_id = v_person AND {_LIVE})
                < p_cap) THEN
            CONTINUE;  -- their person is at the cap (or being served): the row waits
        END IF;
        DELETE FROM fair_waiting w WHERE w.entry_id = v_entry;
        {_TAKE}
    END LOOP;
"""

# The fresh lane's pieces (0012's fresh lane is made of them too). v_person's oldest
# fresh entry that no concurrent claim holds, into v_entry (NULL: none):
_OLDEST_FRESH_ENTRY = """
        v_entry := NULL;
        SELECT w.entry_id INTO v_entry FROM fair_waiting w
        WHERE w.user_id = v_person AND w.lane = 0
        ORDER BY w.queued_at, w.seq LIMIT 1
        FOR UPDATE SKIP LOCKED;"""[1:]

# v_person out of the ring if no fresh entry of theirs is left, held first:
_DROP_FROM_RING = """
            PERFORM 1 FROM fair_turns t WHERE t.user_id = v_person FOR UPDATE SKIP LOCKED;
            IF FOUND THEN
                DELETE FROM fair_turns t WHERE t.user_id = v_person
                  AND NOT EXISTS (SELECT 1 FROM fair_waiting w
                                  WHERE w.user_id = v_person AND w.lane = 0);
            END IF;"""[1:]

# v_entry taken from the pool, v_person's turn marked, the row claimed (RETURN if so):
_TAKE_TURN = f"""
        DELETE FROM fair_waiting w WHERE w.entry_id = v_entry;
        UPDATE fair_turns t SET turn_at = clock_timestamp()
        WHERE t.user_id = (SELECT r.user_id FROM fair_turns r WHERE r.user_id = v_person
                           FOR UPDATE SKIP LOCKED);
        {_TAKE}"""[1:]

# 2. The fresh lane of 0008: rank the waiting people, take the first one's oldest
# entry; rank again after each person found held (migration 0012 ranks once).
_FRESH_LANE = f"""
    -- 2. Fresh lane: the waiting person with nothing in flight who waited longest since
    --    their last turn, else the one with the fewest jobs in flight (under the cap);
    --    their oldest entry that no concurrent claim holds. Nothing here waits for a
    --    lock (SKIP LOCKED): concurrent claims for one person take their next entries.
    LOOP
        v_tries := v_tries + 1;
        EXIT WHEN v_tries > 8;
        v_person := NULL;
        SELECT t.user_id INTO v_person FROM fair_turns t
        WHERE t.user_id <> ALL (v_passed)
          AND NOT EXISTS (SELECT 1 FROM visualizations v WHERE v.user_id = t.user_id AND {_LIVE})
        ORDER BY t.turn_at LIMIT 1;
        IF v_person IS NULL THEN
            SELECT t.user_id INTO v_person
            FROM fair_turns t
            JOIN (SELECT v.user_id, count(*) AS n FROM visualizations v WHERE {_LIVE}
                  GROUP BY v.user_id) b ON b.user_id = t.user_id
            WHERE t.user_id <> ALL (v_passed) AND (p_cap <= 0 OR b.n < p_cap)
            ORDER BY b.n, t.turn_at LIMIT 1;
        END IF;
        EXIT WHEN v_person IS NULL;
        IF p_cap > 0 THEN  -- the cap is exact: one claim per person at a time counts
            IF NOT pg_try_advisory_xact_lock({LOCK_SPACE}, hashtext(v_person::text)) THEN
                v_passed := v_passed || v_person;  -- another claim is serving them
                CONTINUE;
            END IF;
            IF (SELECT count(*) FROM visualizations v WHERE v.user_id = v_person AND {_LIVE})
               >= p_cap THEN
                v_passed := v_passed || v_person;
                CONTINUE;
            END IF;
        END IF;
{_OLDEST_FRESH_ENTRY}
        IF v_entry IS NULL THEN
            v_passed := v_passed || v_person;
            -- Out of the ring if nothing is left. Held first: whoever adds to a person's
            -- pool holds their ring row, so the check (a statement after the lock, with
            -- its own snapshot) cannot miss an entry being added.
{_DROP_FROM_RING}
            CONTINUE;
        END IF;
{_TAKE_TURN}
    END LOOP;
"""


def fair_claim_function(fresh_lane: str) -> str:
    """``fair_claim`` with ``fresh_lane`` as its step 2 (0012 replaces only that step)."""
    return f"""
CREATE OR REPLACE FUNCTION fair_claim(
    p_entry uuid, p_user uuid, p_style text, p_lease_s double precision, p_cap integer,
    p_low_after_s double precision)
RETURNS TABLE (
    f_entry_id uuid, f_id uuid, f_lease timestamptz, f_style text,
    f_gemini_analysis jsonb, f_image_url text, f_claim_count integer, f_capped boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_person uuid;
    v_entry uuid;
    v_enrol boolean := false;
    v_tries integer := 0;
    v_passed uuid[] := '{{}}';
BEGIN
    -- 0. A message naming no entry of its person takes nothing: the caller rejects it.
    IF NOT EXISTS (SELECT 1 FROM emotion_entries e WHERE e.id = p_entry AND e.user_id = p_user)
    THEN
        RETURN;
    END IF;
    -- 1. The message's own entry joins the pool (fresh) unless something pooled it:
    --    its row is missing (a producer that wrote only the message) or pending and
    --    never failed (a row upstream inserted). The caller's entry only.
    IF NOT EXISTS (SELECT 1 FROM fair_waiting w WHERE w.entry_id = p_entry) THEN
        -- The arrival first, then the row: the reconciler's order (ADOPT_ARRIVALS locks
        -- the arrival, then inserts the row), so the two never wait on each other.
        DELETE FROM entry_arrivals a WHERE a.entry_id = p_entry;
        INSERT INTO visualizations (entry_id, user_id, style, dispatched_at)
        SELECT e.id, e.user_id, p_style, now() FROM emotion_entries e
        WHERE e.id = p_entry AND e.user_id = p_user
        ON CONFLICT (entry_id) DO NOTHING;
        IF FOUND THEN
            v_enrol := true;
        ELSE
            v_enrol := EXISTS (
                SELECT 1 FROM visualizations v
                WHERE v.entry_id = p_entry AND v.user_id = p_user
                  AND v.status = 'pending' AND v.error_message IS NULL);
        END IF;
        IF v_enrol THEN
            INSERT INTO fair_turns AS t (user_id) VALUES (p_user)
            ON CONFLICT (user_id) DO UPDATE SET turn_at = t.turn_at;  -- locks the person
            INSERT INTO fair_waiting (entry_id, user_id, lane) VALUES (p_entry, p_user, 0)
            ON CONFLICT (entry_id) DO NOTHING;
        END IF;
    END IF;

    -- 2a. The low lane goes first when its oldest entry has waited p_low_after_s: it is
    --     lower than the fresh lane, never starved by it (a crashed worker's row, a
    --     replay, an adopted arrival behind somebody's import).
    IF EXISTS (SELECT 1 FROM fair_waiting w WHERE w.lane = 1
               AND w.queued_at < now() - make_interval(secs => p_low_after_s)) THEN
        {_LOW_LANE}
    END IF;
{fresh_lane}
    -- 3. Low lane: the oldest republished entry (a reconcile, a replay), under the cap
    --    as the fresh lane.
    {_LOW_LANE}

    -- 4. Nothing pooled could be taken: the message's own entry, in this statement (a
    --    claim after it would race the other messages for the entry this statement may
    --    have just pooled, and lose its turn to a lease's wait). Under a cap, under the
    --    person's lock; and while pooled entries wait (their people at the cap), the
    --    message comes back soon ("capped"): it is still somebody's token. No row: the
    --    caller claims its own entry as before (a duplicate, a held lease).
    IF p_cap <= 0 THEN
        v_entry := p_entry;
        {_TAKE}
    ELSIF pg_try_advisory_xact_lock({LOCK_SPACE}, hashtext(p_user::text))
          AND (SELECT count(*) FROM visualizations v WHERE v.user_id = p_user AND {_LIVE})
              < p_cap THEN
        v_entry := p_entry;
        {_TAKE}
    END IF;
    --    Waiting: as _TAKE's predicate (pending, or its lease ran out), so an own row
    --    at the cap is never left to the caller's uncapped claim.
    IF p_cap > 0
       AND (EXISTS (SELECT 1 FROM fair_waiting w)  -- either lane: both are capped
            OR EXISTS (SELECT 1 FROM visualizations v
                       WHERE v.entry_id = p_entry
                         AND (v.status = 'pending'
                              OR (v.status = 'processing'
                                  AND coalesce(v.lease_expires_at, v.processing_started_at)
                                      < now())))) THEN
        -- The message is queued again (at_cap): its own entry's token is alive, so a
        -- pooled row of it is dispatched now, and the reconciler does not republish the
        -- capped backlog every grace window (a row whose message was lost is not
        -- bumped by anything, and is republished as before).
        UPDATE visualizations v SET dispatched_at = greatest(v.dispatched_at, now())
        WHERE v.id = (SELECT x.id FROM visualizations x
                      WHERE x.entry_id = p_entry AND x.status = 'pending'
                        AND EXISTS (SELECT 1 FROM fair_waiting w WHERE w.entry_id = p_entry)
                      FOR UPDATE SKIP LOCKED);
        RETURN QUERY SELECT NULL::uuid, NULL::uuid, NULL::timestamptz, NULL::text,
                            NULL::jsonb, NULL::text, NULL::integer, true;
        RETURN;
    END IF;
    RETURN;
END;
$$
"""


FAIR_CLAIM = fair_claim_function(_FRESH_LANE)

STEPS = [
    "CREATE TABLE IF NOT EXISTS fair_turns ("
    " user_id uuid NOT NULL,"
    " turn_at timestamp with time zone DEFAULT now() NOT NULL,"
    " CONSTRAINT fair_turns_pkey PRIMARY KEY (user_id),"
    " CONSTRAINT fair_turns_user_id_fkey FOREIGN KEY (user_id)"
    " REFERENCES users (id) ON DELETE CASCADE)",
    "CREATE INDEX IF NOT EXISTS idx_fair_turns_turn_at ON fair_turns (turn_at)",
    "CREATE TABLE IF NOT EXISTS fair_waiting ("
    " entry_id uuid NOT NULL,"
    " user_id uuid NOT NULL,"
    " lane integer DEFAULT 0 NOT NULL,"
    " queued_at timestamp with time zone DEFAULT now() NOT NULL,"
    # Publish order among rows of one transaction (their queued_at is the same now()):
    # "oldest first" must not depend on the plan (a sort's ties are in no order).
    " seq bigint GENERATED ALWAYS AS IDENTITY,"
    " CONSTRAINT fair_waiting_pkey PRIMARY KEY (entry_id),"
    " CONSTRAINT fair_waiting_entry_id_fkey FOREIGN KEY (entry_id)"
    " REFERENCES emotion_entries (id) ON DELETE CASCADE,"
    " CONSTRAINT fair_waiting_lane_check CHECK (lane IN (0, 1)))",
    "CREATE INDEX IF NOT EXISTS idx_fair_waiting_fresh ON fair_waiting (user_id, queued_at, seq)"
    " WHERE lane = 0",
    "CREATE INDEX IF NOT EXISTS idx_fair_waiting_low ON fair_waiting (queued_at, seq)"
    " WHERE lane = 1",
    FAIR_CLAIM,
]


def upgrade() -> None:
    for step in STEPS:
        op.execute(step)


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION IF EXISTS"
        " fair_claim(uuid, uuid, text, double precision, integer, double precision)"
    )
    op.execute("DROP TABLE IF EXISTS fair_waiting")
    op.execute("DROP TABLE IF EXISTS fair_turns")
