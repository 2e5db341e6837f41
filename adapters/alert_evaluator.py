"""Evaluates alert rules where the counters change: in the projection worker.

The live projection runner tells ``after_batch`` what each committed batch
held (projections/runner.py). The evaluator then:

1. returns at once when no tenant has a rule (a dict lookup: the rules are
   cached, read again from the alerts view every ``RULES_TTL_SECONDS`` and
   whenever a batch carries a rule change);
2. keeps the usage periods the batch touched until the runner has caught up
   with the log (a batch that was not full): a counter half-way through a
   backlog is history, not the present, and must not resolve anything;
3. reads those of tenants with rules as committed (one read for all),
   compares each with the rules that apply (same tenant, metric, and
   customer or all customers), in the period that holds now (the
   application's clock: a test clock where one drives it), and triggers or
   resolves the incident through ``AlertService`` — optimistic concurrency
   on its deterministic id, so a breach triggers once however many
   evaluators race.

A rule change (created, replaced, deleted) resolves the open incidents the
rule no longer stands behind (``retired_because``) and evaluates it at once
against every current counter of its metric: a rule sees the usage counted
before it.

``sweep`` is the periodic pass (``AlertSweep`` runs it every
``ALERT_SWEEP_SECONDS``): it resolves open incidents whose period ended (or
that a missed rule change left open), and evaluates every enabled rule in full
— which also re-triggers an incident whose cooldown has passed while its
counter stood still.

Ingest never waits for any of this: it runs on the runner's thread after the
views are committed, or on the sweep's thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from uuid import UUID

from adapters.periodic import Periodic
from domain.alert_incidents import (
    AlertIncident,
    IncidentState,
    Reading,
    ResolvedBecause,
    Target,
    next_action,
    spike_breached,
    spike_cutoff,
    threshold_breached,
)
from domain.alerting import AlertService, IncidentEvent, Saved
from domain.alerts import AlertKind, AlertRule, SpendBasis
from domain.application import MeteringApp
from domain.errors import ConflictError
from domain.meters import Aggregation
from domain.spend import SpendSource
from domain.usage import usage_period_id
from projections.alert_inputs import (
    CounterValue,
    current_counters,
    touched_counters,
    usage_until,
    usages_until,
)
from projections.alerts import AlertsProjection, IncidentRow, RuleRow
from projections.base import Positioned
from projections.store import ViewStore
from projections.usage_periods import PeriodInfo, UsagePeriodDirectory

log = logging.getLogger("stripemeter.alerts")

RULES_TTL_SECONDS = 5.0
ALERT_SWEEP_SECONDS = 30.0
BASELINE_CACHE_SIZE = 50_000
RECENT_SIZE = 10_000
PREVIOUS_CACHE_SIZE = 100_000


class AlertEvaluator:
    """Compares committed counters with the tenants' alert rules (see the module docstring)."""

    def __init__(
        self,
        app: MeteringApp,
        store: ViewStore,
        directory: UsagePeriodDirectory,
        alerts: AlertsProjection,
        spend: SpendSource | None = None,
    ) -> None:
        self.app = app
        self.store = store
        self.directory = directory
        self.alerts = alerts
        self.service = AlertService(app)
        self.spend = spend
        # Told of every trigger and resolve saved here (metrics; outbound webhooks read the log).
        self.observers: list[Callable[[IncidentEvent], None]] = []
        self._rules: dict[UUID, list[RuleRow]] = {}
        self._rules_read_at: float | None = None
        self._pending: set[UUID] = set()
        self._baselines: dict[tuple[UUID, datetime], Decimal] = {}
        # A usage period's id -> the period before it (id, start, end), for spikes.
        self._previous: dict[UUID, tuple[UUID, datetime, datetime]] = {}
        # Incidents saved here, newer than the view may show yet.
        self._recent: dict[UUID, AlertIncident] = {}
        self._lock = threading.Lock()

    # -- the runner's listener -----------------------------------------------

    def after_batch(self, batch: Mapping[str, Sequence[Positioned]], more: bool) -> None:
        """Evaluate what a committed batch changed (``more``: the log had more waiting)."""
        changed = {
            e.originator_id
            for _, e in batch.get(self.alerts.name, ())
            if isinstance(e, (AlertRule.Created, AlertRule.Replaced, AlertRule.Deleted))
        }
        rules = self.rules(refresh=bool(changed))
        if changed:
            with self._lock:
                self._changed(changed, rules, self.app.clock())
        if not rules:
            self._pending.clear()
            return
        for _, event in batch.get("counters", ()):
            self._pending.add(event.originator_id)
        if more or not self._pending:
            return
        with self._lock:
            pending, self._pending = self._pending, set()
            now = self.app.clock()
            self._evaluate(touched_counters(self.store, self.directory, pending, rules), now)

    def _changed(
        self, alert_ids: set[UUID], rules: Mapping[UUID, Sequence[RuleRow]], now: datetime
    ) -> None:
        """Rules created, replaced or deleted: retire what they no longer cover, evaluate
        the rest against every current counter of their metric."""
        by_id = {r.alert_id: r for rs in rules.values() for r in rs}
        for alert_id in alert_ids:
            rule = by_id.get(alert_id)
            for row in self.alerts.incidents(alert_id=alert_id, open_only=True):
                self._retire(row, rule, now)
            if rule is not None and rule.spec.enabled:
                self._evaluate_rule(rule, now)

    def rules(self, refresh: bool = False) -> dict[UUID, list[RuleRow]]:
        """The rules by tenant, as the view held them at most ``RULES_TTL_SECONDS`` ago."""
        read_at = self._rules_read_at
        if refresh or read_at is None or time.monotonic() - read_at > RULES_TTL_SECONDS:
            rules: dict[UUID, list[RuleRow]] = {}
            for row in self.alerts.rules():
                rules.setdefault(row.tenant_id, []).append(row)
            self._rules, self._rules_read_at = rules, time.monotonic()
        return self._rules

    # -- the periodic pass ----------------------------------------------------

    def sweep(self) -> int:
        """Resolve what a new period, a disabled or deleted rule ended; evaluate every rule.

        The number of incident events saved.
        """
        with self._lock:
            now = self.app.clock()
            rules = {r.alert_id: r for rs in self.rules(refresh=True).values() for r in rs}
            saved = 0
            for row in self.alerts.incidents(open_only=True, limit=100_000):
                saved += self._retire(row, rules.get(row.target.alert_id), now)
            for rule in rules.values():
                if not rule.spec.enabled:
                    continue
                try:
                    saved += self._evaluate_rule(rule, now)
                except Exception:  # one rule's failure must not keep the others waiting
                    log.exception("alert %s could not be evaluated; next sweep", rule.alert_id)
            return saved

    # -- evaluation -------------------------------------------------------------

    def _retire(self, row: IncidentRow, rule: RuleRow | None, now: datetime) -> int:
        """Resolve an open incident its rule no longer stands behind; the events saved."""
        reason = retired_because(row, rule, now)
        if reason is None:
            return 0
        return self._tell(self.service.resolve(row.incident_id, reason, row.threshold, None, now))

    def _evaluate_rule(self, rule: RuleRow, now: datetime) -> int:
        spec = rule.spec
        counters = current_counters(self.store, rule.tenant_id, spec.metric, spec.customer_ref, now)
        return self._evaluate(counters, now, only=rule)

    def _evaluate(
        self, counters: Sequence[CounterValue], now: datetime, only: RuleRow | None = None
    ) -> int:
        """Compare each counter with its rules; save what changed. The events saved."""
        decisions: list[tuple[RuleRow, Target, Reading]] = []
        self._prepare_baselines(counters, now, only)
        for counter in counters:
            info = counter.info
            if not info.period_start <= now < info.period_end:
                continue  # not the current period: the sweep resolves what the new one ended
            for rule in [only] if only is not None else self._rules.get(info.tenant_id, []):
                spec = rule.spec
                if not spec.enabled or spec.metric != info.metric:
                    continue
                if spec.customer_ref is not None and spec.customer_ref != info.customer_ref:
                    continue
                reading = self._reading(rule, info, counter.value, now)
                if reading is not None:
                    decisions.append((rule, _target(rule, info), reading))
        if not decisions:
            return 0
        known = self._known([target.incident_id for _, target, _ in decisions])
        saved = 0
        for rule, target, reading in decisions:
            state = known.get(target.incident_id)
            if next_action(state, reading.breached, now, rule.spec.cooldown_seconds) is None:
                continue
            try:
                result = self.service.evaluate(
                    target, rule.spec.threshold, rule.spec.cooldown_seconds, reading, now
                )
            except ConflictError as error:  # the sweep decides again
                log.warning("alert %s: %s", rule.alert_id, error)
                continue
            saved += self._tell(result)
        return saved

    def _reading(
        self, rule: RuleRow, info: PeriodInfo, value: Decimal, now: datetime
    ) -> Reading | None:
        """The value the rule compares and whether it is breached; None: cannot tell now."""
        spec = rule.spec
        if spec.kind is AlertKind.USAGE:
            return Reading(value, threshold_breached(value, spec.threshold))
        if spec.kind is AlertKind.SPEND:
            if self.spend is None:
                return None
            try:
                cost = self.spend.line_cost(
                    info.tenant_id,
                    info.customer_ref,
                    info.metric,
                    value,
                    info.period_start,
                    info.period_end,
                    now,
                )
            except Exception as error:  # prices unreadable now: neither trigger nor resolve
                log.warning("spend alert %s: no price for the line: %s", rule.alert_id, error)
                return None
            if cost is None or cost.currency.lower() != spec.currency:
                return None  # no price bills this line, or not in the rule's currency
            amount = Decimal(
                cost.amount_so_far
                if spec.basis is SpendBasis.AMOUNT_SO_FAR
                else cost.forecast_amount
            )
            return Reading(amount, threshold_breached(amount, spec.threshold))
        baseline = self._baseline(info, now)
        return Reading(value, spike_breached(value, baseline, spec.threshold), baseline)

    def _prepare_baselines(
        self, counters: Sequence[CounterValue], now: datetime, only: RuleRow | None
    ) -> None:
        """Read, in few statements, the baselines the spike rules among these counters need."""
        missing: list[tuple[UUID, Aggregation, datetime]] = []
        for counter in counters:
            info = counter.info
            if not info.period_start <= now < info.period_end:
                continue
            rules = [only] if only is not None else self._rules.get(info.tenant_id, [])
            if not any(
                r.spec.kind is AlertKind.SPIKE and r.spec.enabled and r.spec.metric == info.metric
                for r in rules
            ):
                continue
            key = self._baseline_key(info, now)
            if key not in self._baselines:
                missing.append((key[0], info.aggregation, key[1]))
        if missing:
            if len(self._baselines) + len(missing) > BASELINE_CACHE_SIZE:
                self._baselines.clear()
            self._baselines.update(usages_until(self.store, missing))

    def _baseline(self, info: PeriodInfo, now: datetime) -> Decimal:
        """The previous period's usage up to the same elapsed point (``spike_cutoff``)."""
        key = self._baseline_key(info, now)
        found = self._baselines.get(key)
        if found is None:
            found = self._baselines[key] = usage_until(self.store, key[0], info.aggregation, key[1])
        return found

    def _baseline_key(self, info: PeriodInfo, now: datetime) -> tuple[UUID, datetime]:
        """The previous usage period of ``info``'s customer and metric, and its cutoff."""
        previous = self._previous.get(info.aggregate_id)
        if previous is None:
            # The period before is the customer's (their Stripe cycle once mapped): a
            # customer read, once per period rather than once per evaluation.
            period = self.app.period_for(
                info.tenant_id, info.customer_ref, info.period_start - timedelta(microseconds=1)
            )
            if len(self._previous) >= PREVIOUS_CACHE_SIZE:
                self._previous.clear()
            previous = self._previous[info.aggregate_id] = (
                usage_period_id(info.tenant_id, info.customer_ref, info.metric, period.key),
                period.start,
                period.end,
            )
        period_id, start, end = previous
        return period_id, spike_cutoff(info.period_start, info.period_end, start, end, now)

    def _known(self, ids: Sequence[UUID]) -> dict[UUID, IncidentState]:
        """The incidents' states: the view's, or a newer one saved here."""
        known: dict[UUID, IncidentState] = {}
        versions: dict[UUID, int] = {}
        for start in range(0, len(ids), 500):
            for row in self.alerts.incidents(ids=ids[start : start + 500], limit=500):
                known[row.incident_id], versions[row.incident_id] = row, row.version
        for incident_id in ids:
            recent = self._recent.get(incident_id)
            if recent is not None and recent.version > versions.get(incident_id, 0):
                known[incident_id] = recent
        return known

    def _tell(self, saved: Saved) -> int:
        for event in saved.events:
            if isinstance(event, AlertIncident.Triggered):
                log.warning(
                    "alert %s triggered for customer %s, metric %s, period %s: %s %s reached"
                    " %s (occurrence %d)",
                    event.alert_id,
                    event.customer_ref,
                    event.metric,
                    event.period,
                    event.kind,
                    event.observed,
                    event.threshold,
                    event.occurrence,
                )
            else:
                log.info(
                    "alert %s resolved for customer %s, period %s: %s",
                    event.alert_id,
                    event.customer_ref,
                    event.period,
                    event.reason,
                )
            for observer in self.observers:
                observer(event)
        if saved.incident is not None:
            if len(self._recent) >= RECENT_SIZE:
                self._recent.clear()
            self._recent[saved.incident.id] = saved.incident
        return len(saved.events)


