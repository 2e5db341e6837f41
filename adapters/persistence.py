"""Wires the event store and the view store for the configured backend."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from eventsourcing.postgres import PostgresApplicationRecorder

from adapters.admin_sessions import AdminSessionStore
from adapters.alert_evaluator import AlertEvaluator
from adapters.log_listener import PostgresLogListener
from adapters.push_locks import AdvisoryPushLocks
from adapters.reconciliation_reports import ReconciliationReports
from adapters.settings import Settings
from domain.application import MeteringApp, utc_now
from domain.key_namespaces import split_key_namespaces
from domain.push_locks import ProcessPushLocks, PushLocks
from projections.adjustments import AdjustmentsProjection
from projections.alerts import AlertsProjection
from projections.counters import CountersProjection
from projections.customers import CustomersProjection
from projections.ledger import LedgerProjection
from projections.runner import BatchProjectionRunner
from projections.store import PostgresViewStore, SqliteViewStore, ViewStore
from projections.usage_events import UsageEventsProjection
from projections.usage_periods import UsagePeriodDirectory
from projections.webhook_deliveries import WebhookDeliveriesProjection

log = logging.getLogger(__name__)


# The library's JSON bytes and stored events, written sooner (adapters/transcoder.py).
TRANSCODER_TOPIC = "adapters.transcoder:MsgspecTranscoder"
MAPPER_TOPIC = "adapters.transcoder:FastMapper"


def event_store_env(settings: Settings) -> dict[str, str]:
    """The eventsourcing library's settings for our backend."""
    if settings.postgres is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "TRANSCODER_TOPIC": TRANSCODER_TOPIC,
            "MAPPER_TOPIC": MAPPER_TOPIC,
            "APPLICATION_RECORDER_TOPIC": "adapters.sqlite_recorder:ExecutemanyApplicationRecorder",
            "SQLITE_DBNAME": str(settings.data_dir / "events.sqlite3"),
            "SQLITE_LOCK_TIMEOUT": "30",
            "CREATE_TABLE": "y",
        }
    pg = settings.postgres
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "TRANSCODER_TOPIC": TRANSCODER_TOPIC,
        "MAPPER_TOPIC": MAPPER_TOPIC,
        "APPLICATION_RECORDER_TOPIC": "adapters.pg_recorder:BinaryArrayApplicationRecorder",
        "POSTGRES_DBNAME": pg.dbname,
        "POSTGRES_HOST": pg.host,
        "POSTGRES_PORT": str(pg.port),
        "POSTGRES_USER": pg.user,
        "POSTGRES_PASSWORD": pg.password,
        "POSTGRES_POOL_SIZE": "5",
        "POSTGRES_MAX_OVERFLOW": "10",
        "POSTGRES_LOCK_TIMEOUT": "5",
        "CREATE_TABLE": "y",
    }


def view_store(settings: Settings) -> ViewStore:
    if settings.postgres is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        return SqliteViewStore(settings.data_dir / "views.sqlite3")
    return PostgresViewStore(settings.postgres.conninfo)


@dataclass
class Views:
    store: ViewStore
    directory: UsagePeriodDirectory
    counters: CountersProjection
    events: UsageEventsProjection
    ledger: LedgerProjection
    customers: CustomersProjection
    adjustments: AdjustmentsProjection
    reports: ReconciliationReports
    runner: BatchProjectionRunner
    webhook_deliveries: WebhookDeliveriesProjection
    alerts: AlertsProjection
    # Told of each batch the runner commits (the live views only, never a rebuild's).
    alert_evaluator: AlertEvaluator
    # The admin UI's sessions: beside the views, not one (adapters/admin_sessions.py).
    admin_sessions: AdminSessionStore

    def close(self) -> None:
        self.store.close()


# Raise whenever a view's tables change shape: the views are then dropped and
# derived again from the event log (the log is the truth; views are disposable).
VIEWS_SCHEMA = 3


def _replace_outdated_views(store: ViewStore, runner: BatchProjectionRunner) -> None:
    existing = _has_table(store, "sm_tracking")
    with store.transaction() as tx:
        tx.execute("CREATE TABLE IF NOT EXISTS sm_views_schema (version BIGINT NOT NULL)")
        rows = tx.execute("SELECT version FROM sm_views_schema")
        found = int(rows[0][0]) if rows else None
        if found == VIEWS_SCHEMA:
            return
        (log.warning if existing or found is not None else log.debug)(
            "view schema %s found, %s expected: dropping the views; they are derived again"
            " from the event log",
            found,
            VIEWS_SCHEMA,
        )
        for projection in runner.projections:
            for table in projection.tables:
                tx.execute(f"DROP TABLE IF EXISTS {table}")
        tx.execute("DROP TABLE IF EXISTS sm_tracking")
        tx.execute("DELETE FROM sm_views_schema")
        tx.execute("INSERT INTO sm_views_schema VALUES (?)", (VIEWS_SCHEMA,))


