"""The analytics statement: ``emotion_analytics`` rows for one period kind and one batch
of users, computed in one SQL statement (rows never pass through Python).

docs/analytics.md defines every column and insight; each rule of that definition is a
named fragment below, with a comment saying which. The statement aggregates in
PostgreSQL, derives the insights from the previous period with window functions,
upserts, and (optionally) deletes the rows of periods in range that no longer have
entries. Entries are read from :lookback_day (STREAK_CAP periods before :from_day) so
that comparisons and streaks of the first periods in range see their history; only
periods starting in [:from_day, :to_day) are written.

The repository (db/repositories/analytics.py) runs it with ``parameters(...)``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import date
from typing import Any

from domain.analytics import INTENSITY_TREND_THRESHOLD, STREAK_CAP, TOP_EMOTIONS, shift_periods
from domain.periods import PeriodKind
from domain.vocabulary import EMOTIONS

# Rule "ties": name order breaks every tie (most common emotions, largest rise or fall).
EMOTION_ORDER: tuple[str, ...] = tuple(sorted(EMOTIONS))

# One period of each kind, as a PostgreSQL interval (bound as :step).
STEP: dict[PeriodKind, str] = {"day": "1 day", "week": "7 days", "month": "1 month"}


def each(template: str, sep: str = ", ") -> str:
    """``template`` once per emotion: {e} the name, {i} its 0-based rank in EMOTION_ORDER."""
    return sep.join(template.format(e=e, i=i) for i, e in enumerate(EMOTION_ORDER))


# --- columns -------------------------------------------------------------------------

# Rule "counts": per-emotion counts as one filtered count per emotion of the fixed
# vocabulary (enforced by a CHECK constraint): one hash aggregate, no unnest, and an
# entry listing an emotion twice counts it once. Column c_<emotion> of ``totals``.
EMOTION_COUNTS = each("count(*) FILTER (WHERE '{e}' = ANY(en.emotions)) AS c_{e}", ",\n           ")

# Rule "emotion_counts": the JSONB object holds only the emotions present in the period.
# Written as JSON text and cast: jsonb_strip_nulls(jsonb_build_object(...)) of the same
# pairs gives the same value at 2.6 x the cost per row (jsonb_build_object resolves the
# type and output function of each of its 20 arguments on every call), and the statement
# evaluates it once per row it computes. Emotion names are plain lowercase words (checked
# below), so the text needs no escaping.
assert all(e.isascii() and e.isalpha() and e.islower() for e in EMOTION_ORDER)
COUNTS_JSON = (
    "CAST('{' || concat_ws(',', "
    + each("""CASE WHEN t.c_{e} > 0 THEN '"{e}":' || t.c_{e} END""")
    + ") || '}' AS jsonb)"
)

# Rule "most_common_emotions": emotions present, by count descending then name; the
# first TOP_EMOTIONS of them.
RANKED = (
    "(SELECT array_agg(x.k ORDER BY x.v DESC, x.k) FROM (VALUES "
    + each("('{e}', t.c_{e})")
    + ") AS x(k, v) WHERE x.v > 0)"
)
TOP = f"({RANKED})[1:{TOP_EMOTIONS}]"

# Rule "previous period": insights compare with the immediately previous period of the
# same kind; when that one had no entries (no row in ``totals``) there is nothing to
# compare with, and prev_ok is false.
PREVIOUS_PERIOD_OK = (
    "coalesce(lag(t.period_start) OVER w\n"
    "                    = (t.period_start - CAST(:step AS interval))::date, false)"
)

# Rule "streak" (gaps and islands): a period's index (days, weeks or months since a
# fixed Monday) minus its row number is constant along a run of consecutive periods
# with entries, so it names the run ("island"); the streak is the row number inside the
# island, capped at STREAK_CAP (:cap).
ISLAND = """CASE CAST(:kind AS text)
               WHEN 'month' THEN (extract(year FROM t.period_start) * 12
                                  + extract(month FROM t.period_start))::int
               WHEN 'week' THEN (t.period_start - DATE '2000-01-03') / 7
               ELSE t.period_start - DATE '2000-01-03'
           END - row_number() OVER w"""
STREAK = (
    "least(row_number() OVER (PARTITION BY s.user_id, s.island ORDER BY s.period_start),\n"
    "                 CAST(:cap AS int))"
)

# --- the largest rise and fall ---------------------------------------------------------

# Rule "largest change": the largest rise (or fall) as one sortable number,
# change * KEY_BASE + (KEY_BASE - 1 - name rank): GREATEST picks the largest change,
# then the first name. KEY_BASE exceeds the number of emotions, so the remainder
# decodes the emotion's 1-based position (``_pick``).
KEY_BASE = 16
assert len(EMOTION_ORDER) < KEY_BASE


def _largest_change_key(applies: str, change: str) -> str:
    """GREATEST over the emotions for which ``applies`` holds, of the encoded ``change``."""
    top_rank = KEY_BASE - 1
    return (
        "greatest("
        + each(f"CASE WHEN {applies} THEN ({change}) * {KEY_BASE} + ({top_rank} - {{i}}) END")
        + ")"
    )


# A rise counts only for an emotion present in both periods; a fall includes one to zero.
RISE_KEY = _largest_change_key(
    "r.prev_ok AND r.p_{e} > 0 AND r.c_{e} > r.p_{e}", "r.c_{e} - r.p_{e}"
)
FALL_KEY = _largest_change_key("r.prev_ok AND r.p_{e} > r.c_{e}", "r.p_{e} - r.c_{e}")

# Rule "new": emotions present now and absent from the previous period, in name order.
NEW_LIST = (
    "concat_ws(', ', "
    + each("CASE WHEN r.prev_ok AND r.c_{e} > 0 AND r.p_{e} = 0 THEN '{e}' END")
    + ")"
)

_NAME_ARRAY = "ARRAY[" + each("'{e}'") + "]"
_CURRENT_ARRAY = "ARRAY[" + each("r.c_{e}") + "]"
_PREVIOUS_ARRAY = "ARRAY[" + each("r.p_{e}") + "]"


def _pick(array: str, key: str) -> str:
    """The element of ``array`` (one per emotion) for the emotion encoded in ``key``."""
    return f"({array})[{KEY_BASE} - {key} % {KEY_BASE}]"


# --- insights, in the documented order -------------------------------------------------

# 1. volume, against the previous period.
INSIGHT_VOLUME = """format('%s %s this %s', r.total,
                      CASE r.total WHEN 1 THEN 'entry' ELSE 'entries' END, r.word)
               || CASE
                      WHEN NOT r.prev_ok THEN format('; none the previous %s.', r.word)
                      WHEN r.total > r.prev_total THEN format(', up from %s.', r.prev_total)
                      WHEN r.total < r.prev_total THEN format(', down from %s.', r.prev_total)
                      ELSE format(', as many as the previous %s.', r.word)
                  END"""


def _change_insight(verb: str, key: str) -> str:
    return f"""CASE WHEN {key} IS NOT NULL THEN format(
                   '%s {verb} from %s to %s.', initcap({_pick(_NAME_ARRAY, key)}),
                   {_pick(_PREVIOUS_ARRAY, key)}, {_pick(_CURRENT_ARRAY, key)}) END"""


# 2. the largest rise; 3. the largest fall (keys computed in the LATERAL ``k``).
INSIGHT_RISE = _change_insight("rose", "k.rise_key")
INSIGHT_FALL = _change_insight("fell", "k.fall_key")
# 4. emotions new this period.
INSIGHT_NEW = "CASE WHEN k.new_list <> '' THEN format('New this %s: %s.', r.word, k.new_list) END"
# 5. intensity trend: a change of at least INTENSITY_TREND_THRESHOLD (:trend) is a rise
# or a fall, anything less holds steady.
INSIGHT_INTENSITY = """CASE
                   WHEN NOT r.prev_ok THEN NULL
                   WHEN r.avg_intensity - r.prev_avg >= CAST(:trend AS numeric) THEN format(
                       'Average intensity rose from %s to %s.', r.prev_avg, r.avg_intensity)
                   WHEN r.prev_avg - r.avg_intensity >= CAST(:trend AS numeric) THEN format(
                       'Average intensity fell from %s to %s.', r.prev_avg, r.avg_intensity)
                   ELSE format('Average intensity held steady around %s.', r.avg_intensity)
               END"""
# 6. streak, from 2 on; "8+" at the cap.
INSIGHT_STREAK = """CASE WHEN r.streak >= 2 THEN format('%s%s %ss in a row with entries.', r.streak,
                   CASE WHEN r.streak = CAST(:cap AS int) THEN '+' ELSE '' END, r.word) END"""

# Insights that do not apply are NULL, and removed.
INSIGHTS = (
    "array_remove(ARRAY[\n               "
    + ",\n               ".join(
        (
            INSIGHT_VOLUME,
            INSIGHT_RISE,
            INSIGHT_FALL,
            INSIGHT_NEW,
            INSIGHT_INTENSITY,
            INSIGHT_STREAK,
        )
    )
    + "\n           ], NULL)"
)

# --- the statement -----------------------------------------------------------------

_RECOMPUTE_CTES = f"""
WITH totals AS (
    SELECT en.user_id,
           date_trunc(:kind, en.created_at AT TIME ZONE 'UTC')::date AS period_start,
           count(*) AS total, round(avg(en.intensity), 2) AS avg_intensity,
           {EMOTION_COUNTS}
    FROM emotion_entries en
    WHERE en.user_id = ANY(CAST(:user_ids AS uuid[]))
      AND en.created_at >= CAST(:lookback_day AS date)::timestamp AT TIME ZONE 'UTC'
      AND en.created_at < CAST(:to_day AS date)::timestamp AT TIME ZONE 'UTC'
    GROUP BY 1, 2
),
seq AS (
    SELECT t.*, {COUNTS_JSON} AS counts, {TOP} AS top,
           {PREVIOUS_PERIOD_OK} AS prev_ok,
           lag(t.total) OVER w AS prev_total,
           lag(t.avg_intensity) OVER w AS prev_avg,
           {each("lag(t.c_{e}) OVER w AS p_{e}")},
           {ISLAND} AS island
    FROM totals t
    WINDOW w AS (PARTITION BY t.user_id ORDER BY t.period_start)
),
r AS (
    SELECT s.*, CAST(:word AS text) AS word,
           {STREAK} AS streak
    FROM seq s
),
up AS (
    INSERT INTO emotion_analytics AS ea
        (user_id, period_start, period_end, emotion_counts, average_intensity,
         total_entries, most_common_emotions, insights, computed_at)
    SELECT r.user_id, r.period_start,
           (r.period_start + CAST(:step AS interval) - interval '1 day')::date,
           r.counts, r.avg_intensity, r.total, r.top,
           {INSIGHTS},
           now()
    FROM r
    -- Evaluated only for the rows written (look-back rows are history, not output).
    CROSS JOIN LATERAL (
        SELECT {RISE_KEY} AS rise_key, {FALL_KEY} AS fall_key, {NEW_LIST} AS new_list
    ) AS k
    WHERE r.period_start >= CAST(:from_day AS date)
    ON CONFLICT (user_id, period_start, period_end) DO UPDATE SET
        emotion_counts = EXCLUDED.emotion_counts,
        average_intensity = EXCLUDED.average_intensity,
        total_entries = EXCLUDED.total_entries,
        most_common_emotions = EXCLUDED.most_common_emotions,
        insights = EXCLUDED.insights,
        computed_at = EXCLUDED.computed_at
    -- A row that would not change is not rewritten: a re-run writes nothing (no new
    -- row versions, no index churn) and computed_at says when the values last changed.
    WHERE (ea.emotion_counts, ea.average_intensity, ea.total_entries,
           ea.most_common_emotions, ea.insights)
          IS DISTINCT FROM (EXCLUDED.emotion_counts, EXCLUDED.average_intensity,
                            EXCLUDED.total_entries, EXCLUDED.most_common_emotions,
                            EXCLUDED.insights)
    RETURNING user_id, period_start
)"""

RECOMPUTE_SQL = _RECOMPUTE_CTES + "\nSELECT count(*) FROM up"

# Rule "no empty rows": a period with no entries has no row. Rows in range whose period
# no longer has entries are deleted in the same statement. Each existing row is checked
# by one probe of the covering (user_id, created_at) index: linear whatever the planner
# believes. (An anti-join against the CTE of computed periods was planned as a nested
# loop over that CTE when the statistics still showed the table empty, e.g. right after
# a first run: 4 x slower.)
# The existing rows are found user by user (a LATERAL kept apart by OFFSET 0: one range
# scan of the (user_id, period_start, period_end) index per user), then deleted by id.
# With ``user_id = ANY(batch)`` as a plain condition, a table never analyzed (a fresh
# one, or autovacuum off) made 500 users look like the whole table, and the planner
# read every row of the range, of all users, through the period index for each batch:
# half the time of a re-run over unchanged data.
RECOMPUTE_AND_DROP_EMPTY_SQL = (
    _RECOMPUTE_CTES
    + """,
