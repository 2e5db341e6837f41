"""Reconciliation runs: compare every period's counter with Stripe, report, and repair on request.

A run reads each period's standing from the views, asks Stripe for its meter
event summary over exactly the period's minutes (a few calls at a time, paced
by one token bucket below the account's read limit; a read that still meets
a 429, the account being busy with others, waits Retry-After and is tried
again at the pace: ``domain/paced_reads.py``), and classifies the difference
(``domain/reconciliation.py``). A line that is not ``ok`` is checked again
from the event log itself before it is reported, so a view that lags the log
never raises a false alarm.

A repair never takes Stripe's number as the truth: it pushes the local
counter through the normal intent → push → confirm path. Where Stripe holds
something else than the ledger's confirmed pushes, the repair first records
that drift on the ledger (``DriftRecorded``, with actor and reason) so the
push carries exactly the difference. Accepting Stripe's number instead is an
adjustment an operator proposes and approves (docs/RECONCILIATION.md).

Shadow mode (a metric and a customer mapped to a Stripe *test* account too)
is reconciled the same way, as lines of its own (``target`` ``shadow``): the
shadow meter's summary for the shadow customer against the same counter,
judged with the shadow ledger by the same ``classify``. The test account is
another account with its own rate limit, so its reads take tokens from a
bucket of their own. A repair of a shadow line pushes to the shadow target
only; the live ledger and meter are never touched by it. Without
``STRIPE_TEST_SECRET_KEY`` a shadow line is reported ``skipped``, with why.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from adapters.closing import PeriodCloser
from adapters.metrics import DRIFT_CAUSES, Metrics
from adapters.persistence import Stores
from adapters.reconciliation_reports import PeriodStanding, Report, ReportLine
from adapters.settings import ReconcileSettings
from domain.drift import DriftFinding
from domain.ledger import StripeLedger, ledger_id_for, stripe_expected
from domain.mappings import PUSH_MODE, MeterMapping
from domain.paced_reads import PacedReads
from domain.pacing import TokenBucket
from domain.periods import month_from_key, period_of
from domain.pushing import (
    DEDUP_WINDOW,
    STRIPE_MAX_AGE,
    PushService,
    Target,
    summary_window,
    whole_units,
)
from domain.reconciliation import (
    Cause,
    Standing,
    Status,
    Tolerance,
    classify,
    pushed_elsewhere,
)
from domain.stripe_port import StripeError, StripeGateway
from domain.usage import HISTORY, UsagePeriod

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scope:
    """Which periods a run covers: one month (by period start), or every recent one."""

    tenant_id: UUID | None = None
    month: str | None = None  # YYYY-MM; None: periods that ended within Stripe's 35 days


@dataclass
class _Line:
    standing: PeriodStanding  # with the ledger of ``target`` (and its Stripe customer)
    mapping: MeterMapping
    stripe_customer_id: str
    target: Target = Target.LIVE
    stripe: int | None = None
    error: str | None = None
    remapped: bool = False  # read with the ledger's events (see _fresh)
    skipped: Cause | None = None  # not compared, and why

    @property
    def meter_id(self) -> str:
        if self.target is Target.SHADOW:
            assert self.mapping.shadow_meter_id is not None
            return self.mapping.shadow_meter_id
        return self.mapping.stripe_meter_id

    @property
    def event_name(self) -> str:
        if self.target is Target.SHADOW:
            assert self.mapping.shadow_event_name is not None
            return self.mapping.shadow_event_name
        return self.mapping.stripe_event_name


class Reconciler:
    def __init__(
        self,
        stores: Stores,
        gateway: StripeGateway,
        pusher: PushService,
        metrics: Metrics,
        tolerance: Tolerance,
        clock: Callable[[], datetime],
        threads: int = 4,
        pace: TokenBucket | None = None,
        *,
        shadow_gateway: StripeGateway | None = None,
        shadow_pace: TokenBucket | None = None,
    ) -> None:
        self.stores = stores
        self.gateway = gateway
        # The Stripe test account of shadow mode, if configured (STRIPE_TEST_SECRET_KEY).
        self.shadow_gateway = shadow_gateway
        self.pusher = pusher
        self.metrics = metrics
        self.tolerance = tolerance
        self.clock = clock
        self.threads = threads
        # One bucket for every thread, every run of this reconciler and every retry of
        # a read: Stripe counts the account's requests, not a thread's. None: unpaced
        # (the SDK retries 429s). The test account is counted apart: a bucket of its own.
        self.reads = PacedReads(pace) if pace is not None else None
        self.shadow_reads = PacedReads(shadow_pace) if shadow_pace is not None else None

    def run(self, scope: Scope, *, repair: bool = False, actor: str, trigger: str) -> list[Report]:
        """Reconcile the periods in scope; one report per tenant and month, saved and returned."""
        started = self.clock()
        lines = self._lines(scope, started)
        read = [line for line in lines if line.skipped is None]
        with ThreadPoolExecutor(max_workers=self.threads) as pool:
            list(pool.map(self._read_stripe, read))
        reports: dict[tuple[UUID, str], list[ReportLine]] = defaultdict(list)
        for line in lines:
            out = self._classify(line)
            if out.status == Status.DRIFT.value:
                self._record_drift(line, out, actor)
            if repair and repairable(out):
                out = self._repair(line, out, actor)
            reports[(line.standing.tenant_id, _month(line.standing))].append(out)
        finished = self.clock()
        run_id = f"{finished.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        saved = []
        for (tenant_id, month), report_lines in sorted(reports.items()):
            report = Report(
                run_id,
                tenant_id,
                month,
                started,
                finished,
                trigger,
                actor,
                repair,
                sum(1 for line in report_lines if line.status != Status.SKIPPED),
                report_lines,
            )
            self.stores.views.reports.save(report)
            saved.append(report)
        if scope == Scope():
            # The gauges speak for every tenant and recent period: a run scoped to one
            # tenant or month (an operator's) must not overwrite them with a subset.
            self._observe(saved, finished)
        return saved

    # -- the parts of a run -------------------------------------------------------

    def _lines(self, scope: Scope, now: datetime) -> list[_Line]:
        reports = self.stores.views.reports
        if scope.month is not None:
            start = month_from_key(scope.month)
            start_from, start_before = start.start, start.end
        else:
            recent = reports.standings(scope.tenant_id, ending_after=now - STRIPE_MAX_AGE)
            # Reports are per month and a month reads as its latest run: take whole
            # months, so that no line of a month drops out of its report.
            first = min((s.period_start for s in recent), default=now)
            start_from, start_before = period_of(first).start, now
        standings = reports.standings(
            scope.tenant_id, start_from=start_from, start_before=start_before
        )
        shadows = {
            s.usage_period_id: s
            for s in reports.standings(
                scope.tenant_id,
                start_from=start_from,
                start_before=start_before,
                target=Target.SHADOW.value,
            )
        }
        lines = []
        for standing in standings:
            mapping = self.stores.app.cached_tenant(standing.tenant_id).mappings.get(
                standing.metric
            )
            if mapping is None or standing.stripe_customer_id is None:
                continue  # not billed through Stripe: nothing to compare
            if standing.verdict == HISTORY:
                continue  # imported history: never pushed, no invoice to match
            if not self.stores.app.bills(
                standing.tenant_id,
                standing.customer_ref,
                standing.period,
                standing.period_start,
                standing.period_end,
            ):
                continue  # before the subscription started, or moved: no invoice to match
            lines.append(_Line(standing, mapping, standing.stripe_customer_id))
            # Each shadow line right after its live one: the pool then reads both
            # accounts at once, each at its own pace.
            shadow = shadows.get(standing.usage_period_id)
            if mapping.shadow_event_name is None or shadow is None:
                continue
            if shadow.stripe_customer_id is None:
                continue  # the customer is not mapped in shadow mode
            lines.append(
                _Line(
                    shadow,
                    mapping,
                    shadow.stripe_customer_id,
                    Target.SHADOW,
                    skipped=None if self.shadow_gateway else Cause.NO_TEST_ACCOUNT,
                )
            )
        return lines

    def _record_drift(self, line: _Line, out: ReportLine, actor: str) -> None:
        """Record the drift as an event (``drift.detected`` webhooks), once per drift.

        The finding's id is derived from the numbers (domain/drift.py): a run
        that sees the same drift again finds it recorded and writes nothing.
        """
        if out.stripe is None:
            return
        s = line.standing
        finding = DriftFinding.detect(
            s.tenant_id,
            s.usage_period_id,
            customer_ref=s.customer_ref,
            metric=s.metric,
            period=s.period,
            target=line.target.value,
            stripe_customer_id=line.stripe_customer_id,
            meter_id=line.meter_id,
            local=out.local,
            stripe=out.stripe,
            expected=out.expected,
            cause=out.cause,
            closed=out.closed,
            actor=actor,
        )
        app = self.stores.app
        try:
            app.repository.get(finding.id)
        except AggregateNotFoundError:
            with contextlib.suppress(IntegrityError):  # another run recorded it meanwhile
                app.save(finding)

    def _read_stripe(self, line: _Line) -> None:
        try:
            line.stripe = self._summary(line)
        except StripeError as error:
            line.error = str(error)

    def _summary(self, line: _Line) -> int:
        """Stripe's total for the line's customer and meter over the period's whole minutes.

        Paced: each request once, through the account's ``PacedReads`` (a 429 waits its
        Retry-After and is tried again at the pace). Unpaced: the gateway's retries.
        """
        s = line.standing
        gateway, reads = self.gateway, self.reads
        if line.target is Target.SHADOW:
            assert self.shadow_gateway is not None  # lines without it are skipped
            gateway, reads = self.shadow_gateway, self.shadow_reads
        window = summary_window(s.period_start, s.period_end)

        def read() -> int:
            self.metrics.stripe_calls.inc()
            return gateway.meter_total(
                line.meter_id, line.stripe_customer_id, *window, retry=reads is None
            )

        return read() if reads is None else reads.read(read)

    def _classify(self, line: _Line, fresh: bool = False) -> ReportLine:
        s = line.standing
        mode = PUSH_MODE[s.aggregation].value
        local = whole_units(s.value)
        expected = stripe_expected(mode, s.confirmed_total, s.external_total, s.confirmed_value)
        out = ReportLine(
            customer_ref=s.customer_ref,
            metric=s.metric,
            period=s.period,
            period_start=s.period_start,
            period_end=s.period_end,
            stripe_customer_id=line.stripe_customer_id,
            meter_id=line.meter_id,
            local=local,
            stripe=line.stripe,
            expected=expected,
            difference=None if line.stripe is None else local - line.stripe,
            status=Status.PENDING.value,
            cause="",
            closed=s.closed,
            verdict=s.verdict,
            target=line.target.value,
        )
        if line.skipped is not None:
            return replace(out, status=Status.SKIPPED.value, cause=line.skipped.value)
        if line.stripe is None:
            return replace(out, cause=f"Stripe could not be read: {line.error}")
        standing = Standing(
            local=local,
            stripe=line.stripe,
            expected=expected,
            mode=mode,
            pending_value=s.pending_value,
            last_confirmed_at=s.last_confirmed_at,
            closed=s.closed,
            remapped=line.remapped,
        )
        status, cause = classify(standing, self.tolerance, self.clock())
        if status is not Status.OK and not fresh:
            # The views may lag the log: decide from the aggregates themselves.
            refreshed = self._fresh(line)
            if refreshed is not None:
                return self._classify(refreshed, fresh=True)
        return replace(out, status=status.value, cause=cause.value)

    def _fresh(self, line: _Line) -> _Line | None:
        """The same line with its numbers read from the event log instead of the views."""
        app = self.stores.app
        s = line.standing
        try:
            period: UsagePeriod = app.repository.get(s.usage_period_id)
        except AggregateNotFoundError:
            return None
        ledger = self._ledger(s.usage_period_id, line.target)
        pending = ledger.pending if ledger is not None else None
        remapped = self._remapped(ledger, line.event_name)
        standing = replace(
            s,
            value=period.value,
            confirmed_total=ledger.confirmed_total if ledger else 0,
            confirmed_value=ledger.confirmed_value if ledger else None,
            external_total=ledger.external_total if ledger else 0,
            pending_value=pending.value if pending is not None else None,
            last_confirmed_at=ledger.last_confirmed_at if ledger else None,
            closed=period.closed,
            verdict=period.verdict,
        )
        return replace(line, standing=standing, remapped=remapped)

    def _remapped(self, ledger: StripeLedger | None, event_name: str) -> bool:
        """Whether the ledger confirmed pushes to another meter than the mapped one."""
        if ledger is None or ledger.version == 0:
            return False
        events = self.stores.app.repository.event_store.get(ledger.id)
        return pushed_elsewhere(events, event_name)

    def _ledger(self, usage_period_id: UUID, target: Target) -> StripeLedger | None:
        try:
            ledger: StripeLedger = self.stores.app.repository.get(
                ledger_id_for(usage_period_id, target.value)
            )
        except AggregateNotFoundError:
            return None
        return ledger

    def _repair(self, line: _Line, out: ReportLine, actor: str) -> ReportLine:
        """Bring Stripe to the local counter, through the push path; report what Stripe then shows.

        Every number the repair acts on is read again here, in order: a
        pending push is settled first (resent as it was); then the ledger is
        loaded and Stripe read *after* it, so a push confirmed meanwhile can
        only make the ledger's save fail (the repair is then deferred), never
        make the difference look smaller than it is. A lower Stripe total
        within the summary lag of the last confirmation is lag, not drift.

        A shadow line is repaired on the shadow target alone: its ledger, its
        meter on the test account. Nothing there reaches an invoice, and the
        live side is never read or written by it.
        """
        target = line.target
        if target not in self.pusher.gateways:
            # Drift would be recorded on a ledger that this process could not push.
            missing = f"not repaired: this process has no {target} gateway"
            return replace(out, cause=f"{out.cause}; {missing}")
        s = line.standing
        period_id = s.usage_period_id
        mode = PUSH_MODE[s.aggregation].value
        reason = f"repair by {actor}: {out.cause or 'difference'}"
        ledger = self._ledger(period_id, target)
        if ledger is not None and ledger.pending is not None:
            self.pusher.push(period_id, target, reason=reason)
            ledger = self._ledger(period_id, target)
            pending = ledger.pending if ledger is not None else None
            if ledger is not None and pending is not None:
                if self.clock() - pending.recorded_at < DEDUP_WINDOW:
                    return replace(out, cause=f"{out.cause}; repair deferred: a push is pending")
                # Too old to resend, and Stripe's summary cannot tell whether it landed
                # (others wrote too): the operator's repair measures Stripe as it is, so
                # the intent is settled as not applied and the drift below covers it.
                ledger.abandon(
                    pending.number,
                    f"outcome unknowable from Stripe's summary; settled by a repair by {actor}",
                    permanent=False,
                )
        ledger = ledger or StripeLedger.open(s.tenant_id, period_id, target.value)
        stripe_now = self._stripe_total(line)
        if stripe_now is None:
            return replace(out, cause=f"{out.cause}; repair deferred: Stripe could not be read")
        expected = ledger.stripe_expected(mode)
        # Pushes confirmed to another meter are no lag of this one: Stripe never gets them.
        remapped = self._remapped(ledger, line.event_name)
        lagging = (
            not remapped
            and stripe_now < expected
            and ledger.last_confirmed_at is not None
            and self.clock() - ledger.last_confirmed_at < self.tolerance.summary_lag
        )
        if stripe_now != expected and not lagging:
            cause = Cause.OUTSIDE if stripe_now > expected else Cause.MISSING
            if remapped:
                cause = Cause.REMAPPED
            ledger.record_drift(stripe_now, expected, mode, actor, cause.value)
            try:
                self.stores.app.save(ledger)
            except IntegrityError:
                return replace(out, cause=f"{out.cause}; repair deferred: the ledger moved")
        outcome = self.pusher.push(period_id, target, reason=reason)
        after = self._stripe_total(line)
        log.warning(
            "reconciliation repair of %s/%s/%s (%s) by %s: %s (local %s, Stripe %s) -> push %s,"
            " Stripe now %s",
            s.customer_ref,
            s.metric,
            s.period,
            target.value,
            actor,
            out.cause,
            out.local,
            stripe_now,
            outcome.value,
            after,
        )
        if after == out.local:
            return replace(out, status=Status.REPAIRED.value)
        return replace(
            out, cause=f"{out.cause}; repair push {outcome.value}, Stripe now shows {after}"
        )

    def _stripe_total(self, line: _Line) -> int | None:
        try:
            return self._summary(line)
        except StripeError:
            return None

    def _observe(self, reports: list[Report], finished: datetime) -> None:
        lines = [line for report in reports for line in report.lines]
        # Per target: a shadow (test account) drift is worth a look, but it bills
        # nobody, so the alerts on live drift select target="live" alone.
        for target in Target:
            mine = [line for line in lines if line.target == target.value]
            for status in Status:
                self.metrics.reconciliation_lines.labels(target.value, status.value).set(
                    sum(1 for line in mine if line.status == status.value)
                )
            # A final invoice's mismatch is counted once, by periods_closed{verdict}, and
            # waits as an adjustment: it must not hold the drift alerts up for 35 days.
            drift = [
                line
                for line in mine
                if line.status == Status.DRIFT.value and line.difference and line.verdict is None
            ]
            causes = Counter(
                drift_cause(line.cause) for line in mine if line.status == Status.DRIFT.value
            )
            for cause in DRIFT_CAUSES:
                self.metrics.drift_lines.labels(target.value, cause).set(causes[cause])
            self.metrics.drift_units.labels(target.value).set(
                max((abs(line.difference or 0) for line in drift), default=0)
            )
            self.metrics.drift_ratio.labels(target.value).set(
                max(
                    (abs(line.difference or 0) / max(abs(line.local), 1) for line in drift),
                    default=0,
                )
            )
        self.metrics.reconciled_at.set(finished.timestamp())
        self.metrics.adjustments_pending.set(self.stores.views.adjustments.pending_count())
        counts = {s.value: sum(1 for line in lines if line.status == s.value) for s in Status}
        (log.warning if counts["drift"] else log.info)(
            "reconciliation: %d lines, %s", len(lines), counts
        )


def repairable(line: ReportLine) -> bool:
    """Whether a repair run acts on a report line: pending or drifting, its invoice not
    judged yet, and Stripe's total read (a repair measures Stripe as it is). The admin
    UI's repair preview lists exactly these lines."""
    return (
        line.status in (Status.PENDING, Status.DRIFT)
        and line.verdict is None
        and line.stripe is not None
    )


