"""UsageRecorder: exactly-once usage ingest, written for group commit.

One call takes the events of many concurrent requests and writes them in one
transaction, so the event store's per-transaction cost is paid once per
batch, not per event.

How it shares its ``MeteringApp``: the app is the one event store and the
tenant/customer service; the recorder reads tenants, metrics and billing
periods through the app's short-lived caches (``cached_tenant``,
``period_for``) and writes to the app's event store directly. Each app owns
exactly one recorder (``MeteringApp.usage_recorder``), because the recorder keeps
the only in-process copies of the usage periods it writes: its caches are
correct only while every write to a usage period in this process goes
through it, under its ingest lock — ingest (``record_usage``) and every other
change (``change_periods``) alike.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NamedTuple
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Snapshot
from eventsourcing.persistence import IntegrityError

from domain.adjustments import LatePolicy
from domain.caching import LruCache
from domain.caps import Cap, CapDecision, CapMode, decide
from domain.errors import ConflictError, InvalidInputError
from domain.history import count_history
from domain.idempotency import IdempotencyKey, claim_id
from domain.ingest import IngestResult, Lateness, Outcome, UsageSubmission
from domain.late_usage import correct_late, takes_corrections, why_late
from domain.meters import MetricDefinition
from domain.periods import BillingPeriod
from domain.tenancy import Tenant
from domain.usage import UsagePeriod, usage_period_id

if TYPE_CHECKING:
    from domain.application import MeteringApp

log = logging.getLogger("stripemeter.caps")

FUTURE_TOLERANCE = timedelta(minutes=5)
# A batch or a change that keeps colliding with another process is refused after this many tries.
WRITE_ATTEMPTS = 5
SNAPSHOT_EVERY = 100
ALREADY_CLAIMED = (Outcome.DUPLICATE, Outcome.CONFLICT)


class IngestContentionError(ConflictError):
    """A batch kept colliding with concurrent writers; nothing of it was written."""


class Write(NamedTuple):
    """A checked submission to write: its place, its metric, its key's claim, its cap.

    ``history``: sent as history and older than the ingest horizon (domain/history.py).
    """

    position: int
    metric: MetricDefinition
    claim_id: UUID
    cap: Cap | None
    history: bool = False


class Counted(NamedTuple):
    """What ``_count`` made of one submission: lateness, other aggregates' events, cap verdict."""

    late: Lateness | None
    events: Sequence[Any]
    cap: CapDecision | None


class Reached(NamedTuple):
    """A period that reached its cap in this batch (logged once the batch is committed)."""

    period: UsagePeriod
    cap: Cap
    value: Decimal


