"""All configuration, from the environment (and an optional .env file), in one class.

No other module reads os.environ. An invalid value stops start-up with one line that
names the setting (see ``load_settings``).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain.errors import ConfigurationError
from domain.ledger import PriceTable, price_table_from_json

ProviderChoice = Literal["auto", "local", "gemini"]
# WORKER_CPU_AFFINITY (workers/entrypoints/cpu_affinity.py).
CpuAffinity = Literal["none", "spread"]
_URL_SCHEMES = {
    "database_url": ("postgres", "postgresql", "postgresql+psycopg"),
    "database_direct_url": ("postgres", "postgresql", "postgresql+psycopg"),
    "redis_url": ("redis", "rediss", "unix", "redis+sentinel"),
    "broker_url": ("redis", "rediss", "unix", "redis+sentinel", "amqp", "amqps"),
}


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX = re.compile(r"^[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*$")


@dataclass(frozen=True)
class MediaLocation:
    """MEDIA_URL parsed: ``file`` with a folder, or ``s3`` with a bucket and a key prefix
    (no leading or trailing slash; empty for the bucket's root)."""

    kind: Literal["file", "s3"]
    path: Path = Path()
    bucket: str = ""
    prefix: str = ""


def amqp_servers(url: str) -> list[str]:
    """An amqp BROKER_URL, one URL per RabbitMQ server: several are whole URLs joined by
    ';' (pika and Dramatiq try them in order), all on one vhost. Raises ValueError
    saying what is wrong, never echoing a URL (it holds the password)."""
    servers = [part.strip() for part in url.split(";")]
    vhosts: set[str] = set()
    for server in servers:
        parts = urlsplit(server)
        if parts.scheme not in ("amqp", "amqps"):
            raise ValueError("each of several RabbitMQ URLs (separated by ';') is amqp://...")
        if "," in parts.netloc:
            raise ValueError(
                "several RabbitMQ servers are whole URLs separated by ';' "
                "(amqp://user:pass@host1:5672/vhost;amqp://user:pass@host2:5672/vhost), "
                "not host1,host2"
            )
        try:
            parts.port  # noqa: B018 - raises ValueError for a non-numeric port
        except ValueError as exc:
            raise ValueError(f"not a valid URL ({exc})") from None
        if not parts.hostname:
            raise ValueError("a RabbitMQ URL names no host")
        vhosts.add(unquote(parts.path[1:]) if len(parts.path) > 1 else "/")  # as pika reads it
    if len(vhosts) > 1:
        raise ValueError("several RabbitMQ URLs must name the same vhost (one set of queues)")
    return servers


def media_location(url: str) -> MediaLocation:
    """Parse MEDIA_URL, or raise ValueError saying what is wrong (never echoing it)."""
    parts = urlsplit(url.strip())
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ValueError("a file URL names an absolute folder: file:///path/to/media")
        return MediaLocation("file", path=Path(unquote(parts.path)))
    if parts.scheme != "s3":
        raise ValueError("the scheme must be s3 (s3://bucket/prefix) or file (file:///path)")
    if not parts.netloc:
        raise ValueError("an s3 URL names its bucket: s3://bucket/prefix")
    if not _BUCKET.match(parts.netloc) or ".." in parts.netloc:
        raise ValueError("the bucket name must be 3-63 lowercase letters, digits, dots, hyphens")
    if parts.query or parts.fragment:
        raise ValueError("an s3 URL takes no query or fragment")
    prefix = parts.path.strip("/")
    if prefix and not _PREFIX.match(prefix):
        raise ValueError("the key prefix may hold letters, digits and !_.*'()- between slashes")
    return MediaLocation("s3", bucket=parts.netloc, prefix=prefix)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    # Services. Unset URLs mean: start the embedded PostgreSQL / Redis in data_dir.
    database_url: SecretStr | None = None
    redis_url: SecretStr | None = None
    broker_url: SecretStr | None = Field(
        default=None, description="amqp://... selects RabbitMQ; default: REDIS_URL"
    )
    # RabbitMQ only: quorum queues are replicated and survive the loss of a minority of
    # nodes; classic (the default) is what earlier versions declared. A queue's type
    # cannot change in place: docs/operations.md, "Running on RabbitMQ".
    rabbitmq_queue_type: Literal["classic", "quorum"] = "classic"
    redis_namespace: str = Field(default="emotionviz", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    data_dir: Path = Path(".data")
    # Through a pooler, DATABASE_URL reaches PgBouncer; what needs a session of its own
    # (migrations, LISTEN, backup and restore) uses DATABASE_DIRECT_URL (default: the
    # same URL). DATABASE_POOLER=pgbouncer (transaction pooling) turns prepared
    # statements off on every connection (docs/operations.md, "Behind PgBouncer").
    database_direct_url: SecretStr | None = None
    database_pooler: Literal["none", "pgbouncer"] = "none"
    # Connections each process keeps in its pool: 0 sizes it to WORKER_THREADS (a
    # quarter, at least 2; a job holds one only while it runs SQL). db/engine.py
    # pool_for_threads; `emotionviz doctor` shows what a fleet opens.
    db_pool_size: int = Field(default=0, ge=0, le=200)
    # Connections opened beyond the pool at peak and closed once returned (-1: as many
    # as the pool). 0 by default: a burst opened and closed them again and again, each
    # a new backend meeting every statement cold (docs/benchmarks.md, "The pool's
    # overflow"); a job holds a connection only while it runs SQL, so it waits briefly.
    db_max_overflow: int = Field(default=0, ge=-1, le=200)
    redis_max_connections: int = Field(default=64, ge=2, le=10_000)
    # The Redis server's maxclients, for `emotionviz doctor` where CONFIG GET is refused.
    redis_maxclients: int | None = Field(default=None, ge=1)

    # Model providers.
    provider: ProviderChoice = "auto"
    gemini_api_key: SecretStr | None = None
    gemini_base_url: str | None = None
    gemini_api_version: Literal["v1", "v1beta"] = "v1beta"
    analysis_model: str = "gemini-3.5-flash"
    image_model: str = "gemini-3.1-flash-image"
    request_timeout_s: float = Field(default=120.0, gt=0, le=600)
    image_aspect_ratio: str = "1:1"
    image_size: Literal["1K", "2K", "4K"] = "1K"
    max_image_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(default=4096 * 4096, ge=64 * 64)

    # Rate limits, enforced across all worker processes through Redis.
    analysis_rpm: int = Field(default=600, ge=1)
    image_rpm: int = Field(default=120, ge=1)
    analysis_max_concurrent: int = Field(default=64, ge=1)
    image_max_concurrent: int = Field(default=64, ge=1)
    rate_limit_wait_s: float = Field(default=120.0, gt=0)
    # The API counts a call when it arrives, a few ms after we admit it: our window is
    # held this much longer than 60 s so that jitter never makes us early (cost:
    # margin / (60 + margin) of the quota). "dramatiq" selects the previous limiter
    # (Dramatiq's, for comparison benchmarks).
    rate_limit_margin_s: float = Field(default=0.5, ge=0, le=60)
    rate_limiter: Literal["exact", "dramatiq"] = "exact"

    # Media. MEDIA_URL says where pictures live: s3://bucket/prefix (an object store,
    # every machine sees the same pictures) or file:///path (this machine's disk);
    # unset: the folder MEDIA_DIR. workers/providers/storage.py: image_store.
    media_url: str | None = None
    media_dir: Path = Path(".data/media")
    # The public URL prefix stored in image_url: a local store's always; an S3 store's
    # with MEDIA_ACCESS=public (default there: the endpoint's URL of the bucket).
    media_base_url: str = "http://localhost:8000/media"
    # How readers reach an S3 store's pictures: "presigned" (the default: a private
    # bucket; the row holds s3://bucket/key, readers get URLs valid MEDIA_PRESIGN_TTL_S)
    # or "public" (the row holds MEDIA_BASE_URL/key; the bucket or a CDN serves it).
    media_access: Literal["public", "presigned"] | None = None
    media_presign_ttl_s: int = Field(default=3600, ge=1, le=7 * 24 * 3600)
    # One store request (with the client's own retries) gives up after this long.
    media_timeout_s: float = Field(default=30.0, gt=0, le=600)
    # The standard AWS variables (the object store's credentials and address). Unset
    # keys: the client's own chain (web identity, container or instance role).
    aws_access_key_id: SecretStr | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_session_token: SecretStr | None = None
    aws_region: str | None = None
    aws_endpoint_url: str | None = None
    thumbnail_px: int = Field(default=256, ge=32, le=1024)

    # Worker runtime.
    worker_processes: int = Field(default=2, ge=1, le=64)
    worker_threads: int = Field(default=32, ge=1, le=1024)
    # "spread": each worker process keeps its threads on its share of the machine's CPUs
    # (workers/entrypoints/cpu_affinity.py); only where one worker group has the machine
    # or container to itself, with WORKER_PROCESSES its processes.
    worker_cpu_affinity: CpuAffinity = "none"
    max_retries: int = Field(default=5, ge=0, le=100)
    min_backoff_ms: int = Field(default=2_000, ge=1)
    max_backoff_ms: int = Field(default=300_000, ge=1)
    # A job holds its row with a lease its worker's heartbeat renews every LEASE_S / 4;
    # a dead worker's rows can be claimed again LEASE_S after its last renewal.
    lease_s: int = Field(default=60, ge=10, le=3600)
    # How long one job may run before Dramatiq interrupts it (it is then retried).
    job_time_limit_s: int = Field(default=540, ge=10, le=86_400)
    # After this many claims of one row in a row that never finished (the worker died
    # each time), the row fails instead of crashing the next worker too.
    max_claims: int = Field(default=3, ge=1, le=100)
    message_max_age_ms: int = Field(default=7 * 24 * 3600 * 1000, ge=1000)
    # A body over this is dead-lettered unread: ours are ids, well under 1 KiB.
    max_message_bytes: int = Field(default=64 * 1024, ge=1024, le=64 * 1024 * 1024)
    # How often a worker process checks that its consumer and worker threads live.
    watchdog_interval_s: float = Field(default=5.0, gt=0, le=300)

    # Metrics and health: one HTTP server per `emotionviz worker` (/metrics, /healthz,
    # /readyz). METRICS_PORT=0 turns it off.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9191, ge=0, le=65535)
    # The work's snapshot (status, the console, the metrics) is read at most this often.
    metrics_cache_s: float = Field(default=2.0, ge=0, le=300)

    # Intake conversation (a person is waiting: short retries on their own queue).
    intake_max_steps: int = Field(default=5, ge=1, le=20)
    intake_max_retries: int = Field(default=6, ge=0, le=50)
    intake_min_backoff_ms: int = Field(default=100, ge=1)
    intake_max_backoff_ms: int = Field(default=5_000, ge=1)
    # Wake-ups (workers/messaging/wake_ups.py) make an idle consumer take an announced
    # message at once; this caps the idle poll for messages nobody announces (a
    # producer that writes the envelope without the PUBLISH). 1000: no cap.
    intake_idle_poll_ms: int = Field(default=1000, ge=1, le=1000)

    # Scheduler (cron expressions, UTC). Empty disables a job.
    schedule_analytics_day: str = "15 0 * * *"
    schedule_analytics_week: str = "30 0 * * 1"
    schedule_analytics_month: str = "45 0 1 * *"
    # Every minute: a crash or a broker flush heals within about two minutes, unattended.
    schedule_reconcile: str = "* * * * *"
    # Every this many seconds instead (0: use SCHEDULE_RECONCILE): a crash heals about
    # LEASE_S + RECONCILE_EVERY_S after it, well inside two minutes.
    reconcile_every_s: int = Field(default=15, ge=0, le=3600)
    reconcile_grace_s: int = Field(default=300, ge=0)
    analytics_parallelism: int = Field(default=2, ge=1, le=32)
    # Every worker process drains analytics_refresh_queue (completions, edits, deletes)
    # this often, so a completed entry shows in its person's analytics about this much
    # later (docs/analytics.md). 0: no refresher; the maintenance pass drains it then.
    analytics_refresh_every_s: float = Field(default=1.0, ge=0, le=300)

    # Operator console (`emotionviz console`). Every page needs CONSOLE_TOKEN; unset, the
    # console makes one per run on loopback and refuses any other address.
    console_token: SecretStr | None = None
    console_host: str = "127.0.0.1"
    console_port: int = Field(default=8088, ge=0, le=65535)
    console_secure_cookie: bool = False  # true behind HTTPS: the session cookie gets Secure

    # Logging.
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # At most 4092: a line plus Dramatiq's 4-byte pipe frame header must fit in
    # PIPE_BUF (4096) to reach the parent process in one piece (workers/log_lines.py).
    log_max_line_bytes: int = Field(default=4000, ge=512, le=4092)

    # Completion events (docs/messages.md, "Completion events"): every worker process
    # delivers the outbox the database's triggers fill to these subscribers.
    events_queue: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    events_queue_actor: str = Field(default="completion.event", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    events_webhook_url: str | None = None
    events_webhook_secret: SecretStr | None = None  # whsec_<base64>, Standard Webhooks
    events_webhook_timeout_s: float = Field(default=10.0, gt=0, le=120)
    events_max_attempts: int = Field(default=8, ge=1, le=100)
    events_min_backoff_ms: int = Field(default=1_000, ge=1)
    events_max_backoff_ms: int = Field(default=600_000, ge=1)
    events_poll_s: float = Field(default=5.0, gt=0, le=300)  # without a NOTIFY
    events_batch: int = Field(default=100, ge=1, le=10_000)
    events_retention_days: float = Field(default=7.0, gt=0)
    events_dispatch: bool = True  # false: this process delivers nothing

    # --- Redis Sentinel (issue 22.1) ---
    # REDIS_URL=redis+sentinel://...: each worker process asks the sentinels for the
    # primary this often; a new primary is a failover seen (docs/reliability.md).
    redis_sentinel_poll_s: float = Field(default=1.0, gt=0, le=60)
    # After a failover, the pending rows dispatched this long before it was seen are
    # published again (their message may have been on the old primary only).
    redis_failover_lookback_s: int = Field(default=120, ge=1, le=86_400)

    # --- Fairness (issue 23.2; docs/reliability.md) ---------------------------------
    # Jobs one person may have running at once across every worker; 0: no cap. The
    # fair claim already gives the next free thread to whoever has the fewest running
    # (docs/reliability.md, "Fairness"); the cap bounds one person's share when jobs are
    # long. Keep it at or above the workers' threads, or a person alone runs slower.
    user_max_in_flight: int = Field(default=0, ge=0, le=100_000)

    # --- Paid-call ledger and budgets (issue 23.3; docs/operations.md) --------------
    # The estimated cost of each paid attempt (USD): per model, per million input
    # tokens, per million output tokens of a text answer, per image answered, as JSON
    # ({"model": {"input_per_m": 0.3, "output_per_m": 2.5, "per_image": 0}}), merged
    # over the defaults (domain/ledger.py, DEFAULT_PRICES; empty: the defaults). A model
    # not listed is priced as "default".
    price_table: str = ""
    # A person's spend since 00:00 UTC at which their new work waits for the next UTC
    # day (unset: no budget). Each worker process reads a person's spend at most once
    # per BUDGET_CACHE_S.
    user_daily_budget_usd: Decimal | None = Field(default=None, gt=0)
    budget_cache_s: float = Field(default=1.0, ge=0, le=60)

    @field_validator("user_daily_budget_usd", mode="before")
    @classmethod
    def _budget_empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("price_table")
    @classmethod
    def _price_table(cls, value: str) -> str:
        price_table_from_json(value)  # raises ValueError naming the model and the field
        return value

    def prices(self) -> PriceTable:
        return price_table_from_json(self.price_table)

    # --- Queue pause (issue 24.3) ------------------------------------------------------
    # A queue paused longer than this sets emotionviz_queue_paused_too_long (the
    # EmotionvizQueuePausedTooLong alert): a pause someone forgot.
    queue_pause_alert_s: float = Field(default=3600.0, gt=0)

    # --- Operators (issue 24.4) --------------------------------------------------------

    # --- Data lifecycle: retention (issue 24.5) ---------------------------------------
    # Logs carry a keyed reference of every id (workers/logging.py: log_ref), never the
    # id: `emotionviz user log-ref ID` prints it. Unset: a fixed key (weaker: anyone
    # holding an id can compute its reference). Read by each process at boot.
    log_pseudonym_key: SecretStr | None = None
    # The scheduled purge (SCHEDULE_RETENTION; `emotionviz retention run`). 0: keep.
    # Completed rows' raw model responses (the product keeps the analysis and the
    # picture's facts), after this many days.
    retention_raw_responses_days: float = Field(default=90.0, ge=0)
    # Failed visualization rows (the person's entry stays) and their dead letters.
    retention_failed_days: float = Field(default=90.0, ge=0)
    # The operators' trail (operator_actions).
    retention_operator_actions_days: float = Field(default=365.0, ge=0)
    # The paid-call ledger (model_calls): kept by default (costs are audited yearly).
    retention_model_calls_days: float = Field(default=0.0, ge=0)
    retention_batch: int = Field(default=1000, ge=1, le=100_000)  # rows per transaction
    schedule_retention: str = "30 3 * * *"  # cron (UTC); empty: no scheduled purge

    @field_validator("schedule_retention")
    @classmethod
    def _retention_cron(cls, value: str) -> str:
        if value.strip():
            from apscheduler.triggers.cron import CronTrigger

            try:
                CronTrigger.from_crontab(value, timezone="UTC")
            except ValueError as exc:
                raise ValueError(f"not a cron expression: {value!r} ({exc})") from None
        return value

    @field_validator("events_queue", "events_webhook_url", "events_webhook_secret", mode="before")
    @classmethod
    def _events_empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("events_webhook_url")
    @classmethod
    def _events_webhook_url(cls, value: str | None) -> str | None:
        if value is not None:
            webhook_target(value)  # raises ValueError, never echoing the URL
        return value

    @field_validator("events_webhook_secret")
    @classmethod
    def _events_webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            webhook_key(value.get_secret_value())  # raises ValueError, never echoing it
        return value

    @model_validator(mode="after")
    def _check_events(self) -> Settings:
        if self.events_webhook_url and self.events_webhook_secret is None:
            raise ValueError("EVENTS_WEBHOOK_URL needs EVENTS_WEBHOOK_SECRET (whsec_<base64>)")
        if self.events_max_backoff_ms < self.events_min_backoff_ms:
            raise ValueError("EVENTS_MAX_BACKOFF_MS must be >= EVENTS_MIN_BACKOFF_MS")
        return self

    @field_validator(
        "database_url",
        "database_direct_url",
        "redis_url",
        "broker_url",
        "gemini_api_key",
        "gemini_base_url",
        "console_token",
        "redis_maxclients",
        "media_url",
        "media_access",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "aws_region",
        "aws_endpoint_url",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # "DATABASE_URL=" in a .env file means "not set", not "connect to ''".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("broker_url")
    @classmethod
    def _amqp_servers(cls, value: SecretStr | None) -> SecretStr | None:
        # Before _parsable_url (validators run in order), which reads only the first of
        # several servers' URLs.
        if value is not None and value.get_secret_value().startswith("amqp"):
            amqp_servers(value.get_secret_value())  # raises ValueError naming what is wrong
        return value

    @field_validator(
        "schedule_analytics_day",
        "schedule_analytics_week",
        "schedule_analytics_month",
        "schedule_reconcile",
    )
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        if value.strip():
            from apscheduler.triggers.cron import CronTrigger

            try:
                CronTrigger.from_crontab(value, timezone="UTC")
            except ValueError as exc:
                raise ValueError(f"not a 5-field cron expression ({exc})") from None
        return value.strip()

    @field_validator("database_url", "database_direct_url", "redis_url", "broker_url")
    @classmethod
    def _parsable_url(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        # Caught here, a malformed URL is one line naming the setting (exit 2), not a
        # driver traceback at the first connection. The message never repeats the URL.
        if value is None:
            return None
        schemes = _URL_SCHEMES[info.field_name or ""]
        if value.get_secret_value().startswith("redis+sentinel:"):
            # Several hosts and a service name: not a URL urlsplit reads (issue 22.1).
            from domain.sentinel_url import parse_sentinel_url

            parse_sentinel_url(value.get_secret_value())  # ValueError, never the URL
            return value
        try:
            parts = urlsplit(value.get_secret_value())
            parts.port  # noqa: B018 - raises ValueError for a non-numeric port
        except ValueError as exc:
            raise ValueError(f"not a valid URL ({exc})") from None
        if parts.scheme not in schemes:
            raise ValueError(f"the scheme must be one of {', '.join(schemes)}")
        if parts.scheme != "unix" and not (parts.hostname or parts.query):
            raise ValueError("the URL names no host")
        return value

    @field_validator("media_base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("media_url")
    @classmethod
    def _media_url(cls, value: str | None) -> str | None:
        if value is not None:
            media_location(value)  # raises ValueError naming what is wrong
        return value

    @field_validator("aws_endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _check_media(self) -> Settings:
        if self.media_access is not None and self.media.kind == "file":
            raise ValueError(
                "MEDIA_ACCESS applies to an S3 store (MEDIA_URL=s3://...); a local store's "
                "pictures are always at MEDIA_BASE_URL"
            )
        return self

    @property
    def media(self) -> MediaLocation:
        """Where pictures live: MEDIA_URL, else the folder MEDIA_DIR."""
        if self.media_url is None:
            return MediaLocation("file", path=self.media_dir)
        return media_location(self.media_url)

    @model_validator(mode="after")
    def _check_backoff(self) -> Settings:
        if self.max_backoff_ms < self.min_backoff_ms:
            raise ValueError("MAX_BACKOFF_MS must be >= MIN_BACKOFF_MS")
        if self.reconcile_grace_s and self.max_backoff_ms > self.reconcile_grace_s * 1000:
            # A released row counts as dispatched when released; its retry then waits up
            # to MAX_BACKOFF_MS in the delay queue, and the reconciler must not resend it.
            raise ValueError(
                f"MAX_BACKOFF_MS ({self.max_backoff_ms}) must be <= RECONCILE_GRACE_S "
                f"({self.reconcile_grace_s}) x 1000: the reconciler would resend entries "
                "whose retry is still waiting"
            )
        return self

    def resolved_provider(self) -> Literal["local", "gemini"]:
        """``auto`` means gemini when a key is set, else the offline local providers."""
        if self.provider == "auto":
            return "gemini" if self.gemini_api_key else "local"
        return self.provider

    @property
    def job_time_limit_ms(self) -> int:
        return self.job_time_limit_s * 1000


@dataclass(frozen=True)
class WebhookTarget:
    """Where EVENTS_WEBHOOK_URL points, as http.client takes it."""

    https: bool
    host: str  # an IPv6 literal without its brackets (http.client adds them)
    port: int
    path: str  # path and query: may hold a token, never logged

    def redacted(self) -> str:
        """The URL to show: scheme, host and port only."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.https else 'http'}://{host}:{self.port}/..."


def webhook_target(url: str) -> WebhookTarget:
    """Parse EVENTS_WEBHOOK_URL, or raise ValueError saying what is wrong (never echoing
    it: its path or query may hold a token)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if "@" in parts.netloc:
        raise ValueError(
            "must not hold user:password@ (the requests are signed with "
            "EVENTS_WEBHOOK_SECRET; put any other token in the path or query)"
        )
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the port is not a number from 0 to 65535") from None
    if not parts.hostname:
        raise ValueError("names no host")
    https = parts.scheme == "https"
    return WebhookTarget(
        https=https,
        host=parts.hostname,
        port=port or (443 if https else 80),
        path=(parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
    )


def webhook_secrets(settings: Settings) -> list[str]:
    """What of the events' settings must never reach a log line: the signing secret,
    the webhook URL, and its path and query (where receivers often put a token)."""
    values: list[str] = []
    if settings.events_webhook_secret is not None:
        values.append(settings.events_webhook_secret.get_secret_value())
    if settings.events_webhook_url:
        url = settings.events_webhook_url
        parts = urlsplit(url)
        values.append(url)
        if parts.query:
            values.append(parts.query)
        if len(parts.path) >= 16:  # a short path ("/hooks") is too common to mask
            values.append(parts.path)
    return values


def webhook_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: ``whsec_`` and base64 of 24 to 64
    bytes (the spec: "at least 24 bytes (192 bits, 512 maximum)"), or ValueError saying
    what is wrong."""
    if not secret.startswith("whsec_"):
        raise ValueError("must be whsec_ followed by base64 (Standard Webhooks)")
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except binascii.Error:
        raise ValueError("the part after whsec_ is not base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError("the key must be 24 to 64 bytes (32 to 88 base64 characters)")
    return key


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        name = ".".join(str(p) for p in err["loc"]).upper() or "settings"
        parts.append(f"{name}: {err['msg']}")
    return "; ".join(parts)


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning pydantic's report into one clear ConfigurationError."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigurationError(f"invalid configuration: {_describe(exc)}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
