"""The registry of periodic statements (what runs on a timer or on an operator's
refresh) and the harness that times them and reads their plans.

Each entry is a function of a unit of work that calls the product's own code (a
repository method, or the shared status snapshot), exactly as the timer or the page
does; or a plain (sql, params). The harness times whole calls (median of ``runs`` on a
warm cache, after one untimed run), captures every SQL statement a call sent (a
SQLAlchemy cursor hook), and runs each once more under EXPLAIN (ANALYZE, BUFFERS,
FORMAT JSON) to report its node types and any sequential scan of a table over
``BIG_TABLE_ROWS`` rows. Every call runs in a unit of work that is rolled back, so
statements that write (the reconciler's) leave the data set as it was; they run after
the reads (their dead tuples would slow the reads' index scans), and the tables they
wrote are vacuumed at the end.

To add a statement: a function decorated with ``@periodic(name, when)``, taking the
unit of work and the ``Context`` (sample ids, the database's clock).
"""

from __future__ import annotations

import importlib
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Engine, event, text

from db.engine import make_engine, make_session_factory
from db.uow import UnitOfWork

BIG_TABLE_ROWS = 10_000
GRACE_S = 300  # RECONCILE_GRACE_S's default
LIMIT = 5000  # the reconciler's batch


@dataclass
class Context:
    uow_factory: Callable[[], UnitOfWork]
    dead_letter_entry_ids: list[uuid.UUID] = field(default_factory=list)
    middle_user_id: uuid.UUID | None = None  # a page from the middle of the users


@dataclass(frozen=True)
class Periodic:
    name: str
    when: str  # who runs it, how often
    run: Callable[[UnitOfWork, Context], Any]
    # Writes rows (rolled back): run after the reads, whose indexes its dead tuples
    # would otherwise burden, and the tables vacuumed afterwards.
    writes: tuple[str, ...] = ()


REGISTRY: list[Periodic] = []


def periodic(
    name: str, when: str, *, writes: tuple[str, ...] = ()
) -> Callable[[Callable[[UnitOfWork, Context], Any]], Any]:
    def register(fn: Callable[[UnitOfWork, Context], Any]) -> Any:
        REGISTRY.append(Periodic(name, when, fn, writes))
        return fn

    return register


def statement(name: str, when: str, sql: str, params: dict[str, Any] | None = None) -> None:
    """A plain statement (for one not behind a repository method yet)."""
    REGISTRY.append(
        Periodic(name, when, lambda uow, _ctx: uow.session.execute(text(sql), params or {}).all())
    )


# --- the statements ---------------------------------------------------------------------

RECONCILE = "scheduler -> maintenance, every RECONCILE_EVERY_S (15 s)"
STATUS = "status / status --watch (2 s) / console overview (2 s)"
METRICS = "metrics scrape, every 15 s per process"
SNAPSHOT = "status, --watch, console overview, metrics: once per process per 2 s"


@periodic("reconcile: entries without a finished row (old)", RECONCILE)
def _unfinished(uow: UnitOfWork, _ctx: Context) -> Any:
    old = getattr(uow.entries, "ids_without_finished_visualization", None)
    if old is None:
        raise _AbsentError("replaced by the reconcile repository")
    return old(LIMIT, older_than_s=GRACE_S)


@periodic("reconcile: stuck leases", RECONCILE)
def _stuck(uow: UnitOfWork, _ctx: Context) -> Any:
    return uow.visualizations.stuck(LIMIT)


@periodic("reconcile: due intake turns", RECONCILE)
def _due_turns(uow: UnitOfWork, _ctx: Context) -> Any:
    return uow.intake.due_turns(GRACE_S, LIMIT)


def _reconcile_module() -> Any:
    try:
        return importlib.import_module("db.repositories.reconcile")
    except ImportError as exc:
        raise _AbsentError("no db/repositories/reconcile.py") from exc


def _reconcile_repository(uow: UnitOfWork) -> Any:
    return _reconcile_module().ReconcileRepository(uow.session)


def _batch() -> int:
    """Rows per reconcile transaction (the service's BATCH; the whole limit before it)."""
    service = importlib.import_module("workers.services.reconcile")
    return int(getattr(service, "BATCH", LIMIT))


