"""The scale data set: N entries for P people in a database of its own, kept between
runs (built once, reused), generated server-side with INSERT ... SELECT generate_series.

The database is migrated to head first. For the load, the five bulk tables' indexes,
primary/unique keys and foreign keys are dropped (their definitions read from the
catalog, so whatever the migrations made is what comes back) and created again after,
then ANALYZE: building an index once is several times cheaper than maintaining it
through 10M random-UUID inserts. Nothing stays dropped: a build that fails midway
leaves no "built" mark, and the next run starts the database again.

Ids are md5 of a name and a number (uniformly random, like gen_random_uuid(), but
computable: an entry's user and its visualization's entry need no join to find).

The mix (per 100,000 entries; ``MIX``): completed 98,570, failed 1,000, pending 200,
processing 30 (20 with a live lease, 10 expired; a live lease runs 30 days, so that it
is still live in a data set kept between runs), 200 entries without a
visualization row. Entries span two years, oldest first on disk, as an append-only
table would be; so a status's rows are spread over all of them (the worst case for a
backlog: old unfinished work). Per person: 2 intake sessions (5 % open: waiting for
the person, due for a worker, failed) and 27 analytics rows (12 months, 8 weeks,
7 days).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from sqlalchemy.engine import make_url

from db import migrate

SCALE_DB = "emotionviz_scale"
BULK_TABLES = ("users", "intake_sessions", "emotion_entries", "visualizations", "emotion_analytics")
SPAN_DAYS = 730

# Out of every 100,000 entries (by entry number): [start, end) -> what the entry has.
MIX = (
    ("no_row", 0, 200),
    ("pending", 200, 400),
    ("processing_live", 400, 420),
    ("processing_expired", 420, 430),
    ("failed", 430, 1430),
    ("completed", 1430, 100_000),
)
FAILURE_REASONS = (
    "analysis: the model's answer was unusable after one repair (not valid JSON)",
    "image: blocked by the model's safety filter (IMAGE_SAFETY)",
    "gave up after 5 retries: image: the model answered 503 UNAVAILABLE",
    "the worker stopped 3 times while processing this entry",
    "image: the request timed out after 120 s",
    "analysis: 400 INVALID_ARGUMENT request rejected",
)


def admin_url(base: str) -> str:
    return (
        make_url(base)
        .set(database="postgres", drivername="postgresql")
        .render_as_string(hide_password=False)
    )


def scale_url(base: str, name: str = SCALE_DB) -> str:
    return make_url(base).set(database=name).render_as_string(hide_password=False)


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@dataclass(frozen=True)
class BuildMark:
    entries: int
    people: int
    built_at: str
    seconds: float


def read_mark(url: str) -> BuildMark | None:
    """The finished build's mark (a comment on the database), None when not built."""
    name = make_url(url).database
    try:
        with psycopg.connect(_libpq(admin_url(url)), autocommit=True) as conn:
            row = conn.execute(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                (name,),
            ).fetchone()
    except psycopg.Error:
        return None
    if not row or not row[0]:
        return None
    try:
        return BuildMark(**json.loads(row[0]))
    except (ValueError, TypeError):
        return None


def _step(log: Callable[[str], None], what: str, conn: psycopg.Connection, sql: str) -> None:
    started = time.monotonic()
    conn.execute(sql.encode())  # no parameters: a literal % is a %
    log(f"  {what}: {time.monotonic() - started:.1f} s")


def build(url: str, entries: int, people: int, log: Callable[[str], None] = print) -> BuildMark:
    """Create (or recreate) the database at ``url`` with the data set. Returns its mark."""
    if entries % 100_000 and entries >= 100_000:
        raise ValueError("--entries: a multiple of 100,000 keeps the mix exact")
    name = make_url(url).database
    started = time.monotonic()
    with psycopg.connect(_libpq(admin_url(url)), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    migrate.upgrade(url)
    log(f"migrated {name} to head ({time.monotonic() - started:.1f} s)")
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute("SET max_parallel_maintenance_workers = 2")
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET TIME ZONE 'UTC'")
        saved = _drop_keys_and_indexes(conn)
        log(f"dropped {len(saved.constraints)} keys and {len(saved.indexes)} indexes for the load")
        _load(conn, entries, people, log)
        _restore(conn, saved, log)
        _step(log, "ANALYZE", conn, "ANALYZE")
        _step(log, "VACUUM (visibility map, for index-only scans)", conn, "VACUUM")
    seconds = round(time.monotonic() - started, 1)
    mark = BuildMark(entries, people, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), seconds)
    with psycopg.connect(_libpq(admin_url(url)), autocommit=True) as conn:
        comment = json.dumps(mark.__dict__).replace("'", "''")
        conn.execute(f"COMMENT ON DATABASE \"{name}\" IS '{comment}'")
    return mark