def _has_table(store: ViewStore, name: str) -> bool:
    try:
        with store.transaction() as tx:  # its own transaction: a failure aborts it on PostgreSQL
            tx.execute(f"SELECT 1 FROM {name} LIMIT 1")
    except Exception:
        return False
    return True


def build_views(app: MeteringApp, store: ViewStore, settings: Settings | None = None) -> Views:
    """The views over ``app``'s log; with ``settings``, their runner follows the log as
    configured (on PostgreSQL: woken by LISTEN/NOTIFY)."""
    directory = UsagePeriodDirectory(store)
    counters = CountersProjection(store, directory)
    events = UsageEventsProjection(store, directory)
    ledger = LedgerProjection(store)
    customers = CustomersProjection(store)
    adjustments = AdjustmentsProjection(store)
    webhook_deliveries = WebhookDeliveriesProjection(store)
    alerts = AlertsProjection(store)
    runner = BatchProjectionRunner(
        app.recorder,
        app.mapper,
        store,
        [
            directory,
            counters,
            events,
            ledger,
            customers,
            adjustments,
            alerts,
            webhook_deliveries,
        ],
    )
    evaluator = AlertEvaluator(app, store, directory, alerts)
    runner.listeners.append(evaluator.after_batch)
    if settings is not None:
        runner.poll_interval = settings.projection_poll_seconds
        runner.safety_interval = settings.projection_safety_poll_seconds
        runner.min_batch_interval = settings.projection_batch_interval_seconds
        runner.wake_source = log_listener(app, settings)
    _replace_outdated_views(store, runner)
    runner.create_tables()
    reports = ReconciliationReports(store)
    reports.create_tables()
    admin_sessions = AdminSessionStore(store)
    admin_sessions.create_tables()
    return Views(
        store,
        directory,
        counters,
        events,
        ledger,
        customers,
        adjustments,
        reports,
        runner,
        webhook_deliveries=webhook_deliveries,
        alerts=alerts,
        alert_evaluator=evaluator,
        admin_sessions=admin_sessions,
    )


def log_listener(app: MeteringApp, settings: Settings) -> PostgresLogListener | None:
    """PostgreSQL: a listener on the channel the event store NOTIFYs on; SQLite: none (its
    recorder has no notifications: the runner polls)."""
    recorder = app.recorder
    if settings.postgres is None or not isinstance(recorder, PostgresApplicationRecorder):
        return None
    pg = settings.postgres
    return PostgresLogListener(
        pg.conninfo, recorder.channel_name, f"{pg.host}:{pg.port}/{pg.dbname}"
    )


@dataclass
class Stores:
    app: MeteringApp
    views: Views
    # One Stripe call at a time per customer × meter, among every process on these stores.
    push_locks: PushLocks = field(default_factory=ProcessPushLocks)

    def close(self) -> None:
        if isinstance(self.push_locks, AdvisoryPushLocks):
            self.push_locks.close()
        self.views.close()
        self.app.close()


def push_locks_for(settings: Settings) -> PushLocks:
    """PostgreSQL: advisory locks every worker process sees. SQLite: one process, its own."""
    if settings.postgres is None:
        return ProcessPushLocks()
    # Each push holds a connection for its call: the push threads, the reconciler's
    # repair threads and an API request's repair may all push at once.
    threads = settings.push_threads + settings.reconcile.threads + 2
    return AdvisoryPushLocks(settings.postgres.conninfo, max_connections=threads)


def open_stores(settings: Settings, clock: Callable[[], datetime] = utc_now) -> Stores:
    """Open (and create, when missing) the event store and the views."""
    with schema_lock(settings):
        app = MeteringApp(env=event_store_env(settings), clock=clock)
        split_key_namespaces(app)
        views = build_views(app, view_store(settings), settings)
        return Stores(app, views, push_locks_for(settings))


SCHEMA_LOCK_KEY = 0x5354524950454D  # any constant; "STRIPEM"


@contextmanager
def schema_lock(settings: Settings) -> Iterator[None]:
    """One process at a time creates the schema.

    Processes that start together (API processes, the writer, workers) would
    otherwise race on PostgreSQL DDL: concurrent ``CREATE OR REPLACE FUNCTION``
    or ``CREATE TABLE IF NOT EXISTS`` fail with "tuple concurrently updated" or
    a duplicate type. SQLite serialises writers by itself.
    """
    if settings.postgres is None:
        yield
        return
    with psycopg.connect(settings.postgres.conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK_KEY,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK_KEY,))