@periodic("reconcile: lock", RECONCILE)
def _lock(uow: UnitOfWork, _ctx: Context) -> Any:
    return _reconcile_repository(uow).try_lock()


@periodic(
    "reconcile: adopt a batch of arrivals (no row yet)",
    RECONCILE,
    writes=("visualizations", "entry_arrivals"),
)
def _adopt(uow: UnitOfWork, _ctx: Context) -> Any:
    return _reconcile_repository(uow).adopt_arrivals(GRACE_S, _batch())


@periodic("reconcile: due pending", RECONCILE)
def _due_pending(uow: UnitOfWork, _ctx: Context) -> Any:
    repo = _reconcile_repository(uow)
    return repo.due_pending(repo.database_now() - timedelta(seconds=GRACE_S), _batch())


@periodic("reconcile: due stuck", RECONCILE)
def _due_stuck(uow: UnitOfWork, _ctx: Context) -> Any:
    return _reconcile_repository(uow).due_stuck(GRACE_S, _batch())


@periodic(
    "reconcile: record a batch's dispatches (at commit)",
    RECONCILE,
    writes=("visualizations", "entry_arrivals"),
)
def _record(uow: UnitOfWork, _ctx: Context) -> Any:
    module = _reconcile_module()
    repo = module.ReconcileRepository(uow.session)
    due = repo.due_pending(repo.database_now(), _batch())  # the oldest pending rows
    params = {
        "entry_ids": [d.entry_id for d in due],
        "user_ids": [d.user_id for d in due],
        "styles": [d.style for d in due],
    }
    # The statements record_dispatches sends on the unit's driver connection, sent here
    # through the Session's connection so that the harness sees and explains them.
    conn = uow.session.connection()
    updated = conn.exec_driver_sql(module.RECORD_EXISTING, params).rowcount
    if updated < len(due):  # as record_dispatches: the rest only for rows not there
        for statement in (module.RECORD_NEW, module.DROP_ARRIVALS):
            conn.exec_driver_sql(statement, params)
    return len(due)


@periodic("maintenance: analytics refresh queue", RECONCILE)
def _refresh_queue(uow: UnitOfWork, _ctx: Context) -> Any:
    take = getattr(uow.analytics, "take_queued_refreshes", None)
    if take is None:
        raise _AbsentError("no analytics refresh queue")
    return take(500)


def _snapshot_module() -> Any:
    try:
        return importlib.import_module("workers.observability.snapshot")
    except ImportError:
        return None


def _before_snapshot(what: str) -> None:
    """Statements status and the metrics ran before they shared the snapshot."""
    if _snapshot_module() is not None:
        raise _AbsentError(f"retired: {what} reads the shared snapshot")


@periodic("status: rows by status (GROUP BY every row)", STATUS)
def _status_counts(uow: UnitOfWork, _ctx: Context) -> Any:
    _before_snapshot("status")
    return uow.visualizations.status_counts()


@periodic("status: intake sessions by state (every session)", STATUS)
def _intake_states(uow: UnitOfWork, _ctx: Context) -> Any:
    _before_snapshot("status")
    return uow.intake.state_counts()


@periodic("metrics: rows by status (completed estimated)", METRICS)
def _estimated(uow: UnitOfWork, _ctx: Context) -> Any:
    _before_snapshot("the metrics")
    return uow.visualizations.status_counts_estimated()


@periodic("status, metrics: stuck count", STATUS + "; " + METRICS)
def _stuck_count(uow: UnitOfWork, _ctx: Context) -> Any:
    return uow.visualizations.stuck_count()


@periodic("status: failures, last hour", STATUS)
def _recent_failures(uow: UnitOfWork, _ctx: Context) -> Any:
    return uow.visualizations.recent_failure_reasons(3600)


@periodic("metrics, status: open intake sessions", METRICS)
def _open_intake(uow: UnitOfWork, _ctx: Context) -> Any:
    return uow.intake.open_state_counts()


@periodic("snapshot: open rows by status (exact)", SNAPSHOT)
def _open_rows(uow: UnitOfWork, _ctx: Context) -> Any:
    return uow.visualizations.open_status_counts()


