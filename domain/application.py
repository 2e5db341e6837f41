"""MeteringApp: the service layer over the event store.

Ingest (``record_usage``) is written for group commit: one call takes the
events of many concurrent requests and writes them in one transaction, so
the event store's per-transaction cost is paid once per batch, not per event.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Snapshot
from eventsourcing.persistence import IntegrityError, JSONTranscoder

from domain.adjustments import Adjustment, LatePolicy, late_adjustment_id
from domain.customers import Customer, customer_id_for
from domain.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    UnauthenticatedError,
)
from domain.idempotency import IdempotencyKey, claim_id
from domain.ingest import IngestResult, Lateness, Outcome, UsageSubmission
from domain.ledger import IntentAsDict, StripeLedger
from domain.mappings import MeterMapping
from domain.meters import Aggregation, MetricDefinition
from domain.periods import BillingPeriod, period_of
from domain.tenancy import (
    ApiKey,
    Principal,
    Scope,
    Tenant,
    api_key_id_for,
    new_key_secret,
    tenant_id_for,
)
from domain.usage import UsagePeriod, usage_period_id

FUTURE_TOLERANCE = timedelta(minutes=5)
TENANT_CACHE_SECONDS = 5.0
SAVE_ATTEMPTS = 5
SNAPSHOT_EVERY = 100
LATE_POLICY_ACTOR = "system:late-policy"


Write = tuple[int, MetricDefinition, UUID]
"""A submission to write: its index in the batch, its metric and its key's claim id."""


class IngestContentionError(ConflictError):
    """A batch kept colliding with concurrent writers; nothing of it was written."""


@dataclass(frozen=True)
class IssuedKey:
    key_id: UUID
    secret: str
    display_prefix: str
    scopes: frozenset[Scope]


def utc_now() -> datetime:
    return datetime.now(UTC)


