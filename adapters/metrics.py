"""Prometheus metrics. Every name here is exported by /metrics; alert rules may use only these."""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from adapters.build_info import BuildInfoCollector
from domain.caps import CapMode
from domain.ingest import IngestResult, Lateness, Outcome

log = logging.getLogger(__name__)

ALERT_KINDS = ("usage", "spend", "spike")
# The ``cause`` label of drift lines: domain.reconciliation.Cause by name, lower case.
DRIFT_CAUSES = ("outside", "missing", "remapped", "unconfirmed", "unpushed", "summary_lag", "other")

CORRECTION_OUTCOME = {
    Lateness.CARRIED: "carried",
    Lateness.HELD: "held",
    Lateness.PAST_WINDOW: "kept",
}


class Metrics:
    """One registry per app instance, so that tests and processes never share counts.

    With several API processes (``multiprocess=True``), prometheus_client's
    shared-files mode adds up every process's values at each scrape.
    """

    def __init__(self, multiprocess: bool = False) -> None:
        self.registry = CollectorRegistry()
        self.exposed = self.registry
        if multiprocess:
            self.exposed = CollectorRegistry()
            MultiProcessCollector(self.exposed)  # type: ignore[no-untyped-call]
        self.exposed.register(BuildInfoCollector())
        self.ingest_events = Counter(
            "stripemeter_ingest_events_total",
            "Usage events received, by outcome (accepted, duplicate, conflict, error).",
            ["outcome"],
            registry=self.registry,
        )
        self.late_events = Counter(
            "stripemeter_late_events_total",
            "Accepted usage events that arrived after their period ended, by kind (in_window:"
            " counted in their period; carried: counted as a correction in the open period;"
            " held: waiting for approval; past_window: recorded, not counted).",
            ["kind"],
            registry=self.registry,
        )
        self.history_events = Counter(
            "stripemeter_history_events_total",
            "Usage events imported as history (older than the ingest horizon, sent with"
            " history: true): counted in their own period, never pushed to Stripe.",
            registry=self.registry,
        )
        self.caps_reached = Counter(
            "stripemeter_caps_reached_total",
            "Usage periods that reached a usage cap, by mode (hard: usage past it is refused;"
            " soft: accepted and marked). Counted once per period and cap limit.",
            ["mode"],
            registry=self.registry,
        )
        self.cap_refused = Counter(
            "stripemeter_cap_refused_events_total",
            "Usage events refused because they would pass a hard cap.",
            registry=self.registry,
        )
        self.http_duration = Histogram(
            "http_request_duration_seconds",
            "HTTP request latency, by route and status code.",
            ["method", "route", "status"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.commit_batch_events = Histogram(
            "stripemeter_group_commit_batch_events",
            "Usage events written per event-store transaction.",
            buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000),
            registry=self.registry,
        )
        self.commit_duration = Histogram(
            "stripemeter_group_commit_seconds",
            "Time to write one group-commit batch to the event store.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.pushes = Counter(
            "stripemeter_pushes_total",
            "Push attempts to Stripe by target (live, shadow) and outcome.",
            ["target", "outcome"],
            registry=self.registry,
        )
        self.stream_calls = Counter(
            "stripemeter_stream_calls_total",
            "Calls to Stripe's v2 meter event stream, by target (each carries up to 100 events).",
            ["target"],
            registry=self.registry,
        )
        self.stream_call_events = Histogram(
            "stripemeter_stream_call_events",
            "Meter events per v2 stream call, by target.",
            ["target"],
            buckets=(1, 5, 10, 25, 50, 75, 100),
            registry=self.registry,
        )
        self.push_duration = Histogram(
            "stripemeter_push_seconds",
            "Time to push one usage period (read, plan, record, Stripe call, confirm).",
            ["target"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.pending_intents = Gauge(
            "stripemeter_pending_intents",
            "Push intents recorded but not yet confirmed or abandoned, at the last sweep.",
            ["target"],
            registry=self.registry,
        )
        self.unpushed_periods = Gauge(
            "stripemeter_unpushed_periods",
            "Usage periods whose counter Stripe does not hold yet, at the last sweep.",
            ["target"],
            registry=self.registry,
        )
        self.oldest_unpushed = Gauge(
            "stripemeter_oldest_unpushed_usage_seconds",
            "Age of the oldest counted usage event not yet confirmed in Stripe, at the last sweep.",
            ["target"],
            registry=self.registry,
        )
        # The reference product's names for shadow mode, kept for its users' dashboards
        # (exported, as every counter, with _total: shadow_usage_posts_total, ...).
        self.swept_at = Gauge(
            "stripemeter_push_last_sweep_timestamp_seconds",
            "When the push sweep last finished (Unix time): it stops moving if the sweep hangs.",
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.shadow_posts = Counter(
            "shadow_usage_posts",
            "Shadow-mode pushes confirmed by the Stripe test account.",
            registry=self.registry,
        )
        self.shadow_failures = Counter(
            "shadow_usage_post_failures",
            "Shadow-mode pushes that failed (retried later) or were refused.",
            registry=self.registry,
        )
        self.shadow_skipped = Counter(
            "stripemeter_shadow_pushes_skipped",
            "Shadow pushes skipped because STRIPE_TEST_SECRET_KEY is not set.",
            registry=self.registry,
        )
        self.projection_lag = Gauge(
            "stripemeter_projection_lag_events",
            "Event-log entries not yet applied to a projection.",
            ["projection"],
            registry=self.registry,
            # The value of whichever live process measured last: an idle process's old
            # value must not hold the alert up.
            multiprocess_mode="livemostrecent",
        )

        self.reconciliation_lines = Gauge(
            "stripemeter_reconciliation_lines",
            "Lines of the last reconciliation run by target (live, shadow) and status (ok,"
            " pending, drift, repaired, skipped).",
            ["target", "status"],
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.drift_lines = Gauge(
            "stripemeter_reconciliation_drift_lines",
            "Drift lines of the last reconciliation run by target (live, shadow) and probable"
            " cause (outside, missing, remapped, unconfirmed, unpushed, summary_lag, other).",
            ["target", "cause"],
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.drift_units = Gauge(
            "stripemeter_reconciliation_max_drift_units",
            "Largest |local - Stripe| in whole units over the drift lines of the last run,"
            " by target (live, shadow).",
            ["target"],
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.drift_ratio = Gauge(
            "stripemeter_reconciliation_max_drift_ratio",
            "Largest |local - Stripe| / max(|local|, 1) over the drift lines of the last run,"
            " by target (live, shadow).",
            ["target"],
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.reconciled_at = Gauge(
            "stripemeter_reconciliation_last_run_timestamp_seconds",
            "When the last reconciliation run finished (Unix time).",
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.stripe_calls = Counter(
            "stripemeter_reconciliation_stripe_calls_total",
            "Stripe meter event summary reads made by reconciliation runs.",
            registry=self.registry,
        )
        self.corrections = Counter(
            "stripemeter_corrections_total",
            "Corrections for closed periods by outcome (carried, held, approved, reverted,"
            " rejected, kept).",
            ["outcome"],
            registry=self.registry,
        )
        self.adjustments_pending = Gauge(
            "stripemeter_adjustments_pending",
            "Adjustments held for approval, at the last reconciliation run.",
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.periods_closed = Counter(
            "stripemeter_periods_closed_total",
            "Usage periods closed before their invoice finalised, by final parity"
            " (parity, mismatch).",
            ["verdict"],
            registry=self.registry,
        )

        # Known label values exist from the start, so that rate() and increase() see the
        # first event instead of a series appearing at 1.
        for outcome in ("carried", "held", "kept", "approved", "reverted", "rejected"):
            self.corrections.labels(outcome)
        self._caps_reached = {mode: self.caps_reached.labels(mode.value) for mode in CapMode}
        # Bound once: ``labels()`` on every request was a measurable part of an ingest.
        self._by_outcome = {o: self.ingest_events.labels(o.value) for o in Outcome}
        self._http: dict[tuple[str, str, int], Histogram] = {}
        for verdict in ("parity", "mismatch"):
            self.periods_closed.labels(verdict)
        self._usage_alerts: UsageAlertsCollector | None = None
        for target in ("live", "shadow"):
            self.drift_units.labels(target)
            self.drift_ratio.labels(target)
            for status in ("ok", "pending", "drift", "repaired", "skipped"):
                self.reconciliation_lines.labels(target, status)
            for cause in DRIFT_CAUSES:
                self.drift_lines.labels(target, cause)

    def watch_usage_alerts(self, triggered: Callable[[], Mapping[str, int]]) -> None:
        """Export ``stripemeter_usage_alerts_triggered_total`` as ``triggered`` counts it.

        Read at each scrape from the incidents view, not counted in memory: the
        alerts are evaluated wherever the views are kept (the writer process in
        the embedded default, ``stripemeter worker`` in production), which is not
        the process that answers /metrics. A trigger is never forgotten by a
        restart, nor counted twice by two processes.
        """
        if self._usage_alerts is None:
            self._usage_alerts = UsageAlertsCollector(triggered)
            self.exposed.register(self._usage_alerts)
        else:
            self._usage_alerts.triggered = triggered

    def observe_commit(self, events: int, seconds: float) -> None:
        """One group commit (thread or writer process): its size and how long it took."""
        self.commit_batch_events.observe(events)
        self.commit_duration.observe(seconds)

    def observe_http(self, method: str, route: str, status: int, seconds: float) -> None:
        """One HTTP request's latency, by method, route template and status."""
        child = self._http.get((method, route, status))
        if child is None:
            child = self._http[method, route, status] = self.http_duration.labels(
                method, route, str(status)
            )
        child.observe(seconds)

    def observe_ingest(self, results: Sequence[IngestResult]) -> None:
        """Count a request's events by outcome, and the accepted late ones by kind.

        Called once per ingest request with every event's result, refused or
        written, so that each event is counted exactly once whichever writer ran.
        """
        if len(results) == 1:
            self._by_outcome[results[0].outcome].inc()
        else:
            for outcome, count in collections.Counter(r.outcome for r in results).items():
                self._by_outcome[outcome].inc(count)
        for result in results:
            if result.cap is not None or result.cap_reached is not None:
                self._observe_cap(result)
            if result.late is Lateness.HISTORY and result.outcome is Outcome.ACCEPTED:
                self.history_events.inc()  # not late usage: no alert, no correction
            elif result.late is not None and result.outcome is Outcome.ACCEPTED:
                self.late_events.labels(result.late.value).inc()
                if result.late is not Lateness.IN_WINDOW:
                    self.corrections.labels(CORRECTION_OUTCOME[result.late]).inc()

    def _observe_cap(self, result: IngestResult) -> None:
        if result.cap_reached is not None:
            self._caps_reached[result.cap_reached].inc()
        if result.cap is CapMode.HARD:
            self.cap_refused.inc()


class UsageAlertsCollector(Collector):
    """``stripemeter_usage_alerts_triggered_total{kind}``: every trigger of every incident."""

    def __init__(self, triggered: Callable[[], Mapping[str, int]]) -> None:
        self.triggered = triggered

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "stripemeter_usage_alerts_triggered",
            "Usage alert incidents triggered (docs/usage-alerts.md), by kind (usage, spend,"
            " spike); read from the alerts view at each scrape.",
            labels=["kind"],
        )
        try:
            counts = self.triggered()
        except Exception as error:  # a scrape must not fail because the view did
            log.warning("could not read the usage alert counts: %s", error)
            return
        for kind in ALERT_KINDS:
            family.add_metric([kind], counts.get(kind, 0))
        yield family