class UsageRecorder:
    """Records usage batches exactly once per tenant and key; changes usage periods safely."""

    def __init__(self, app: MeteringApp, period_cache_size: int, known_key_cache_size: int) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._periods: LruCache[UUID, UsagePeriod] = LruCache(period_cache_size)
        self._known_keys: LruCache[UUID, str] = LruCache(known_key_cache_size)
        # uuid5 costs microseconds; the writer asks for the same few ids all the time.
        self._period_ids: LruCache[tuple[UUID, str, str, str], UUID] = LruCache(period_cache_size)

    def record_usage(self, submissions: Sequence[UsageSubmission]) -> list[IngestResult]:
        """Record a batch of usage events in one transaction; one result per submission.

        Each event counts at most once per tenant and key, forever. A key seen
        before with the same content is a ``duplicate``; with other content a
        ``conflict``. Nothing is reported ``accepted`` unless it is committed.
        """
        with self._lock:
            return self._record_usage(submissions)

    def _record_usage(self, submissions: Sequence[UsageSubmission]) -> list[IngestResult]:
        results: list[IngestResult | None] = [None] * len(submissions)
        now = self.app.clock()
        checked: list[Write] = []
        # Each tenant read once per batch (the cached copy is seconds old anyway).
        tenants: dict[UUID, Tenant] = {}
        for index, item in enumerate(submissions):
            try:
                metric, cap, history = self._check(item, now, tenants)
            except InvalidInputError as error:
                results[index] = IngestResult.error(item.idempotency_key, error.field, error.reason)
                continue
            key = claim_id(item.tenant_id, item.idempotency_key, item.derived_key)
            checked.append(Write(index, metric, key, cap, history))

        for _ in range(WRITE_ATTEMPTS):
            claims: dict[UUID, int] = {}
            writes: list[Write] = []
            # (position, position of the same key's first, the key's claim)
            repeats: list[tuple[int, int, UUID]] = []
            for write in checked:
                seen: str | None
                if write.claim_id in claims:
                    first = claims[write.claim_id]
                    seen = submissions[first].fingerprint
                    repeats.append((write.position, first, write.claim_id))
                elif (seen := self._known_keys.get(write.claim_id)) is None:
                    claims[write.claim_id] = write.position
                    writes.append(write)
                    continue
                results[write.position] = _repeat(submissions[write.position], seen)
            if not writes:
                break
            try:
                written = self._write(submissions, writes, now)
            except IntegrityError:
                # Another writer got there first: a key was claimed or a period
                # moved on (its value too: caps are decided again on fresh copies).
                # Learn which keys exist, then decide the batch again.
                self._learn_keys(writes)
                continue
            for index, result in written:
                results[index] = result
            for position, first, claim in repeats:
                answer = results[first]
                if answer is not None and answer.outcome in ALREADY_CLAIMED:
                    # The first's key turned out claimed before (``_write``): so is this one's.
                    if (stored := self._known_keys.get(claim)) is not None:
                        results[position] = _repeat(submissions[position], stored)
                    continue
                # The same event twice in one batch, the first refused while writing (by a
                # cap, or as history its period cannot take): so is this one (its key was not
                # claimed, so "duplicate" would say it was counted). Only the first made its
                # period reach the cap.
                same = submissions[position].fingerprint == submissions[first].fingerprint
                if answer is not None and answer.outcome is Outcome.ERROR and same:
                    results[position] = dataclasses.replace(answer, cap_reached=None)
            break
        else:
            raise IngestContentionError(
                "the batch collided with concurrent writers too often; nothing was written"
            )
        return [r for r in results if r is not None]

    def _check(
        self, item: UsageSubmission, now: datetime, tenants: dict[UUID, Tenant]
    ) -> tuple[MetricDefinition, Cap | None, bool]:
        """The item's metric, the cap that applies to it, and whether it goes in as history.

        History (sent as history, older than the ingest horizon) is never capped.
        """
        tenant = tenants.get(item.tenant_id)
        if tenant is None:
            tenant = tenants[item.tenant_id] = self.app.cached_tenant(item.tenant_id)
        definition = tenant.metrics.get(item.metric)
        if definition is None:
            # Declared a moment ago by another process? Look once more, uncached.
            tenant = tenants[item.tenant_id] = self.app.tenant(item.tenant_id)
            definition = tenant.metrics.get(item.metric)
        if definition is None:
            raise InvalidInputError("metric", f"metric {item.metric!r} is not declared")
        if item.quantity < 0 and not definition.allow_negative:
            raise InvalidInputError(
                "quantity", f"must not be negative: metric {item.metric!r} takes no corrections"
            )
        if item.occurred_at > now + FUTURE_TOLERANCE:
            raise InvalidInputError("ts", "is more than 5 minutes in the future")
        horizon = tenant.ingest_horizon_days
        if item.occurred_at < now - timedelta(days=horizon):
            if item.history:
                return definition, None, True
            raise InvalidInputError(
                "ts",
                f"is older than the ingest horizon of {horizon} days before now"
                " (the tenant's setting: stripemeter tenants horizon)",
            )
        caps = tenant.caps.by_metric.get(item.metric)  # no caps: this lookup is all
        cap = caps.for_customer(item.customer_ref) if caps is not None else None
        return definition, cap, False

    def _write(
        self, submissions: Sequence[UsageSubmission], writes: list[Write], now: datetime
    ) -> list[tuple[int, IngestResult]]:
        """Write ``writes`` in one transaction; each one's result (accepted, or refused by a cap,
        or, where a cap would refuse it, a repeat of a key claimed before).

        Every cap is decided here, on the periods as this transaction writes
        them: a concurrent writer that moved one on makes the insert fail
        (the period's next version is taken), and the batch is decided again.
        """
        touched: dict[UUID, UsagePeriod] = {}
        # Per customer and metric, the period the batch last wrote: the next event of the
        # batch for them almost always falls in it too (see ``_period_at``).
        recent: dict[tuple[UUID, str, str], UsagePeriod] = {}
        # Events in request order: each usage event, then the claim on its key.
        events: list[Any] = []
        claims: list[IdempotencyKey.Claimed] = []
        out: list[tuple[int, IngestResult]] = []
        reached: list[Reached] = []
        reread: set[UUID] = set()
        writes_to: set[UUID] = set()  # periods this batch writes events to (version-checked)
        try:
            for index, metric, key_id, cap, history in writes:
                item = submissions[index]
                period = self._period_at(item, metric, item.occurred_at, touched, recent)
                written: Sequence[Any] = ()
                # Sent as history into a period already history (the horizon falls inside
                # it): history too, never late usage carried into the open period and billed.
                if history or (item.history and period.history):
                    result = count_history(item, period, now)
                    if result.outcome is Outcome.ERROR:
                        # Refused (its period is live, or open), unless counted before.
                        out.append((index, self._counted_before(item, key_id) or result))
                        continue
                else:
                    late, written, decision = self._count(
                        item, metric, cap, period, now, touched, recent
                    )
                    if (
                        decision is not None
                        and decision.refused is not None
                        and period.id not in reread
                        and period.id not in writes_to
                        and not period.pending_events
                    ):
                        # A refusal writes nothing to its period, so no version check would
                        # catch a copy another process has moved on since (a correction that
                        # lowered it): decide once more on the period as stored. Once per
                        # period and batch, and only where a cap refuses.
                        reread.add(period.id)
                        period = self._reread(item, period, touched, recent)
                        late, written, decision = self._count(
                            item, metric, cap, period, now, touched, recent
                        )
                    if decision is not None:
                        assert cap is not None
                        if (
                            decision.refused is not None
                            and (repeat := self._counted_before(item, key_id)) is not None
                        ):
                            out.append((index, repeat))
                            continue
                        result = _capped(item, cap, decision, late)
                        if decision.reached_value is not None:
                            reached.append(Reached(period, cap, decision.reached_value))
                        if decision.refused is not None:
                            # Nothing counted and the key not claimed (a retry may pass once the
                            # cap is raised); a first refusal records CapReached.
                            if decision.reached_value is not None:
                                period.record_cap_reached(
                                    cap.mode.value, cap.limit, decision.reached_value
                                )
                            events.extend(period.collect_events())
                            writes_to.add(period.id)
                            out.append((index, result))
                            continue
                    else:
                        result = IngestResult(
                            Outcome.ACCEPTED, item.idempotency_key, None, None, late
                        )
                if written:
                    events.extend(written)
                    writes_to.update(e.originator_id for e in written)
                claim = IdempotencyKey.claimed(
                    key_id,
                    item.tenant_id,
                    item.idempotency_key,
                    item.fingerprint,
                    period.id,
                    period.version,
                )
                events.extend(period.collect_events())
                writes_to.add(period.id)
                events.append(claim)
                claims.append(claim)
                out.append((index, result))
            # The recorder directly, not Application.save nor even the event store's
            # put: the events are already in order and of known types, and neither
            # save's generic path (runtime protocol checks, snapshots re-read from the
            # database) nor put's notification objects for each event, which nothing
            # here reads, are worth their cost at this volume.
            events_store = self.app.events
            events_store.recorder.insert_events(
                list(map(events_store.mapper.to_stored_event, events))
            )
        except BaseException:
            # The cached periods now hold events that were never stored.
            for period_id in touched:
                self._periods.pop(period_id)
            raise
        for claim in claims:
            self._known_keys.put(claim.originator_id, claim.fingerprint)
        self._snapshot(touched.values(), events)
        for period, cap, value in reached:
            _log_reached(period, cap, value)
        return out

    def _counted_before(self, item: UsageSubmission, key_id: UUID) -> IngestResult | None:
        """For an item this batch refuses (a cap, or history its period cannot take): its
        key's earlier answer if a writer that did not know the key (another process, or
        before a restart) counted it. A refusal claims nothing, so no claim's collision
        would tell; looked up on refusals only (rare)."""
        seen = self._stored_claim(key_id)
        return _repeat(item, seen) if seen is not None else None

    def _count(
        self,
        item: UsageSubmission,
        metric: MetricDefinition,
        cap: Cap | None,
        period: UsagePeriod,
        now: datetime,
        touched: dict[UUID, UsagePeriod],
        recent: dict[tuple[UUID, str, str], UsagePeriod],
    ) -> Counted:
        """Count ``item`` in ``period`` unless ``cap`` refuses it, or correct it when late.

        A cap is decided for usage that counts in its own period (on time or
        inside the lateness window); usage past the window becomes a
        correction, which no cap refuses (domain/caps.py says why).
        """
        why = why_late(period, metric, now)
        if why is None:
            decision = None
            if cap is not None:
                decision = decide(cap, period, item.quantity, item.occurred_at)
                if decision is not None and decision.refused is not None:
                    # Nothing recorded: the caller first checks that the key is not
                    # already claimed, then records CapReached (``_write``).
                    return Counted(None, (), decision)
            late = Lateness.IN_WINDOW if now >= period.period_end else None
            period.record_usage(
                item.idempotency_key,
                item.quantity,
                item.occurred_at,
                item.meta,
                late=late is not None,
            )
            if decision is not None and decision.reached_value is not None:
                assert cap is not None
                period.record_cap_reached(cap.mode.value, cap.limit, decision.reached_value)
            return Counted(late, (), decision)
        policy = LatePolicy(self.app.cached_tenant(item.tenant_id).late_policy)
        open_period = None
        if policy is LatePolicy.CARRY_FORWARD and takes_corrections(metric):
            open_period = self._period_at(item, metric, now, touched, recent)
        correction = correct_late(item, metric, period, why, policy, open_period, now)
        return Counted(correction.lateness, correction.events, None)

    def _reread(
        self,
        item: UsageSubmission,
        period: UsagePeriod,
        touched: dict[UUID, UsagePeriod],
        recent: dict[tuple[UUID, str, str], UsagePeriod],
    ) -> UsagePeriod:
        """``period`` as stored now (it holds nothing unwritten), in place of the cached copy."""
        stored: UsagePeriod = self.app.repository.get(period.id)
        self._periods.put(period.id, stored)
        touched[period.id] = stored
        recent[(item.tenant_id, item.customer_ref, item.metric)] = stored
        return stored

    def _snapshot(self, periods: Iterable[UsagePeriod], events: list[Any]) -> None:
        """Snapshot busy periods from memory, so that re-reading one stays short."""
        if self.app.snapshots is None:
            return
        crossed = {e.originator_id for e in events if e.originator_version % SNAPSHOT_EVERY == 0}
        snapshots = [Snapshot.take(p) for p in periods if p.id in crossed]
        if snapshots:
            self.app.snapshots.put(snapshots)

    def _period_at(
        self,
        item: UsageSubmission,
        metric: MetricDefinition,
        moment: datetime,
        touched: dict[UUID, UsagePeriod],
        recent: dict[tuple[UUID, str, str], UsagePeriod],
    ) -> UsagePeriod:
        """The item's customer's period of its metric containing ``moment``, opened when new.

        Within one batch, a period the batch already holds for this customer and
        metric is taken when it holds ``moment``, without asking the customer's
        cycle again: the batch then reads the customer's cycle once, as of its
        first event for that customer (the copy it reads is up to
        ``TENANT_CACHE_SECONDS`` old anyway), and skips the cycle arithmetic and
        id lookups per event. Nothing else can change a period mid-batch: every
        change in this process takes the recorder's lock.
        """
        key = (item.tenant_id, item.customer_ref, item.metric)
        period = recent.get(key)
        if period is not None and period.holds(moment):
            return period
        period = self._period_for(item, metric, moment, touched)
        if not period.holds(moment):
            # The customer's billing cycle changed (domain/cycle_moves.py) after this
            # process cached the customer: read it again, and the period with it.
            self.app.customer(item.tenant_id, item.customer_ref)
            period = self._period_for(item, metric, moment, touched)
        recent[key] = period
        return period

    def _period_for(
        self,
        item: UsageSubmission,
        metric: MetricDefinition,
        moment: datetime,
        touched: dict[UUID, UsagePeriod],
    ) -> UsagePeriod:
        billing_period = self.app.period_for(item.tenant_id, item.customer_ref, moment)
        natural_key = (item.tenant_id, item.customer_ref, item.metric, billing_period.key)
        period_id = self._period_ids.get(natural_key)
        if period_id is None:
            period_id = usage_period_id(*natural_key)
            self._period_ids.put(natural_key, period_id)
        period: UsagePeriod | None = touched.get(period_id) or self._periods.get(period_id)
        if period is None:
            try:
                period = self.app.repository.get(period_id)
            except AggregateNotFoundError:
                fresh = self.app.customer(item.tenant_id, item.customer_ref)
                if fresh is not None and fresh.period_of(moment).key != billing_period.key:
                    # A new period is rare: before opening one, check the customer's cycle
                    # as stored (a mapping may have changed it since this copy was read).
                    return self._period_for(item, metric, moment, touched)
                period = UsagePeriod.open(
                    item.tenant_id,
                    item.customer_ref,
                    item.metric,
                    metric.aggregation,
                    billing_period,
                )
            self._periods.put(period_id, period)
        touched[period_id] = period
        return period

    def _learn_keys(self, writes: Iterable[Write]) -> None:
        for write in writes:
            self._stored_claim(write.claim_id)

    def _stored_claim(self, claim_id: UUID) -> str | None:
        """The fingerprint of the key's stored claim (now known to this writer), or None."""
        try:
            claim: IdempotencyKey = self.app.repository.get(claim_id)
        except AggregateNotFoundError:
            return None
        self._known_keys.put(claim_id, claim.fingerprint)
        return claim.fingerprint

    # -- changes beside ingest: corrections, closing ----------------------------

    def change_periods(self, change: Callable[[PeriodLoader], Sequence[Any]]) -> Sequence[Any]:
        """Apply ``change`` to fresh copies of usage periods and save what it returns, atomically.

        ``change`` loads the periods it needs through the loader it is given
        and returns every aggregate to save. A concurrent write (the writer
        counting usage in the same period) makes the save fail; the change is
        then decided again on fresh copies. The recorder's cached copies of
        the periods are dropped, so that ingest reads what was saved.
        """
        for _ in range(WRITE_ATTEMPTS):
            with self._lock:
                loader = PeriodLoader(self.app)
                aggregates = change(loader)
                try:
                    if aggregates:
                        self.app.save(*aggregates)
                except IntegrityError:
                    continue
                finally:
                    for period_id in loader.loaded:
                        self._periods.pop(period_id)
                return aggregates
        raise ConflictError("those usage periods are being written concurrently; try again")