@dataclass
class _Saved:
    constraints: list[tuple[str, str, str, str]]  # (table, name, type, definition)
    indexes: list[tuple[str, str]]  # (name, definition)


def _drop_keys_and_indexes(conn: psycopg.Connection) -> _Saved:
    tables = list(BULK_TABLES)
    constraints = conn.execute(
        "SELECT conrelid::regclass::text, conname, contype::text, pg_get_constraintdef(oid) "
        "FROM pg_constraint WHERE contype IN ('p', 'u', 'f') AND "
        "(conrelid::regclass::text = ANY(%s) OR "
        "(contype = 'f' AND confrelid::regclass::text = ANY(%s)))",
        (tables, tables),
    ).fetchall()
    indexes = conn.execute(
        "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "WHERE i.indrelid::regclass::text = ANY(%s) AND NOT EXISTS "
        "(SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)",
        (tables,),
    ).fetchall()
    for table, cname, _kind, _ in sorted(constraints, key=lambda c: c[2] != "f"):
        conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{cname}"')
    for iname, _ in indexes:
        conn.execute(f"DROP INDEX {iname}")
    return _Saved([tuple(c) for c in constraints], [tuple(i) for i in indexes])  # type: ignore[misc]


def _restore(conn: psycopg.Connection, saved: _Saved, log: Callable[[str], None]) -> None:
    keys = [c for c in saved.constraints if c[2] != "f"]
    foreign = [c for c in saved.constraints if c[2] == "f"]
    for table, cname, _, definition in keys:
        _step(
            log, f"key {cname}", conn, f'ALTER TABLE {table} ADD CONSTRAINT "{cname}" {definition}'
        )
    for iname, definition in saved.indexes:
        _step(log, f"index {iname}", conn, definition)
    for table, cname, _, definition in foreign:
        _step(
            log,
            f"foreign key {cname} (validated)",
            conn,
            f'ALTER TABLE {table} ADD CONSTRAINT "{cname}" {definition}',
        )


def _user(expr: str) -> str:
    return f"md5('u' || {expr})::uuid"


def _bucket_case() -> str:
    arms = " ".join(f"WHEN g % 100000 < {end} THEN '{name}'" for name, _, end in MIX)
    return f"CASE {arms} END"


