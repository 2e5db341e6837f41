"""Settings, read from the environment once, at start, into typed objects.

Every variable is documented in docs/configuration.md. Nothing else in the
code reads the environment.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import unquote, urlsplit

from psycopg.conninfo import make_conninfo

from domain.deliveries import RetryPolicy
from domain.pacing import TokenBucket
from domain.reconciliation import Tolerance

# Stripe allows an account 100 requests/s in live mode and 25 in a sandbox, and any
# one endpoint 25/s unless its page says otherwise (https://docs.stripe.com/rate-limits):
# meter event summaries are one endpoint, so 20/s stays below both in either mode.
READS_PER_SECOND = 20


class SettingsError(ValueError):
    """An environment variable has a value StripeMeter cannot use."""


@dataclass(frozen=True)
class PostgresSettings:
    host: str
    port: int
    user: str
    password: str
    dbname: str

    @property
    def conninfo(self) -> str:
        # make_conninfo quotes values: a bare empty password would swallow the next key.
        return make_conninfo(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=self.dbname,
        )

    @classmethod
    def from_url(cls, url: str) -> PostgresSettings:
        parts = urlsplit(url)
        if parts.scheme not in ("postgres", "postgresql"):
            raise SettingsError(
                "STRIPEMETER_DATABASE_URL must start with postgresql:// (or be unset for SQLite)"
            )
        dbname = parts.path.lstrip("/")
        if not dbname:
            raise SettingsError("STRIPEMETER_DATABASE_URL must name a database")
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 5432,
            user=unquote(parts.username or "postgres"),
            password=unquote(parts.password or ""),
            dbname=dbname,
        )


@dataclass(frozen=True)
class StripeSettings:
    """Where pushes go. No secret key: the built-in emulator (nothing reaches Stripe)."""

    secret_key: str | None = None
    api_base: str | None = None
    test_secret_key: str | None = None  # shadow mode: a Stripe test account
    test_api_base: str | None = None
    max_network_retries: int = 2
    timeout_seconds: float = 20.0
    webhook_secret: str | None = None  # verifies Stripe-Signature on /v1/stripe/webhooks
    # No secret key on PostgreSQL: push to the built-in emulator only if asked (stripe_target.py).
    emulator: bool = False

    def __repr__(self) -> str:  # secrets never reach a log line through a repr
        return (
            f"StripeSettings(secret_key={'set' if self.secret_key else 'unset'},"
            f" api_base={self.api_base!r}, test_secret_key="
            f"{'set' if self.test_secret_key else 'unset'}, test_api_base={self.test_api_base!r},"
            f" webhook_secret={'set' if self.webhook_secret else 'unset'},"
            f" emulator={self.emulator})"
        )


@dataclass(frozen=True)
class ReconcileSettings:
    """Reconciliation and period closing (see docs/RECONCILIATION.md)."""

    interval_seconds: int = 300  # 0: no scheduled runs (API and CLI runs still work)
    drift_absolute: int = 0
    drift_relative: Decimal = Decimal(0)
    summary_lag_seconds: int = 600
    invoice_grace_seconds: int = 3600
    close_margin_seconds: int = 600
    threads: int = 4
    # Summary reads per second, shared by the threads; 0: unpaced (429s retried).
    reads_per_second: int = READS_PER_SECOND
    # The same for shadow mode's Stripe test account: another account, with a limit
    # of its own (a sandbox's: 25/s), so it is paced apart from the live one.
    shadow_reads_per_second: int = READS_PER_SECOND

    def read_pace(self) -> TokenBucket | None:
        """The bucket the reconciler's summary reads share, or None when unpaced.

        Its burst is a twentieth of a second's reads (at least one), so no
        wall-clock second sees more than ``reads_per_second × 1.05`` reads.
        """
        return _bucket(self.reads_per_second)

    def shadow_read_pace(self) -> TokenBucket | None:
        """The bucket of the shadow (test account) reads, built like ``read_pace``."""
        return _bucket(self.shadow_reads_per_second)

    def tolerance(self) -> Tolerance:
        return Tolerance(
            self.drift_absolute, self.drift_relative, timedelta(seconds=self.summary_lag_seconds)
        )


@dataclass(frozen=True)
class WebhookSettings:
    """Outbound webhooks (docs/webhooks.md): sent by the process that pushes to Stripe."""

    timeout_seconds: float = 10.0  # per attempt: connect, send and read together
    retry_base_seconds: int = 30  # the wait after the first failed attempt; doubles each time
    retry_max_delay_seconds: int = 6 * 3600  # no wait longer than this
    retry_for_seconds: int = 3 * 86_400  # after this (from creation), a failing delivery fails
    poll_seconds: float = 1.0  # how often the outbox and the sender look for work
    threads: int = 4  # attempts in flight at once

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            timedelta(seconds=self.retry_base_seconds),
            timedelta(seconds=self.retry_max_delay_seconds),
            timedelta(seconds=self.retry_for_seconds),
        )


def _bucket(reads_per_second: int) -> TokenBucket | None:
    if reads_per_second == 0:
        return None
    return TokenBucket(reads_per_second, max(1, reads_per_second // 20))


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("data")
    postgres: PostgresSettings | None = None
    host: str = "127.0.0.1"
    port: int = 3000
    embedded_worker: bool = True
    max_batch_events: int = 1_000
    group_commit_max_events: int = 5_000
    ready_max_lag_events: int = 50_000
    log_level: str = "INFO"
    stripe: StripeSettings = StripeSettings()
    broker_url: str | None = None
    # Several deployments (or test runs) can share one Redis or RabbitMQ under distinct names.
    broker_queue: str = "stripemeter_push"
    push_interval_seconds: float = 5.0
    push_threads: int = 4
    # A sweep that finds at least this many periods behind (per target) pushes them in
    # batches of up to 100 over the v2 meter event stream; fewer go one v1 call each.
    stream_min_batch: int = 10
    emulator_port: int = 12111
    writer_mode: str = "process"  # "process": a writer process beside the API; "thread": in it
    writer_socket: Path | None = None  # set by `stripemeter serve` once its writer runs
    api_processes: int = 1
    # A worker serves its metrics on the first free port of this range (one port: that
    # port or a clear error), so that several workers per host work by default.
    worker_metrics_port: int = 9464
    worker_metrics_port_last: int = 9473
    # Set by `serve` for several API processes: prometheus_client's shared-files mode.
    metrics_multiprocess_dir: Path | None = None
    # How often the projections look at the log when nothing wakes them (a runner
    # in another process than the writer, on SQLite), and while PostgreSQL's
    # LISTEN wakes them (only for a missed notification); after a batch, a wake waits
    # until ``projection_batch_interval`` has passed, so that busy commits share batches.
    projection_poll_seconds: float = 0.05
    projection_safety_poll_seconds: float = 1.0
    projection_batch_interval_seconds: float = 0.05
    reconcile: ReconcileSettings = ReconcileSettings()
    webhooks: WebhookSettings = WebhookSettings()
    # How long Stripe prices (a customer's subscription items) are cached for the cost
    # projection; price.* and customer.subscription.* webhooks drop them sooner.
    price_cache_seconds: int = 300
    # CloudEvents ingest (docs/cloudevents.md): a ``type`` starting with one of these
    # (the first that matches) names the metric without it; none matching: the type itself.
    cloudevents_type_prefixes: tuple[str, ...] = ()
    # A TOML file (docs/config-file.md) that ``serve`` applies at start; refused: no start.
    config_file: Path | None = None
    # A client of a running service (``stripemeter import``): its address and API key.
    api_url: str | None = None
    api_key: str | None = field(default=None, repr=False)

    @property
    def backend(self) -> str:
        return "postgres" if self.postgres else "sqlite"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        url = env.get("STRIPEMETER_DATABASE_URL", "").strip()
        metrics_ports = _port_range(env, "STRIPEMETER_WORKER_METRICS_PORT", 9464, 9473)
        return cls(
            data_dir=Path(env.get("STRIPEMETER_DATA_DIR", "data")),
            postgres=PostgresSettings.from_url(url) if url else None,
            host=env.get("STRIPEMETER_HOST", "127.0.0.1"),
            port=_int(env, "STRIPEMETER_PORT", 3000, 1, 65535),
            embedded_worker=_bool(env, "STRIPEMETER_EMBEDDED_WORKER", True),
            max_batch_events=_int(env, "STRIPEMETER_MAX_BATCH_EVENTS", 1_000, 1, 10_000),
            group_commit_max_events=_int(
                env, "STRIPEMETER_GROUP_COMMIT_MAX_EVENTS", 5_000, 1, 100_000
            ),
            ready_max_lag_events=_int(env, "STRIPEMETER_READY_MAX_LAG", 50_000, 0, 10**9),
            log_level=env.get("STRIPEMETER_LOG_LEVEL", "INFO").upper(),
            stripe=StripeSettings(
                secret_key=_optional(env, "STRIPE_SECRET_KEY"),
                api_base=_optional(env, "STRIPE_API_BASE"),
                test_secret_key=_optional(env, "STRIPE_TEST_SECRET_KEY"),
                test_api_base=_optional(env, "STRIPE_TEST_API_BASE"),
                max_network_retries=_int(env, "STRIPE_MAX_NETWORK_RETRIES", 2, 0, 10),
                timeout_seconds=float(_int(env, "STRIPE_TIMEOUT_SECONDS", 20, 1, 300)),
                webhook_secret=_optional(env, "STRIPE_WEBHOOK_SECRET"),
                emulator=_bool(env, "STRIPEMETER_STRIPE_EMULATOR", False),
            ),
            broker_url=_broker_url(env),
            broker_queue=_broker_queue(env),
            push_interval_seconds=float(
                _int(env, "STRIPEMETER_PUSH_INTERVAL_SECONDS", 5, 1, 86_400)
            ),
            push_threads=_int(env, "STRIPEMETER_PUSH_THREADS", 4, 1, 64),
            stream_min_batch=_int(env, "STRIPEMETER_STREAM_MIN_BATCH", 10, 1, 10**9),
            emulator_port=_int(env, "STRIPEMETER_EMULATOR_PORT", 12111, 0, 65535),
            writer_mode=_choice(env, "STRIPEMETER_WRITER", ("process", "thread"), "process"),
            writer_socket=Path(sock)
            if (sock := _optional(env, "STRIPEMETER_WRITER_SOCKET"))
            else None,
            api_processes=_int(env, "STRIPEMETER_API_PROCESSES", 1, 1, 64),
            worker_metrics_port=metrics_ports[0],
            worker_metrics_port_last=metrics_ports[1],
            metrics_multiprocess_dir=(
                Path(d) if (d := _optional(env, "PROMETHEUS_MULTIPROC_DIR")) else None
            ),
            projection_poll_seconds=_int(env, "STRIPEMETER_PROJECTION_POLL_MS", 50, 1, 60_000)
            / 1000,
            projection_safety_poll_seconds=_int(
                env, "STRIPEMETER_PROJECTION_SAFETY_POLL_MS", 1_000, 1, 600_000
            )
            / 1000,
            projection_batch_interval_seconds=_int(
                env, "STRIPEMETER_PROJECTION_BATCH_INTERVAL_MS", 50, 0, 10_000
            )
            / 1000,
            price_cache_seconds=_int(env, "STRIPEMETER_PRICE_CACHE_SECONDS", 300, 0, 86_400),
            cloudevents_type_prefixes=_prefixes(env, "STRIPEMETER_CLOUDEVENTS_TYPE_PREFIXES"),
            config_file=Path(f) if (f := _optional(env, "STRIPEMETER_CONFIG_FILE")) else None,
            reconcile=ReconcileSettings(
                interval_seconds=_int(
                    env, "STRIPEMETER_RECONCILE_INTERVAL_SECONDS", 300, 0, 86_400
                ),
                drift_absolute=_int(env, "STRIPEMETER_DRIFT_ABSOLUTE", 0, 0, 10**12),
                drift_relative=_ratio(env, "STRIPEMETER_DRIFT_RELATIVE"),
                summary_lag_seconds=_int(env, "STRIPEMETER_SUMMARY_LAG_SECONDS", 600, 0, 86_400),
                invoice_grace_seconds=_int(
                    env, "STRIPEMETER_INVOICE_GRACE_SECONDS", 3600, 0, 72 * 3600
                ),
                close_margin_seconds=_int(env, "STRIPEMETER_CLOSE_MARGIN_SECONDS", 600, 0, 86_400),
                threads=_int(env, "STRIPEMETER_RECONCILE_THREADS", 4, 1, 32),
                reads_per_second=_int(
                    env,
                    "STRIPEMETER_RECONCILE_READS_PER_SECOND",
                    READS_PER_SECOND,
                    0,
                    10_000,
                ),
                shadow_reads_per_second=_int(
                    env,
                    "STRIPEMETER_RECONCILE_SHADOW_READS_PER_SECOND",
                    READS_PER_SECOND,
                    0,
                    10_000,
                ),
            ),
            webhooks=_webhook_settings(env),
            api_url=_optional(env, "STRIPEMETER_API_URL"),
            api_key=_optional(env, "STRIPEMETER_API_KEY"),
        )


def _webhook_settings(env: Mapping[str, str]) -> WebhookSettings:
    return WebhookSettings(
        timeout_seconds=float(_int(env, "STRIPEMETER_WEBHOOK_TIMEOUT_SECONDS", 10, 1, 60)),
        retry_base_seconds=_int(env, "STRIPEMETER_WEBHOOK_RETRY_BASE_SECONDS", 30, 1, 86_400),
        retry_max_delay_seconds=_int(
            env, "STRIPEMETER_WEBHOOK_RETRY_MAX_DELAY_SECONDS", 6 * 3600, 1, 7 * 86_400
        ),
        retry_for_seconds=_int(
            env, "STRIPEMETER_WEBHOOK_RETRY_FOR_SECONDS", 3 * 86_400, 0, 30 * 86_400
        ),
        poll_seconds=_int(env, "STRIPEMETER_WEBHOOK_POLL_MS", 1_000, 10, 600_000) / 1000,
        threads=_int(env, "STRIPEMETER_WEBHOOK_THREADS", 4, 1, 64),
    )


def _ratio(env: Mapping[str, str], name: str) -> Decimal:
    raw = env.get(name, "").strip()
    if not raw:
        return Decimal(0)
    try:
        value = Decimal(raw)
    except ArithmeticError:
        raise SettingsError(f"{name} must be a number such as 0.001, got {raw!r}") from None
    if not value.is_finite() or not 0 <= value <= 1:
        raise SettingsError(f"{name} must be between 0 and 1, got {raw!r}")
    return value


def _prefixes(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list, in order; spaces around each entry and empty entries dropped."""
    prefixes = tuple(p.strip() for p in env.get(name, "").split(","))
    return tuple(p for p in prefixes if p)


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = env.get(name, "").strip().lower() or default
    if value not in allowed:
        raise SettingsError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _port_range(env: Mapping[str, str], name: str, first: int, last: int) -> tuple[int, int]:
    """A port (``9464``) or a range to take the first free port of (``9464-9473``)."""
    raw = env.get(name, "").strip()
    if "-" in raw:
        low, _, high = raw.partition("-")
        first = _int({name: low}, name, first, 1, 65535)
        last = _int({name: high}, name, last, first, 65535)
    elif raw:
        first = last = _int(env, name, first, 0, 65535)
    return first, last


def _optional(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def _broker_url(env: Mapping[str, str]) -> str | None:
    url = _optional(env, "STRIPEMETER_BROKER_URL")
    if url is not None and not url.startswith(("redis://", "rediss://", "amqp://", "amqps://")):
        raise SettingsError(
            "STRIPEMETER_BROKER_URL must be redis://… or amqp://… (or unset: in-process broker)"
        )
    return url


def _broker_queue(env: Mapping[str, str]) -> str:
    name = _optional(env, "STRIPEMETER_BROKER_QUEUE") or "stripemeter_push"
    # Dramatiq's own rule for queue names (it refuses others when the actor is declared).
    if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9._-]*", name) or len(name) > 200:
        raise SettingsError(
            "STRIPEMETER_BROKER_QUEUE must start with a letter or _ and hold only letters,"
            " digits, '.', '_' and '-' (at most 200 characters)"
        )
    return name


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")