gone AS (
    DELETE FROM emotion_analytics ea
    WHERE ea.id = ANY(ARRAY(
        SELECT x.id
        FROM unnest(CAST(:user_ids AS uuid[])) AS u(user_id)
        CROSS JOIN LATERAL (
            SELECT a.id FROM emotion_analytics a
            WHERE a.user_id = u.user_id
              AND a.period_start >= CAST(:from_day AS date)
              AND a.period_start < CAST(:to_day AS date)
              AND a.period_end = (a.period_start + CAST(:step AS interval) - interval '1 day')::date
              AND NOT EXISTS (
                  SELECT 1 FROM emotion_entries en
                  WHERE en.user_id = a.user_id
                    AND en.created_at >= a.period_start::timestamp AT TIME ZONE 'UTC'
                    AND en.created_at < (a.period_end + 1)::timestamp AT TIME ZONE 'UTC'
              )
            OFFSET 0
        ) AS x
    ))
    RETURNING 1
)
SELECT (SELECT count(*) FROM up) + 0 * (SELECT count(*) FROM gone)"""
)


def parameters(
    kind: PeriodKind, user_ids: Iterable[uuid.UUID], first_day: date, end_day: date
) -> dict[str, Any]:
    """The statement's parameters for periods of ``kind`` starting in [first_day, end_day)."""
    return {
        "kind": kind,
        "user_ids": [str(u) for u in user_ids],
        "lookback_day": shift_periods(kind, first_day, -STREAK_CAP),
        "from_day": first_day,
        "to_day": end_day,
        "step": STEP[kind],
        "word": kind,
        "cap": STREAK_CAP,
        "trend": INTENSITY_TREND_THRESHOLD,
    }