def _capped(
    item: UsageSubmission, cap: Cap, decision: CapDecision, late: Lateness | None
) -> IngestResult:
    """The result of an event a cap was decided for: refused, or accepted (marked past soft)."""
    reached = cap.mode if decision.reached_value is not None else None
    if decision.refused is not None:
        return IngestResult(
            Outcome.ERROR,
            item.idempotency_key,
            field="quantity",
            reason=decision.refused,
            cap=CapMode.HARD,
            cap_reached=reached,
        )
    return IngestResult(
        Outcome.ACCEPTED,
        item.idempotency_key,
        late=late,
        cap=CapMode.SOFT if decision.past_soft else None,
        cap_reached=reached,
    )


def _log_reached(period: UsagePeriod, cap: Cap, value: Decimal) -> None:
    """A committed cap crossing, for an operator: whose, which cap, and what happens now."""
    effect = (
        "further usage that would pass it is refused until the cap is raised or the period ends"
        if cap.mode is CapMode.HARD
        else "usage is still accepted, marked cap=soft"
    )
    log.warning(
        "%s cap reached: tenant %s, customer %r, metric %s, period %s: value %s, limit %s (%s); %s",
        cap.mode.value,
        period.tenant_id,
        period.customer_ref,
        period.metric,
        period.period,
        value,
        cap.limit,
        "the customer's own cap" if cap.customer_ref is not None else "the metric-wide cap",
        effect,
    )