@periodic("snapshot: completed and failed, last hour (exact)", SNAPSHOT)
def _finished(uow: UnitOfWork, _ctx: Context) -> Any:
    return uow.visualizations.finished_since(3600)


@periodic("snapshot: all of it (status, console, metrics)", SNAPSHOT)
def _snapshot(uow: UnitOfWork, _ctx: Context) -> Any:
    module = _snapshot_module()
    if module is None:
        raise _AbsentError("no shared snapshot yet")
    return module.read_rows(uow)


@periodic("console overview: outcomes per minute", "console overview (2 s, every open tab)")
def _per_minute(uow: UnitOfWork, _ctx: Context) -> Any:
    return uow.console.outcomes_per_minute(60)


@periodic("console failures: reasons", "console failures page (on refresh)")
def _failure_reasons(uow: UnitOfWork, _ctx: Context) -> Any:
    return uow.console.failure_reasons()


@periodic("console failures: first page", "console failures page (on refresh)")
def _failed_rows(uow: UnitOfWork, _ctx: Context) -> Any:
    return uow.console.failed_rows(None, limit=50)


@periodic("console analytics: freshness", "console analytics page (on refresh)")
def _freshness(uow: UnitOfWork, _ctx: Context) -> Any:
    return uow.console.analytics_freshness()


@periodic("dead letters: their rows (200)", "console / dlq list (on refresh)")
def _row_states(uow: UnitOfWork, ctx: Context) -> Any:
    return uow.console.row_states(ctx.dead_letter_entry_ids)


@periodic("recompute planning: one page of people", "scheduler, nightly per period kind")
def _plan_page(uow: UnitOfWork, ctx: Context) -> Any:
    page = getattr(uow.analytics, "user_ids_after", None)
    if page is None:  # before the batched fan-out: every id at once
        return uow.users.list_ids()
    module = importlib.import_module("workers.services.analytics")
    return page(ctx.middle_user_id, module.PLAN_PAGE)


@periodic("recompute planning: every page, batched", "scheduler, nightly per period kind")
def _plan_all(_uow: UnitOfWork, ctx: Context) -> Any:
    from domain.messages import AnalyticsRecompute

    module = importlib.import_module("workers.services.analytics")
    plan = getattr(module, "plan_recompute", None)
    if plan is None:
        raise _AbsentError("no plan_recompute (one serial message)")
    message = AnalyticsRecompute(period="day", period_start=date.today())
    return sum(len(page) for page in plan(ctx.uow_factory, message))


# --- the harness ------------------------------------------------------------------------


class _AbsentError(Exception):
    """This statement does not exist in this version of the code."""


@dataclass
class Plan:
    sql: str
    node_types: list[str]
    big_seq_scans: list[str]  # "table (rows)"
    execution_ms: float


@dataclass
class Result:
    name: str
    when: str
    median_ms: float | None = None
    max_ms: float | None = None
    plans: list[Plan] = field(default_factory=list)
    absent: str | None = None

    @property
    def seq_scans(self) -> list[str]:
        return [s for p in self.plans for s in p.big_seq_scans]

    @property
    def slowest_statement_ms(self) -> float:
        return max((p.execution_ms for p in self.plans), default=0.0)

    def meets(self, target_ms: float) -> bool:
        """No sequential scan of a big table, and each statement within the target: the
        whole call's median for one statement; for a call of several (the snapshot, the
        planning's pages), the slowest one's execution time (EXPLAIN ANALYZE)."""
        if self.absent is not None or self.median_ms is None:
            return True
        each = self.median_ms if len(self.plans) <= 1 else self.slowest_statement_ms
        return each <= target_ms and not self.seq_scans

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "when": self.when,
            "median_ms": self.median_ms,
            "max_ms": self.max_ms,
            "absent": self.absent,
            "plans": [p.__dict__ for p in self.plans],
        }