def retired_because(
    row: IncidentRow, rule: RuleRow | None, now: datetime
) -> ResolvedBecause | None:
    """Why an open incident ends without a reading: its rule is gone, off, or covers
    something else now, or its period has ended; None while it still stands."""
    if rule is None:
        return ResolvedBecause.ALERT_DELETED
    spec, target = rule.spec, row.target
    if not spec.enabled:
        return ResolvedBecause.ALERT_DISABLED
    if (
        spec.metric != target.metric
        or spec.kind.value != target.kind
        or spec.customer_ref not in (None, target.customer_ref)
    ):
        return ResolvedBecause.ALERT_CHANGED
    if now >= target.period_end:
        return ResolvedBecause.PERIOD_ENDED
    return None


def _target(rule: RuleRow, info: PeriodInfo) -> Target:
    return Target(
        alert_id=rule.alert_id,
        tenant_id=rule.tenant_id,
        customer_ref=info.customer_ref,
        metric=info.metric,
        period=info.period,
        period_start=info.period_start,
        period_end=info.period_end,
        kind=rule.spec.kind.value,
    )


class AlertSweep:
    """Runs ``AlertEvaluator.sweep`` every ``interval`` seconds on a thread of its own."""

    def __init__(self, evaluator: AlertEvaluator, interval: float = ALERT_SWEEP_SECONDS) -> None:
        self.evaluator = evaluator
        self.interval = interval
        self._thread: Periodic | None = None

    def start(self) -> None:
        self._thread = Periodic(
            "alert-sweep", self.interval, self.evaluator.sweep, log=log, what="alert sweep"
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.stop()
            self._thread = None