class _LRU:
    """A small least-recently-used map; only ever touched under a lock."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.items: OrderedDict[UUID, Any] = OrderedDict()

    def get(self, key: UUID) -> Any:
        value = self.items.get(key)
        if value is not None:
            self.items.move_to_end(key)
        return value

    def put(self, key: UUID, value: Any) -> None:
        self.items[key] = value
        self.items.move_to_end(key)
        while len(self.items) > self.maxsize:
            self.items.popitem(last=False)

    def pop(self, key: UUID) -> None:
        self.items.pop(key, None)


class MeteringApp(Application[UUID]):
    """Tenants, metrics, keys and exactly-once usage ingest."""

    name = "stripemeter"
    # Usage periods are snapshotted by _write from memory (see _snapshot); a
    # ledger grows by three events per push, so it is snapshotted on save.
    snapshotting_intervals = {StripeLedger: 60}

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcoder.register(IntentAsDict())

    def __init__(
        self,
        env: dict[str, str] | None = None,
        clock: Callable[[], datetime] = utc_now,
        period_cache_size: int = 20_000,
        known_key_cache_size: int = 200_000,
    ) -> None:
        super().__init__(env)
        self.clock = clock
        self._ingest_lock = threading.Lock()
        self._tenant_lock = threading.Lock()
        self._tenants: dict[UUID, tuple[float, Tenant]] = {}
        self._customers: dict[tuple[UUID, str], tuple[float, Customer | None]] = {}
        # uuid5 costs microseconds; the writer asks for the same few ids all the time.
        self._period_ids: dict[tuple[UUID, str, str, str], UUID] = {}
        self._periods = _LRU(period_cache_size)
        self._known_keys = _LRU(known_key_cache_size)

    # -- tenants, metrics, keys -------------------------------------------

    def register_tenant(self, slug: str, display_name: str) -> Tenant:
        """Register a tenant under a unique slug; refused when the slug is taken."""
        tenant = Tenant.register(slug, display_name)
        try:
            self.save(tenant)
        except IntegrityError:
            raise ConflictError(f"tenant {slug!r} already exists") from None
        return tenant

    def tenant(self, tenant_id: UUID) -> Tenant:
        """The tenant as stored, which also refreshes this process's cached copy."""
        tenant = self.fresh_tenant(tenant_id)
        with self._tenant_lock:
            self._tenants[tenant_id] = (time.monotonic(), tenant)
        return tenant

    def fresh_tenant(self, tenant_id: UUID) -> Tenant:
        """A copy of the tenant to change: never the cached one that pushes and ingest read."""
        try:
            tenant: Tenant = self.repository.get(tenant_id)
        except AggregateNotFoundError:
            raise NotFoundError(f"tenant {tenant_id} does not exist") from None
        return tenant

    def tenant_by_slug(self, slug: str) -> Tenant:
        return self.tenant(tenant_id_for(slug))

    def cached_tenant(self, tenant_id: UUID) -> Tenant:
        with self._tenant_lock:
            cached = self._tenants.get(tenant_id)
        if cached is not None and time.monotonic() - cached[0] < TENANT_CACHE_SECONDS:
            return cached[1]
        return self.tenant(tenant_id)

    def declare_metric(self, tenant_id: UUID, definition: MetricDefinition) -> bool:
        """Declare a metric for a tenant. True when new; False when identical to one declared."""
        return self._change_tenant(tenant_id, lambda tenant: tenant.declare_metric(definition))

    def set_late_policy(self, tenant_id: UUID, policy: str) -> bool:
        """Choose what happens to usage for a closed period (carry_forward or hold)."""
        return self._change_tenant(tenant_id, lambda tenant: tenant.set_late_policy(policy))

    def set_ingest_horizon(self, tenant_id: UUID, days: int) -> bool:
        """How many days before now an event's ``ts`` may lie; older events are refused."""
        return self._change_tenant(tenant_id, lambda tenant: tenant.set_ingest_horizon(days))

    def map_meter(self, tenant_id: UUID, mapping: MeterMapping) -> bool:
        """Map a declared metric to a Stripe meter, claiming nothing (as before claims existed).

        ``StripeMappingService`` is the way in for callers: it checks the meter
        against Stripe and claims it (domain/ownership.py).
        """
        return self._change_tenant(tenant_id, lambda tenant: tenant.map_meter(mapping))

    def _change_tenant(self, tenant_id: UUID, change: Callable[[Tenant], bool]) -> bool:
        """Apply ``change`` to a fresh copy and save it; True when it changed anything."""
        for _ in range(SAVE_ATTEMPTS):
            tenant = self.fresh_tenant(tenant_id)
            if not change(tenant):
                return False
            try:
                self.save(tenant)
            except IntegrityError:
                continue  # another process changed the tenant meanwhile: decide again
            self.tenant(tenant_id)
            return True
        raise ConflictError("the tenant is being changed concurrently; try again")

    # -- customers ----------------------------------------------------------

    def customer(self, tenant_id: UUID, customer_ref: str) -> Customer | None:
        """The customer's Stripe mapping, or None when never mapped (see ``Customer.mapped``).

        Also refreshes this process's cached copy.
        """
        customer = self.fresh_customer(tenant_id, customer_ref)
        with self._tenant_lock:
            if len(self._customers) > 100_000:
                self._customers.clear()
            self._customers[(tenant_id, customer_ref)] = (time.monotonic(), customer)
        return customer

    def fresh_customer(self, tenant_id: UUID, customer_ref: str) -> Customer | None:
        """A copy of the customer to change: never the cached one that pushes read."""
        try:
            customer: Customer = self.repository.get(customer_id_for(tenant_id, customer_ref))
        except AggregateNotFoundError:
            return None
        return customer

    def cached_customer(self, tenant_id: UUID, customer_ref: str) -> Customer | None:
        with self._tenant_lock:
            cached = self._customers.get((tenant_id, customer_ref))
        if cached is not None and time.monotonic() - cached[0] < TENANT_CACHE_SECONDS:
            return cached[1]
        return self.customer(tenant_id, customer_ref)

    def period_for(self, tenant_id: UUID, customer_ref: str, moment: datetime) -> BillingPeriod:
        """The customer's billing period containing ``moment`` (their Stripe cycle once mapped)."""
        customer = self.cached_customer(tenant_id, customer_ref)
        return customer.period_of(moment) if customer else period_of(moment)

    def map_customer(
        self,
        tenant_id: UUID,
        customer_ref: str,
        stripe_customer_id: str,
        billing_cycle_anchor: datetime | None,
        shadow_stripe_customer_id: str | None = None,
    ) -> tuple[Customer, bool]:
        """Map a customer to Stripe, claiming nothing; True when new or changed.

        ``StripeMappingService`` is the way in for callers: it checks the ids
        against Stripe and claims them (domain/ownership.py). This is the bare
        mapping, as it was recorded before claims existed.
        """
        customer, changed = self.prepare_customer_mapping(
            tenant_id,
            customer_ref,
            stripe_customer_id,
            billing_cycle_anchor,
            shadow_stripe_customer_id,
        )
        if changed:
            try:
                self.save(customer)
            except IntegrityError:
                raise ConflictError(f"customer {customer_ref!r} was mapped concurrently") from None
        self.customer(tenant_id, customer_ref)
        return customer, changed

    def prepare_customer_mapping(
        self,
        tenant_id: UUID,
        customer_ref: str,
        stripe_customer_id: str,
        billing_cycle_anchor: datetime | None,
        shadow_stripe_customer_id: str | None = None,
    ) -> tuple[Customer, bool]:
        """A fresh customer with the mapping applied, unsaved; True when new or changed.

        The billing cycle is fixed at the first mapping and only allowed while
        the customer has no usage in a period that is still open: moving usage
        between periods after the fact would make the count and the invoice
        cover different intervals.
        """
        existing = self.fresh_customer(tenant_id, customer_ref)
        if existing is not None:
            if existing.billing_cycle_anchor != billing_cycle_anchor:
                raise ConflictError(
                    f"customer {customer_ref!r} is already mapped with another billing cycle anchor"
                )
            return existing, existing.remap(stripe_customer_id, shadow_stripe_customer_id)
        self._refuse_if_usage_is_open(tenant_id, customer_ref)
        customer = Customer.map(
            tenant_id,
            customer_ref,
            stripe_customer_id,
            billing_cycle_anchor,
            shadow_stripe_customer_id,
        )
        return customer, True

    def _refuse_if_usage_is_open(self, tenant_id: UUID, customer_ref: str) -> None:
        now = self.clock()
        for definition in self.tenant(tenant_id).metrics.values():
            oldest_open = now - timedelta(seconds=definition.lateness_seconds)
            for moment in {
                period_of(now).key: now,
                period_of(oldest_open).key: oldest_open,
            }.values():
                period_id = usage_period_id(
                    tenant_id, customer_ref, definition.name, period_of(moment).key
                )
                try:
                    self.repository.get(period_id)
                except AggregateNotFoundError:
                    continue
                raise ConflictError(
                    f"customer {customer_ref!r} already has {definition.name!r} usage in the open"
                    f" period {period_of(moment).key}; map customers before sending their usage"
                )

    def metrics(self, tenant_id: UUID) -> list[MetricDefinition]:
        return sorted(self.tenant(tenant_id).metrics.values(), key=lambda m: m.name)

    def metric(self, tenant_id: UUID, name: str) -> MetricDefinition:
        return self.tenant(tenant_id).metric(name)

    def issue_api_key(self, tenant_id: UUID, scopes: frozenset[Scope]) -> IssuedKey:
        """Issue a key for a tenant. The secret is in the result and nowhere else."""
        for _ in range(SAVE_ATTEMPTS):
            tenant = self.fresh_tenant(tenant_id)
            secret = new_key_secret()
            key = ApiKey.issue(tenant_id, tenant.slug, secret, scopes)
            tenant.record_key(key.id, key.display_prefix, scopes)
            try:
                self.save(tenant, key)
            except IntegrityError:
                continue
            return IssuedKey(key.id, secret, key.display_prefix, scopes)
        raise ConflictError("the tenant is being changed concurrently; try again")

    def revoke_api_key(self, tenant_id: UUID, key_id: UUID, reason: str) -> None:
        """Revoke a key of this tenant. Another tenant's key is 'not found', never revoked."""
        try:
            key: ApiKey = self.repository.get(key_id)
        except AggregateNotFoundError:
            raise NotFoundError(f"api key {key_id} does not exist") from None
        if key.tenant_id != tenant_id:
            raise NotFoundError(f"api key {key_id} does not exist")
        key.revoke(reason)
        self.save(key)

    def authenticate(self, secret: str) -> Principal:
        """The principal a presented secret acts for; revoked and unknown keys are refused."""
        try:
            key: ApiKey = self.repository.get(api_key_id_for(secret))
        except AggregateNotFoundError:
            raise UnauthenticatedError("unknown API key") from None
        if key.revoked:
            raise UnauthenticatedError("this API key was revoked")
        return Principal(
            tenant_id=key.tenant_id, tenant_slug=key.tenant_slug, key_id=key.id, scopes=key.scopes
        )

    # -- ingest -----------------------------------------------------------

    def record_usage(self, submissions: Sequence[UsageSubmission]) -> list[IngestResult]:
        """Record a batch of usage events in one transaction; one result per submission.

        Each event counts at most once per tenant and key, forever. A key seen
        before with the same content is a ``duplicate``; with other content a
        ``conflict``. Nothing is reported ``accepted`` unless it is committed.
        """
        with self._ingest_lock:
            return self._record_usage(submissions)

    def _record_usage(self, submissions: Sequence[UsageSubmission]) -> list[IngestResult]:
        results: list[IngestResult | None] = [None] * len(submissions)
        now = self.clock()
        checked: list[Write] = []
        for index, item in enumerate(submissions):
            try:
                metric = self._check(item, now)
            except InvalidInputError as error:
                results[index] = IngestResult.error(item.idempotency_key, error.field, error.reason)
                continue
            checked.append(
                (index, metric, claim_id(item.tenant_id, item.idempotency_key, item.derived_key))
            )

        for _ in range(SAVE_ATTEMPTS):
            claims: dict[UUID, int] = {}
            writes: list[Write] = []
            for index, metric, key_id in checked:
                item = submissions[index]
                if key_id in claims:
                    seen = submissions[claims[key_id]].fingerprint
                elif (seen := self._known_keys.get(key_id)) is None:
                    claims[key_id] = index
                    writes.append((index, metric, key_id))
                    continue
                results[index] = self._repeat(item, seen)
            if not writes:
                break
            try:
                accepted = self._write(submissions, writes, now)
            except IntegrityError:
                # Another writer got there first: a key was claimed or a period
                # moved on. Learn which keys exist, then decide the batch again.
                self._learn_keys(submissions, [i for i, _, _ in writes])
                continue
            for index, late in accepted:
                item = submissions[index]
                results[index] = IngestResult(Outcome.ACCEPTED, item.idempotency_key, late=late)
            break
        else:
            raise IngestContentionError(
                "the batch collided with concurrent writers too often; nothing was written"
            )
        return [r for r in results if r is not None]

    def _check(self, item: UsageSubmission, now: datetime) -> MetricDefinition:
        tenant = self.cached_tenant(item.tenant_id)
        definition = tenant.metrics.get(item.metric)
        if definition is None:
            # Declared a moment ago by another process? Look once more, uncached.
            definition = self.tenant(item.tenant_id).metrics.get(item.metric)
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
            raise InvalidInputError(
                "ts",
                f"is older than the ingest horizon of {horizon} days before now"
                " (the tenant's setting: stripemeter tenants horizon)",
            )
        return definition

    @staticmethod
    def _repeat(item: UsageSubmission, seen_fingerprint: str) -> IngestResult:
        if seen_fingerprint == item.fingerprint:
            return IngestResult(Outcome.DUPLICATE, item.idempotency_key)
        return IngestResult(
            Outcome.CONFLICT,
            item.idempotency_key,
            field="idempotencyKey",
            reason="this key was already used for an event with different content",
        )

    def _write(
        self,
        submissions: Sequence[UsageSubmission],
        writes: list[Write],
        now: datetime,
    ) -> list[tuple[int, Lateness | None]]:
        touched: dict[UUID, UsagePeriod] = {}
        # Events in request order: each usage event, then the claim on its key.
        events: list[Any] = []
        claims: list[IdempotencyKey.Claimed] = []
        accepted: list[tuple[int, Lateness | None]] = []
        try:
            for index, metric, key_id in writes:
                item = submissions[index]
                period = self._period(item, metric, touched)
                closes_at = period.period_end + timedelta(seconds=metric.lateness_seconds)
                late: Lateness | None
                if period.closed or now >= closes_at:
                    why = (
                        f"its period {period.period} is closed for invoicing"
                        if period.closed
                        else "it arrived after the lateness window closed at "
                        + closes_at.isoformat()
                    )
                    late = self._correct_late(item, metric, period, why, now, touched, events)
                else:
                    late = Lateness.IN_WINDOW if now >= period.period_end else None
                    period.record_usage(
                        item.idempotency_key,
                        item.quantity,
                        item.occurred_at,
                        item.meta,
                        late=late is not None,
                    )
                claim = IdempotencyKey.claimed(
                    key_id,
                    item.tenant_id,
                    item.idempotency_key,
                    item.fingerprint,
                    period.id,
                    period.version,
                )
                events.extend(period.collect_events())
                events.append(claim)
                claims.append(claim)
                accepted.append((index, late))
            # The event store directly, not Application.save: the events are
            # already in order and of known types, and save's generic path
            # (runtime protocol checks, snapshots re-read from the database)
            # costs more than the write itself at this volume.
            self.events.put(events)
        except BaseException:
            # The cached periods now hold events that were never stored.
            for period_id in touched:
                self._periods.pop(period_id)
            raise
        for claim in claims:
            self._known_keys.put(claim.originator_id, claim.fingerprint)
        self._snapshot(touched.values(), events)
        return accepted

    def _snapshot(self, periods: Iterable[UsagePeriod], events: list[Any]) -> None:
        """Snapshot busy periods from memory, so that re-reading one stays short."""
        if self.snapshots is None:
            return
        crossed = {e.originator_id for e in events if e.originator_version % SNAPSHOT_EVERY == 0}
        snapshots = [Snapshot.take(p) for p in periods if p.id in crossed]
        if snapshots:
            self.snapshots.put(snapshots)

    def _correct_late(
        self,
        item: UsageSubmission,
        metric: MetricDefinition,
        period: UsagePeriod,
        why: str,
        now: datetime,
        touched: dict[UUID, UsagePeriod],
        events: list[Any],
    ) -> Lateness:
        """Usage for a closed period: kept there, uncounted, and corrected per the tenant's policy.

        The late event, its adjustment and (carried) the correction in the open
        period are written in the same transaction as the key's claim, so the
        correction happens exactly once.
        """
        if metric.aggregation in (Aggregation.MAX, Aggregation.LAST):
            period.record_late_usage(
                item.idempotency_key,
                item.quantity,
                item.occurred_at,
                item.meta,
                reason=f"not counted: {why};"
                f" a {metric.aggregation.value} metric takes no corrections",
            )
            return Lateness.PAST_WINDOW
        policy = LatePolicy(self.cached_tenant(item.tenant_id).late_policy)
        adjustment = Adjustment.propose(
            late_adjustment_id(item.tenant_id, item.idempotency_key, item.derived_key),
            item.tenant_id,
            item.customer_ref,
            item.metric,
            item.quantity,
            1,
            source_period=period.period,
            source_key=item.idempotency_key,
            actor=LATE_POLICY_ACTOR,
            reason=f"late usage: {why}",
            now=now,
        )
        target = None
        if policy is LatePolicy.CARRY_FORWARD:
            target = self._period_at(
                item.tenant_id, item.customer_ref, item.metric, metric, now, touched
            )
            if target.closed:  # closed early by hand: nowhere open to carry it, so it waits
                target = None
        if target is None:
            outcome = Lateness.HELD
            kept = f"held for approval as adjustment {adjustment.id}"
        else:
            adjustment.approve(LATE_POLICY_ACTOR, "tenant policy carry_forward", target.period)
            target.apply_correction(
                adjustment.id, item.quantity, 1, f"late usage: {why}", period.period
            )
            events.extend(target.collect_events())
            outcome = Lateness.CARRIED
            kept = f"carried into period {target.period} as adjustment {adjustment.id}"
        period.record_late_usage(
            item.idempotency_key,
            item.quantity,
            item.occurred_at,
            item.meta,
            reason=f"{why}; {kept}",
        )
        events.extend(adjustment.collect_events())
        return outcome

    def _period(
        self, item: UsageSubmission, metric: MetricDefinition, touched: dict[UUID, UsagePeriod]
    ) -> UsagePeriod:
        return self._period_at(
            item.tenant_id, item.customer_ref, item.metric, metric, item.occurred_at, touched
        )

    def _period_at(
        self,
        tenant_id: UUID,
        customer_ref: str,
        metric_name: str,
        metric: MetricDefinition,
        moment: datetime,
        touched: dict[UUID, UsagePeriod],
    ) -> UsagePeriod:
        billing_period = self.period_for(tenant_id, customer_ref, moment)
        natural_key = (tenant_id, customer_ref, metric_name, billing_period.key)
        period_id = self._period_ids.get(natural_key)
        if period_id is None:
            if len(self._period_ids) > 100_000:
                self._period_ids.clear()
            period_id = self._period_ids[natural_key] = usage_period_id(*natural_key)
        period: UsagePeriod | None = touched.get(period_id) or self._periods.get(period_id)
        if period is None:
            try:
                period = self.repository.get(period_id)
            except AggregateNotFoundError:
                period = UsagePeriod.open(
                    tenant_id, customer_ref, metric_name, metric.aggregation, billing_period
                )
            self._periods.put(period_id, period)
        touched[period_id] = period
        return period

    def _learn_keys(self, submissions: Sequence[UsageSubmission], indexes: list[int]) -> None:
        for index in indexes:
            item = submissions[index]
            key_id = claim_id(item.tenant_id, item.idempotency_key, item.derived_key)
            try:
                claim: IdempotencyKey = self.repository.get(key_id)
            except AggregateNotFoundError:
                continue
            self._known_keys.put(key_id, claim.fingerprint)

    # -- changes beside ingest: corrections, closing ----------------------------

    def change_periods(self, change: Callable[[PeriodLoader], Sequence[Any]]) -> Sequence[Any]:
        """Apply ``change`` to fresh copies of usage periods and save what it returns, atomically.

        ``change`` loads the periods it needs through the loader it is given
        and returns every aggregate to save. A concurrent write (the writer
        counting usage in the same period) makes the save fail; the change is
        then decided again on fresh copies. This process's cached copies of the
        periods are dropped, so that its writer reads what was saved.
        """
        for _ in range(SAVE_ATTEMPTS):
            with self._ingest_lock:
                loader = PeriodLoader(self)
                aggregates = change(loader)
                try:
                    if aggregates:
                        self.save(*aggregates)
                except IntegrityError:
                    continue
                finally:
                    for period_id in loader.loaded:
                        self._periods.pop(period_id)
                return aggregates
        raise ConflictError("those usage periods are being written concurrently; try again")

    def usage_period(
        self, tenant_id: UUID, customer_ref: str, metric: str, period_key: str
    ) -> UsagePeriod:
        try:
            period: UsagePeriod = self.repository.get(
                usage_period_id(tenant_id, customer_ref, metric, period_key)
            )
        except AggregateNotFoundError:
            raise NotFoundError("no usage recorded for that customer, metric and period") from None
        return period


class PeriodLoader:
    """Fresh usage periods for ``MeteringApp.change_periods`` (never the writer's cache)."""

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
        period_id = usage_period_id(tenant_id, customer_ref, metric, billing_period.key)
        self.loaded.append(period_id)
        try:
            period: UsagePeriod = self.app.repository.get(period_id)
        except AggregateNotFoundError:
            period = UsagePeriod.open(
                tenant_id, customer_ref, metric, definition.aggregation, billing_period
            )
        return period
