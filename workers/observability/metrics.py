"""Our Prometheus metrics (names start ``emotionviz_``), recorded in worker processes.

Under ``emotionviz worker`` every process shares one multiprocess directory
(``PROMETHEUS_MULTIPROC_DIR``, set before the processes start), and the exposition
server (workers/observability/exposition.py) adds them up; anywhere else (a CLI
command, a test) they are ordinary in-process metrics. So recording is always safe and
never fails a job.

The gauges read from Redis and PostgreSQL at scrape time (queue depths, rows by
status) are not here: workers/observability/collector.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

# Request latencies: the analysis model answers in about a second, the image model in
# 5 to 20 s; a call past the timeout (120 s) is an error anyway.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 15, 30, 60, 120)


@lru_cache(maxsize=1)
def _metrics() -> dict[str, Any]:
    # Imported here, not at module import: prometheus_client chooses multiprocess mode
    # from the environment at import, which the worker sets up before it boots.
    from prometheus_client import Counter, Gauge, Histogram

    return {
        "request": Histogram(
            "emotionviz_provider_request_seconds",
            "Model API request duration (not counting our rate limiter's wait)",
            ["model", "outcome"],
            buckets=LATENCY_BUCKETS,
        ),
        "errors": Counter(
            "emotionviz_provider_errors_total",
            "Model API errors by class: rate_limited (429), server_error (5xx), timeout, "
            "safety, invalid_output, configuration, other",
            ["model", "error_class"],
        ),
        "wait": Histogram(
            "emotionviz_rate_limit_wait_seconds",
            "Time a call waited for our shared rate limiter before it was sent",
            ["gate"],
            buckets=WAIT_BUCKETS,
        ),
        "retries": Counter(
            "emotionviz_message_retries_total",
            "Messages scheduled for another attempt",
            ["queue", "actor"],
        ),
        "dead": Counter(
            "emotionviz_messages_dead_lettered_total",
            "Messages moved to the dead-letter queue (rejected, failed or given up)",
            ["queue", "actor"],
        ),
        "processed": Counter(
            "emotionviz_messages_processed_total",
            "Messages whose processing ended, by result (ok, retry, failed)",
            ["queue", "actor", "result"],
        ),
        "unpublished": Counter(
            "emotionviz_publish_failures_total",
            "Publishes the broker still refused after the producer's retries (the work "
            "stays in the database; the reconciler publishes it again)",
        ),
        "scheduler_fires": Counter(
            "emotionviz_scheduler_fires_total",
            "Scheduler attempts at a scheduled fire, by outcome: published, failed (the "
            "publish or Redis failed; retried within the fire's grace), skipped (served "
            "already, by another scheduler), missed (APScheduler ran it too late)",
            ["job", "outcome"],
        ),
        "scheduler_last_success": Gauge(
            "emotionviz_scheduler_last_success_timestamp_seconds",
            "When this scheduler last published a scheduled fire of the job (Unix time)",
            ["job"],
            multiprocess_mode="max",
        ),
        "scheduler_next_due": Gauge(
            "emotionviz_scheduler_next_fire_due_timestamp_seconds",
            "When the job's next fire must have been served (its time plus the misfire "
            "grace and a margin), set when a fire is served and at start (Unix time)",
            ["job"],
            multiprocess_mode="max",
        ),
        "finished": Counter(
            "emotionviz_visualizations_finished_total",
            "Visualizations this process brought to an end state (completed or failed), "
            "each counted once: the transition, not a duplicate message",
            ["status"],
        ),
        "reconciled": Counter(
            "emotionviz_reconciler_republished_total",
            "Messages the reconciler published again, by kind of lost work",
            ["kind"],
        ),
        # Paid-call ledger (issue 23.3): what the model_calls rows record, as counters.
        "model_cost": Counter(
            "emotionviz_model_cost_usd_total",
            "Estimated cost of the model API attempts (USD, from the price table)",
            ["model"],
        ),
        # The analytics refresher (workers/entrypoints/analytics_refresh.py).
        "analytics_refreshed": Counter(
            "emotionviz_analytics_refreshed_total",
            "Queued analytics refreshes (a person's entry completed, edited or deleted) "
            "this process's refresher did",
        ),
        "analytics_refresh_failures": Counter(
            "emotionviz_analytics_refresh_failures_total",
            "Refresher passes that failed (the queue keeps its rows; the next pass retries them)",
        ),
        "model_calls": Counter(
            "emotionviz_model_calls_total",
            "Attempts the model API received (the ledger's rows), by kind and outcome "
            "(ok or a failure class)",
            ["model", "kind", "outcome"],
        ),
    }


def warm_up() -> None:
    """Create the metrics now (a worker at boot): creating them imports
    prometheus_client, ~30 ms the first job would otherwise pay."""
    _safely(_metrics)


def _safely(record: Any) -> None:
    with contextlib.suppress(Exception):  # a metric must never fail a job
        record()


def observe_request(model: str, seconds: float, outcome: str) -> None:
    _safely(lambda: _metrics()["request"].labels(model, outcome).observe(seconds))


def count_provider_error(model: str, error_class: str) -> None:
    _safely(lambda: _metrics()["errors"].labels(model, error_class).inc())


def observe_rate_limit_wait(gate: str, seconds: float) -> None:
    _safely(lambda: _metrics()["wait"].labels(gate).observe(seconds))


def count_retry(queue: str, actor: str) -> None:
    _safely(lambda: _metrics()["retries"].labels(queue, actor).inc())


def count_dead_letter(queue: str, actor: str) -> None:
    _safely(lambda: _metrics()["dead"].labels(queue, actor).inc())


def count_processed(queue: str, actor: str, result: str) -> None:
    _safely(lambda: _metrics()["processed"].labels(queue, actor, result).inc())


def count_publish_failure() -> None:
    _safely(lambda: _metrics()["unpublished"].inc())


def count_visualization_finished(status: str) -> None:
    _safely(lambda: _metrics()["finished"].labels(status).inc())


def count_model_call(model: str, kind: str, outcome: str, cost_usd: float) -> None:
    """One attempt the ledger recorded (workers/services/ledger.py)."""

    def record() -> None:
        found = _metrics()
        found["model_calls"].labels(model, kind, outcome).inc()
        found["model_cost"].labels(model).inc(cost_usd)

    _safely(record)


def count_analytics_refreshed(number: int) -> None:
    if number:
        _safely(lambda: _metrics()["analytics_refreshed"].inc(number))


def count_analytics_refresh_failure() -> None:
    _safely(lambda: _metrics()["analytics_refresh_failures"].inc())


def count_reconciled(kind: str, number: int) -> None:
    if number:
        _safely(lambda: _metrics()["reconciled"].labels(kind).inc(number))


@lru_cache(maxsize=1)
def _provider_info() -> Any:
    from prometheus_client import Gauge

    return Gauge(
        "emotionviz_provider_info",
        "1 for the providers this worker runs: analysis and image are gemini or local; "
        "resolved_from is setting (PROVIDER named them) or auto (PROVIDER=auto decided "
        "by GEMINI_API_KEY; local this way means placeholder pictures)",
        ["analysis", "image", "resolved_from"],
        multiprocess_mode="max",
    )


def set_provider_info(analysis: str, image: str, resolved_from: str) -> None:
    _safely(lambda: _provider_info().labels(analysis, image, resolved_from).set(1))


SCHEDULER_OUTCOMES = ("published", "failed", "skipped", "missed")


def init_scheduler_job(job: str) -> None:
    """Every outcome's series at 0 from the start: ``increase()`` in an alert misses the
    first count of a series that appears with it."""
    _safely(lambda: [_metrics()["scheduler_fires"].labels(job, o) for o in SCHEDULER_OUTCOMES])


def count_scheduler_fire(job: str, outcome: str) -> None:
    _safely(lambda: _metrics()["scheduler_fires"].labels(job, outcome).inc())


def scheduler_published(job: str, unix_time: float) -> None:
    _safely(lambda: _metrics()["scheduler_last_success"].labels(job).set(unix_time))


def scheduler_next_due(job: str, unix_time: float) -> None:
    _safely(lambda: _metrics()["scheduler_next_due"].labels(job).set(unix_time))


@contextlib.contextmanager
def timed_request(model: str) -> Iterator[None]:
    """Observe one API request's duration with its outcome (ok, or the error's type)."""
    import time

    started = time.monotonic()
    outcome = "ok"
    try:
        yield
    except BaseException as exc:
        outcome = type(exc).__name__
        raise
    finally:
        observe_request(model, time.monotonic() - started, outcome)


# --- Redis Sentinel (issue 22.1) -----------------------------------------------------


@lru_cache(maxsize=1)
def _redis_failovers() -> Any:
    from prometheus_client import Counter

    return Counter(
        "emotionviz_redis_failovers_total",
        "Redis primaries replaced (Sentinel failovers) this process saw; each is followed "
        "by one failover reconcile across the deployment (docs/reliability.md)",
    )


def count_redis_failover() -> None:
    _safely(lambda: _redis_failovers().inc())


# --- Paid-call ledger: attempts not recorded (issue 23.3 review) --------------------


@lru_cache(maxsize=1)
def _paid_calls_unrecorded() -> Any:
    from prometheus_client import Counter

    return Counter(
        "emotionviz_paid_calls_unrecorded_total",
        "Model API attempts whose ledger row could not be written (the database was "
        "unavailable or refused it): spent, but missing from model_calls and the budgets",
        ["model"],
    )


def count_paid_call_unrecorded(model: str) -> None:
    _safely(lambda: _paid_calls_unrecorded().labels(model).inc())