@contextmanager
def _captured(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    seen: list[tuple[str, Any]] = []

    def hook(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", hook)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", hook)


def _walk(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _walk(child)


def explain(engine: Engine, sql: str, parameters: Any, sizes: dict[str, int]) -> Plan:
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, parameters)
            document = cursor.fetchone()[0]
    finally:
        raw.rollback()
        raw.close()
    top = document[0]
    nodes = list(_walk(top["Plan"]))
    types: list[str] = []
    for node in nodes:
        label = node["Node Type"]
        if "Relation Name" in node:
            label += f" {node['Relation Name']}"
        if "Index Name" in node:
            label += f" ({node['Index Name']})"
        if label not in types:
            types.append(label)
    big = [
        f"{n['Relation Name']} ({sizes.get(n['Relation Name'], 0):,} rows)"
        for n in nodes
        if n["Node Type"] == "Seq Scan"
        and sizes.get(n.get("Relation Name", ""), 0) > BIG_TABLE_ROWS
    ]
    return Plan(" ".join(sql.split())[:300], types, big, round(top["Execution Time"], 2))


def _sizes(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT relname, reltuples::bigint FROM pg_class "
                "WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace"
            )
        )
        return {name: int(n) for name, n in rows}


def _context(engine: Engine) -> Context:
    factory = make_session_factory(engine)
    with engine.connect() as conn:
        ids = conn.execute(
            text("SELECT entry_id FROM visualizations TABLESAMPLE SYSTEM (0.1) LIMIT 200")
        ).scalars()
        middle = conn.execute(
            text("SELECT id FROM users ORDER BY id OFFSET (SELECT count(*) / 2 FROM users) LIMIT 1")
        ).scalar()
        return Context(lambda: UnitOfWork(factory), list(ids), middle)


def _time_one(engine: Engine, item: Periodic, ctx: Context, runs: int) -> Result:
    factory = make_session_factory(engine)
    result = Result(item.name, item.when)
    try:
        with _captured(engine) as seen, UnitOfWork(factory) as uow:
            item.run(uow, ctx)  # warm-up, and the statements it sends
    except _AbsentError as absent:
        result.absent = str(absent)
        return result
    except AttributeError as gone:  # a repository method this version no longer has
        result.absent = str(gone)
        return result
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        with UnitOfWork(factory) as uow:
            item.run(uow, ctx)
        times.append((time.perf_counter() - started) * 1000)
    result.median_ms = round(statistics.median(times), 2)
    result.max_ms = round(max(times), 2)
    sizes = _sizes(engine)
    for sql, parameters in seen:
        if sql.lstrip().upper().startswith(("SELECT", "WITH", "UPDATE", "INSERT", "DELETE")):
            result.plans.append(explain(engine, sql, parameters, sizes))
    return result


def run_all(url: str, *, runs: int = 5, only: list[str] | None = None) -> list[Result]:
    engine = make_engine(url, pool_size=2)
    try:
        ctx = _context(engine)
        chosen = [p for p in REGISTRY if not only or any(o in p.name for o in only)]
        ordered = [p for p in chosen if not p.writes] + [p for p in chosen if p.writes]
        results = {item.name: _time_one(engine, item, ctx, runs) for item in ordered}
        written = sorted({table for item in chosen for table in item.writes})
        if written:  # the rolled-back rows' dead tuples: gone before the next run
            with engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").execute(
                    text(f"VACUUM {', '.join(written)}")
                )
        return [results[item.name] for item in chosen]
    finally:
        engine.dispose()


def table(results: list[Result], *, target_ms: float) -> str:
    lines = [
        f"| statement | runs when | median ms | max ms | SQL statements, slowest ms | plan | "
        f"seq scan of a big table | each <= {target_ms:g} ms, no seq scan |",
        "|---|---|---:|---:|---:|---|---|---|",
    ]
    for r in results:
        if r.absent is not None:
            lines.append(f"| {r.name} | {r.when} | - | - | - | absent: {r.absent} | - | - |")
            continue
        distinct = list(dict.fromkeys(", ".join(p.node_types) for p in r.plans))
        plan = "; ".join(distinct) or "(no SQL)"
        seq = ", ".join(r.seq_scans) or "none"
        verdict = "yes" if r.meets(target_ms) else "**NO**"
        lines.append(
            f"| {r.name} | {r.when} | {r.median_ms:.2f} | {r.max_ms:.2f} | "
            f"{len(r.plans)}, {r.slowest_statement_ms:.2f} | {plan} | {seq} | {verdict} |"
        )
    return "\n".join(lines)