def _load(conn: psycopg.Connection, entries: int, people: int, log: Callable[[str], None]) -> None:
    # Triggers (updated_at on UPDATE, media garbage on DELETE) do not fire on INSERT;
    # replica mode also skips the foreign-key triggers (the keys are dropped anyway).
    conn.execute("SET session_replication_role = replica")
    _step(
        log,
        f"users ({people:,})",
        conn,
        f"""
        INSERT INTO users (id, email, hashed_password, name, is_verified, created_at, updated_at)
        SELECT {_user("n")}, 'person' || n || '@scale.example.com', 'x', 'Person ' || n, true,
               now() - interval '{SPAN_DAYS + 30} days' + n * interval '1 second',
               now() - interval '{SPAN_DAYS + 30} days' + n * interval '1 second'
        FROM generate_series(0, {people} - 1) n""",
    )
    # Two sessions per person; 5 % open: 2 % waiting for the person, 2 % due for a
    # worker (answered, untouched for an hour), 1 % failed at their next step.
    _step(
        log,
        f"intake sessions ({2 * people:,})",
        conn,
        f"""
        INSERT INTO intake_sessions (id, user_id, initial_situation, conversation_history,
            current_step, is_complete, ai_context, final_summary, completed_at, created_at,
            updated_at)
        SELECT md5('s' || n)::uuid, {_user(f"n % {people}")},
               'Intake situation ' || n || ': a long week at work and little sleep',
               jsonb_build_array(
                 jsonb_build_object('step', 1, 'question', 'What happened first?',
                   'asked_at', t, 'answer', 'It started on Monday', 'answered_at', t),
                 jsonb_build_object('step', 2, 'question', 'How did your body feel?',
                   'asked_at', t, 'answer',
                   CASE WHEN n % 100 IN (1, 2) THEN NULL ELSE 'Tense, tired' END,
                   'answered_at', CASE WHEN n % 100 IN (1, 2) THEN NULL ELSE t END)),
               2, n % 100 >= 5,
               CASE WHEN n % 100 = 0 THEN jsonb_build_object('failed_step', 3,
                 'last_error', 'analysis: 400 INVALID_ARGUMENT request rejected')
                 ELSE jsonb_build_object('model', 'local') END,
               CASE WHEN n % 100 >= 5 THEN 'A week that asked too much' END,
               CASE WHEN n % 100 >= 5 THEN t END, t, t
        FROM (SELECT n, now() - interval '1 hour'
                     - (n % 1000) * interval '{SPAN_DAYS // 1000 or 1} days' AS t
              FROM generate_series(0, {2 * people} - 1) n) s""",
    )
    step = f"interval '{SPAN_DAYS} days' / {entries}"
    _step(
        log,
        f"emotion entries ({entries:,})",
        conn,
        f"""
        INSERT INTO emotion_entries (id, user_id, situation, emotions, intensity, notes, source,
            created_at, updated_at)
        SELECT md5('e' || g)::uuid, {_user(f"g % {people}")},
               'Scale situation ' || g || ': the meeting ran late and the train was cancelled',
               CASE WHEN g % 3 = 0
                    THEN ARRAY[e[1 + g % 10], e[1 + (g / 10) % 10]]
                    ELSE ARRAY[e[1 + g % 10]] END,
               ((g * 37) % 101) / 100.0,
               CASE WHEN g % 4 = 0 THEN 'a note' END,
               (ARRAY['manual', 'manual', 'manual', 'intake_flow', 'import'])[1 + g % 5],
               c, c
        FROM (SELECT g, now() - ({step}) * ({entries} - g) AS c,
                     ARRAY['joy','sadness','anger','fear','disgust','surprise','anxiety',
                           'contentment','frustration','excitement'] AS e
              FROM generate_series(0, {entries} - 1) g) s""",
    )
    # Columns later revisions added, filled as the product fills them: a pending
    # row's last message left when it last changed (0003's reconcile dispatch).
    extra_columns, extra_values = "", ""
    if _has_column(conn, "visualizations", "dispatched_at"):
        extra_columns, extra_values = ", dispatched_at", ", c + interval '1 second'"
    _step(
        log,
        "visualizations (every entry but the no-row share)",
        conn,
        f"""
        INSERT INTO visualizations (id, entry_id, user_id, status, style, image_url,
            thumbnail_url, summary, insights, visual_elements, error_message, gemini_analysis,
            processing_started_at, processing_completed_at, lease_expires_at, claim_count,
            created_at, updated_at{extra_columns})
        SELECT md5('v' || g)::uuid, md5('e' || g)::uuid, {_user(f"g % {people}")},
               CASE WHEN b LIKE 'processing%' THEN 'processing' ELSE b END,
               (ARRAY['abstract', 'diagram', 'metaphor'])[1 + g % 3],
               CASE WHEN b = 'completed' THEN '/media/images/' || md5('v' || g) || '.png' END,
               CASE WHEN b = 'completed' THEN '/media/thumbs/' || md5('v' || g) || '.webp' END,
               CASE WHEN b = 'completed' THEN 'A cancelled train after a long meeting: '
                    'tiredness turning into frustration, with relief at home' END,
               CASE WHEN b = 'completed' THEN ARRAY['Evenings carry the day''s weight',
                    'Rest helps'] END,
               CASE WHEN b = 'completed' THEN '{{"palette": ["#334", "#a52"], "shape": "spiral"}}'::jsonb END,
               CASE WHEN b = 'failed' THEN (ARRAY[{", ".join(_quote(r) for r in FAILURE_REASONS)}])[1 + g % {len(FAILURE_REASONS)}]
                    WHEN b = 'pending' AND g % 2 = 0 THEN 'will retry: image: 503 UNAVAILABLE' END,
               CASE WHEN b IN ('completed', 'failed') OR b LIKE 'processing%'
                    THEN '{{"emotions": ["frustration"], "intensity": 0.6, "themes": ["work", "travel"]}}'::jsonb END,
               CASE WHEN b = 'processing_live' THEN now() - interval '20 seconds'
                    WHEN b = 'processing_expired' THEN now() - interval '20 minutes'
                    WHEN b IN ('completed', 'failed') THEN c + interval '2 seconds' END,
               CASE WHEN b IN ('completed', 'failed') THEN c + interval '9 seconds' END,
               CASE WHEN b = 'processing_live' THEN now() + interval '30 days'
                    WHEN b = 'processing_expired' THEN now() - interval '19 minutes' END,
               CASE WHEN b LIKE 'processing%' THEN 1 ELSE 0 END,
               c + interval '1 second',
               CASE WHEN b IN ('completed', 'failed') THEN c + interval '9 seconds'
                    WHEN b LIKE 'processing%' THEN now() - interval '20 seconds'
                    ELSE c + interval '1 second' END{extra_values}
        FROM (SELECT g, {_bucket_case()} AS b, now() - ({step}) * ({entries} - g) AS c
              FROM generate_series(0, {entries} - 1) g) s
        WHERE b <> 'no_row'""",
    )
    if _has_table(conn, "entry_arrivals"):
        # What 0003's insert trigger (skipped in replica mode) records: entries not yet
        # seen with a row.
        _step(
            log,
            "entry arrivals (the no-row share)",
            conn,
            f"""
            INSERT INTO entry_arrivals (entry_id, user_id, arrived_at)
            SELECT md5('e' || g)::uuid, {_user(f"g % {people}")},
                   now() - (interval '{SPAN_DAYS} days' / {entries}) * ({entries} - g)
            FROM generate_series(0, {entries} - 1) g
            WHERE {_bucket_case()} = 'no_row'""",
        )
    # Per person: the last 12 months, 8 weeks and 7 days, as the scheduled recompute
    # and the entries' refreshes leave them.
    _step(
        log,
        f"emotion analytics ({27 * people:,})",
        conn,
        f"""
        INSERT INTO emotion_analytics (user_id, period_start, period_end, emotion_counts,
            average_intensity, total_entries, most_common_emotions, insights, computed_at)
        SELECT {_user("n")}, p.s, p.e, '{{"joy": 3, "frustration": 2, "anxiety": 1}}'::jsonb,
               0.55, 6, ARRAY['joy', 'frustration'], ARRAY['More joy than last period'],
               now() - interval '3 hours' - p.k * interval '1 day'
        FROM generate_series(0, {people} - 1) n
        CROSS JOIN LATERAL (
            SELECT (date_trunc('month', now()) - m * interval '1 month')::date AS s,
                   (date_trunc('month', now()) - (m - 1) * interval '1 month' - interval '1 day')::date AS e,
                   m * 30 AS k FROM generate_series(0, 11) m
            UNION ALL
            SELECT (date_trunc('week', now()) - w * interval '1 week')::date,
                   (date_trunc('week', now()) - w * interval '1 week' + interval '6 days')::date,
                   w * 7 FROM generate_series(0, 7) w
            UNION ALL
            SELECT (current_date - d), (current_date - d), d FROM generate_series(0, 6) d
        ) p""",
    )
    conn.execute("SET session_replication_role = DEFAULT")


def _has_column(conn: psycopg.Connection, table: str, column: str) -> bool:
    return bool(
        conn.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_name = %s AND column_name = %s",
            (table, column),
        ).fetchone()
    )


def _has_table(conn: psycopg.Connection, table: str) -> bool:
    return bool(conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0])  # type: ignore[index]


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def database_size(url: str) -> int:
    with psycopg.connect(_libpq(url)) as conn:
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    return int(row[0]) if row else 0