def _repeat(item: UsageSubmission, seen_fingerprint: str) -> IngestResult:
    """A key already claimed: the same content is a duplicate, other content a conflict."""
    if seen_fingerprint == item.fingerprint:
        return IngestResult(Outcome.DUPLICATE, item.idempotency_key)
    return IngestResult(
        Outcome.CONFLICT,
        item.idempotency_key,
        field="idempotencyKey",
        reason="this key was already used for an event with different content",
    )


class PeriodLoader:
    """Fresh usage periods for ``UsageRecorder.change_periods`` (never the recorder's cache)."""

    def __init__(self, app: MeteringApp) -> None:
        self.app = app
        self.loaded: list[UUID] = []

    def get(self, period_id: UUID) -> UsagePeriod:
        period: UsagePeriod = self.app.repository.get(period_id)
        self.loaded.append(period_id)
        return period

    def at(self, tenant_id: UUID, customer_ref: str, metric: str, moment: datetime) -> UsagePeriod:
        """The customer's period of ``metric`` containing ``moment``, opened when new."""
        definition = self.app.cached_tenant(tenant_id).metric(metric)
        billing_period = self.app.period_for(tenant_id, customer_ref, moment)
        period = self.period(tenant_id, customer_ref, definition, billing_period)
        if not period.holds(moment):
            # The customer's cycle changed a moment ago (this process's copy is older).
            self.app.customer(tenant_id, customer_ref)
            billing_period = self.app.period_for(tenant_id, customer_ref, moment)
            period = self.period(tenant_id, customer_ref, definition, billing_period)
        return period

    def period(
        self,
        tenant_id: UUID,
        customer_ref: str,
        metric: MetricDefinition,
        billing_period: BillingPeriod,
    ) -> UsagePeriod:
        """The customer's usage period of ``metric`` for ``billing_period``, opened when new."""
        period_id = usage_period_id(tenant_id, customer_ref, metric.name, billing_period.key)
        self.loaded.append(period_id)
        try:
            period: UsagePeriod = self.app.repository.get(period_id)
        except AggregateNotFoundError:
            period = UsagePeriod.open(
                tenant_id, customer_ref, metric.name, metric.aggregation, billing_period
            )
        return period