def drift_cause(cause: str) -> str:
    """A report line's cause as the metrics' bounded ``cause`` label (``DRIFT_CAUSES``).

    The text may carry more after the cause ("…; repair deferred: …"): its start says
    which one it is.
    """
    for known in Cause:
        if known.value and cause.startswith(known.value):
            name = known.name.lower()
            return name if name in DRIFT_CAUSES else "other"
    return "other"


def _month(standing: PeriodStanding) -> str:
    return standing.period_start.strftime("%Y-%m")


@dataclass
class Reconciliation:
    """What a process needs to reconcile and close periods, built from settings once."""

    reconciler: Reconciler
    closer: PeriodCloser

    @classmethod
    def build(
        cls,
        stores: Stores,
        settings: ReconcileSettings,
        gateway: StripeGateway,
        pusher: PushService,
        metrics: Metrics,
        clock: Callable[[], datetime],
    ) -> Reconciliation:
        """Shadow lines are read through the pusher's shadow gateway, the one their
        repairs push through (absent: STRIPE_TEST_SECRET_KEY is not set)."""
        tolerance = settings.tolerance()
        return cls(
            Reconciler(
                stores,
                gateway,
                pusher,
                metrics,
                tolerance,
                clock,
                settings.threads,
                settings.read_pace(),
                shadow_gateway=pusher.gateways.get(Target.SHADOW),
                shadow_pace=settings.shadow_read_pace(),
            ),
            PeriodCloser(
                stores,
                gateway,
                pusher,
                metrics,
                clock,
                grace=timedelta(seconds=settings.invoice_grace_seconds),
                margin=timedelta(seconds=settings.close_margin_seconds),
                summary_lag=tolerance.summary_lag,
            ),
        )
