"""MeteringApp: the event store, and the service for tenants, metrics, keys and customers.

Usage ingest is the other half of the service and lives in its own class
(``domain/recording.py``): each app owns exactly one ``UsageRecorder``, as
``app.usage``, which writes to this app's event store and reads tenants,
metrics and billing periods through this app's short-lived caches below.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError, JSONTranscoder

from domain.caching import TtlCache
from domain.caps import Cap
from domain.customers import Customer, customer_id_for
from domain.cycle_moves import cycle_start, move_usage
from domain.errors import ConflictError, NotFoundError, UnauthenticatedError
from domain.ledger import IntentAsDict, StripeLedger
from domain.mappings import MeterMapping
from domain.meters import MetricDefinition
from domain.periods import BillingPeriod, named_period, period_of
from domain.recording import PeriodLoader, UsageRecorder
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
from domain.widget import (
    MintedWidgetToken,
    WidgetGrant,
    WidgetOrigin,
    WidgetToken,
    is_widget_token,
    new_widget_secret,
    widget_origin_id,
    widget_token_id_for,
)

# A change made by another process (a declared metric, a remapped customer) is
# seen by this one's ingest and pushes within this many seconds.
TENANT_CACHE_SECONDS = 5.0
SAVE_ATTEMPTS = 5


@dataclass(frozen=True)
class IssuedKey:
    key_id: UUID
    secret: str
    display_prefix: str
    scopes: frozenset[Scope]


def _move_reason(customer: Customer) -> str:
    if customer.billing_cycle_anchor is None:
        return f"customer mapped to Stripe customer {customer.stripe_customer_id}"
    return (
        f"customer billed by Stripe customer {customer.stripe_customer_id} from its anchor"
        f" {customer.billing_cycle_anchor:%Y-%m-%dT%H:%M:%SZ}"
    )


def utc_now() -> datetime:
    return datetime.now(UTC)


class MeteringApp(Application[UUID]):
    """Tenants, metrics, keys and customers; usage ingest through ``usage``."""

    name = "stripemeter"
    # Usage periods are snapshotted by the recorder from memory; a
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
        self._tenants: TtlCache[UUID, Tenant] = TtlCache(TENANT_CACHE_SECONDS, 100_000)
        self._customers: TtlCache[tuple[UUID, str], Customer | None] = TtlCache(
            TENANT_CACHE_SECONDS, 100_000
        )
        self.usage = UsageRecorder(self, period_cache_size, known_key_cache_size)

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
        self._tenants.put(tenant_id, tenant)
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
        """The tenant as read at most ``TENANT_CACHE_SECONDS`` ago: for reading, never changing."""
        return self._tenants.get_or_load(tenant_id, self.fresh_tenant)

    def declare_metric(self, tenant_id: UUID, definition: MetricDefinition) -> bool:
        """Declare a metric for a tenant. True when new; False when identical to one declared."""
        return self._change_tenant(tenant_id, lambda tenant: tenant.declare_metric(definition))

    def set_late_policy(self, tenant_id: UUID, policy: str) -> bool:
        """Choose what happens to usage for a closed period (carry_forward or hold)."""
        return self._change_tenant(tenant_id, lambda tenant: tenant.set_late_policy(policy))

    def set_ingest_horizon(self, tenant_id: UUID, days: int) -> bool:
        """How many days before now an event's ``ts`` may lie; older events are refused."""
        return self._change_tenant(tenant_id, lambda tenant: tenant.set_ingest_horizon(days))

    def set_cap(self, tenant_id: UUID, cap: Cap) -> bool:
        """Set a usage cap (domain/caps.py); False when already set the same way.

        This process's ingest sees it at once; another process's (the writer
        process) within ``TENANT_CACHE_SECONDS``.
        """
        return self._change_tenant(tenant_id, lambda tenant: tenant.set_cap(cap))

    def remove_cap(self, tenant_id: UUID, metric: str, customer_ref: str | None) -> Cap:
        """Remove a usage cap; the cap it was. Seen by ingest as ``set_cap`` is."""
        removed: list[Cap] = []

        def change(tenant: Tenant) -> bool:
            removed[:] = [tenant.remove_cap(metric, customer_ref)]
            return True

        self._change_tenant(tenant_id, change)
        return removed[0]

    def caps(self, tenant_id: UUID) -> list[Cap]:
        """The tenant's usage caps as stored, by metric."""
        return self.tenant(tenant_id).caps.all()

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
        self._customers.put((tenant_id, customer_ref), customer)
        return customer

    def fresh_customer(self, tenant_id: UUID, customer_ref: str) -> Customer | None:
        """A copy of the customer to change: never the cached one that pushes read."""
        try:
            customer: Customer = self.repository.get(customer_id_for(tenant_id, customer_ref))
        except AggregateNotFoundError:
            return None
        return customer

    def cached_customer(self, tenant_id: UUID, customer_ref: str) -> Customer | None:
        """The customer as read at most ``TENANT_CACHE_SECONDS`` ago: to read, never to change."""
        return self._customers.get_or_load((tenant_id, customer_ref), self._load_customer)

    def _load_customer(self, key: tuple[UUID, str]) -> Customer | None:
        return self.fresh_customer(*key)

    def bills(
        self, tenant_id: UUID, customer_ref: str, period: str, start: datetime, end: datetime
    ) -> bool:
        """Whether a Stripe invoice covers this period of a customer (see ``Customer.bills``)."""
        customer = self.cached_customer(tenant_id, customer_ref)
        return customer is not None and customer.mapped and customer.bills(period, start, end)

    def named_period(
        self, tenant_id: UUID, customer_ref: str, key: str, metric: str | None = None
    ) -> BillingPeriod:
        """The customer's period that ``key`` names (of ``metric``, or of any metric).

        One of the customer's periods by its billing cycles, or a period that
        holds usage although it is no longer one of them (counted under an
        earlier cycle): what was recorded can always be looked at.
        """
        metrics = [metric] if metric is not None else sorted(self.cached_tenant(tenant_id).metrics)
        for name in metrics:
            try:
                recorded: UsagePeriod = self.repository.get(
                    usage_period_id(tenant_id, customer_ref, name, key)
                )
            except AggregateNotFoundError:
                continue
            return BillingPeriod(recorded.period_start, recorded.period_end, anchored=len(key) > 7)
        customer = self.cached_customer(tenant_id, customer_ref)
        if customer is None:
            return named_period(key, None, customer_ref)
        return named_period(key, customer.billing_cycle_anchor, customer_ref, customer.period_of)

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
        billed_from: datetime | None = None,
    ) -> tuple[Customer, bool]:
        """Map a customer to Stripe, claiming nothing; True when new or changed.

        ``StripeMappingService`` is the way in for callers: it checks the ids
        against Stripe and claims them (domain/ownership.py). This is the bare
        mapping, as it was recorded before claims existed; usage already
        counted moves to the customer's periods as there (domain/cycle_moves.py).
        """
        result: list[tuple[Customer, bool]] = []

        def change(loader: PeriodLoader) -> Sequence[Any]:
            result.clear()
            customer, changed, periods = self.prepare_customer_mapping(
                loader,
                tenant_id,
                customer_ref,
                stripe_customer_id,
                billing_cycle_anchor,
                shadow_stripe_customer_id,
                billed_from,
            )
            result.append((customer, changed))
            return [customer, *periods]

        self.usage.change_periods(change)
        self.customer(tenant_id, customer_ref)
        return result[0]

    def prepare_customer_mapping(
        self,
        loader: PeriodLoader,
        tenant_id: UUID,
        customer_ref: str,
        stripe_customer_id: str,
        billing_cycle_anchor: datetime | None,
        shadow_stripe_customer_id: str | None = None,
        billed_from: datetime | None = None,
    ) -> tuple[Customer, bool, list[UsagePeriod]]:
        """A fresh customer with the mapping applied, and the periods whose usage it moves.

        Unsaved; True when the mapping is new or changed. A new mapping bills
        from ``billed_from`` (when the Stripe subscription started, if known)
        in the subscription's cycle; a changed anchor starts a new cycle (at the
        anchor when that moves nothing Stripe holds, otherwise now: ``cycle_start``).
        No anchor at all (no
        active subscription) keeps the cycle the customer has. Usage already
        counted under the old cycle moves to the new periods, by recorded
        events (domain/cycle_moves.py).
        """
        now = self.clock()
        before = self.fresh_customer(tenant_id, customer_ref)
        customer = self.fresh_customer(tenant_id, customer_ref)
        if customer is None:
            customer = Customer.map(
                tenant_id,
                customer_ref,
                stripe_customer_id,
                billing_cycle_anchor,
                shadow_stripe_customer_id,
                billed_from,
            )
            changed = True
        else:
            changed = customer.remap(stripe_customer_id, shadow_stripe_customer_id)
            changed = self._restart_cycle(loader, customer, billing_cycle_anchor, now) or changed
        periods = move_usage(loader, customer, before, now, _move_reason(customer))
        return customer, changed, periods

    def follow_billing_anchor(
        self, tenant_id: UUID, customer_ref: str, anchor: datetime, source: str
    ) -> Customer | None:
        """The customer's Stripe subscription counts its cycle from ``anchor`` now: follow it.

        The same change as a mapping call with a new anchor (one transaction:
        the new cycle, and the usage it moves), without remapping anything.
        The customer with its new cycle; None when nothing changed: not mapped,
        already counting from ``anchor`` (a delivery seen before), or counting
        from a later anchor (an older delivery arriving late: Stripe only ever
        resets an anchor to now, so a later one is the newer). ``source`` says
        where the anchor comes from, in the recorded reason.
        """
        result: list[Customer] = []

        def change(loader: PeriodLoader) -> Sequence[Any]:
            result.clear()
            now = self.clock()
            before = self.fresh_customer(tenant_id, customer_ref)
            customer = self.fresh_customer(tenant_id, customer_ref)
            if before is None or customer is None or not customer.mapped:
                return []
            current = customer.billing_cycle_anchor
            if current is not None and anchor < current:
                return []
            if not self._restart_cycle(loader, customer, anchor, now, source):
                return []
            periods = move_usage(loader, customer, before, now, _move_reason(customer))
            result.append(customer)
            return [customer, *periods]

        self.usage.change_periods(change)
        self.customer(tenant_id, customer_ref)
        return result[0] if result else None

    @staticmethod
    def _restart_cycle(
        loader: PeriodLoader,
        customer: Customer,
        anchor: datetime | None,
        now: datetime,
        source: str = "a mapping call",
    ) -> bool:
        """Start a cycle from ``anchor`` when it is the customer's new one; True when started.

        At the anchor when no usage Stripe holds would change window, otherwise
        now (``cycle_start``): never a cycle that moves what Stripe has billed.
        """
        if anchor is None or anchor == customer.billing_cycle_anchor:
            return False
        starts_at = cycle_start(loader, customer, anchor, now)
        customer.change_cycle(
            anchor,
            starts_at,
            f"the billing cycle anchor changed to {anchor:%Y-%m-%dT%H:%M:%SZ} ({source});"
            f" the new cycle starts {starts_at:%Y-%m-%dT%H:%M:%SZ}",
        )
        return True

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

    def key_is_active(self, key_id: UUID) -> bool:
        """Whether the key exists and is not revoked: what an admin UI session, made with
        the key's secret and not holding it, asks on each page."""
        try:
            key: ApiKey = self.repository.get(key_id)
        except AggregateNotFoundError:
            return False
        return not key.revoked

    def authenticate(self, secret: str) -> Principal:
        """The principal a presented secret acts for; revoked and unknown keys are refused."""
        if is_widget_token(secret):
            raise UnauthenticatedError(
                "a widget token reads GET /v1/widget/usage only; send an API key here"
            )
        try:
            key: ApiKey = self.repository.get(api_key_id_for(secret))
        except AggregateNotFoundError:
            raise UnauthenticatedError("unknown API key") from None
        if key.revoked:
            raise UnauthenticatedError("this API key was revoked")
        return Principal(
            tenant_id=key.tenant_id, tenant_slug=key.tenant_slug, key_id=key.id, scopes=key.scopes
        )

    def set_widget_origins(self, tenant_id: UUID, origins: tuple[str, ...]) -> bool:
        """Replace the origins whose pages may read the widget's answers (checked already).

        Each origin's ``WidgetOrigin`` record is saved with the tenant, in one
        transaction, so that a preflight never sees one without the other.
        """
        for _ in range(SAVE_ATTEMPTS):
            tenant = self.fresh_tenant(tenant_id)
            before = set(tenant.widget_origins)
            if not tenant.set_widget_origins(origins):
                return False
            touched = []
            for origin in before ^ set(origins):
                record = self._widget_origin(origin) or WidgetOrigin.create(origin)
                if origin in origins:
                    record.allow(tenant_id)
                else:
                    record.withdraw(tenant_id)
                touched.append(record)
            try:
                self.save(tenant, *touched)
            except IntegrityError:
                continue  # changed meanwhile: decide again
            self.tenant(tenant_id)
            return True
        raise ConflictError("the tenant is being changed concurrently; try again")

    def widget_origin_allowed(self, origin: str) -> bool:
        """Whether any tenant allows pages of ``origin`` to read the widget."""
        record = self._widget_origin(origin)
        return record is not None and bool(record.tenant_ids)

    def _widget_origin(self, origin: str) -> WidgetOrigin | None:
        try:
            record: WidgetOrigin = self.repository.get(widget_origin_id(origin))
        except AggregateNotFoundError:
            return None
        return record

    def mint_widget_token(
        self, tenant_id: UUID, customer_ref: str, lifetime_seconds: int
    ) -> MintedWidgetToken:
        """A token that reads one customer's usage until it expires. Its secret is in the
        result and nowhere else; only its digest is stored."""
        self.cached_tenant(tenant_id)  # a tenant that exists
        secret = new_widget_secret()
        token = WidgetToken.mint(tenant_id, customer_ref, secret, self.clock(), lifetime_seconds)
        self.save(token)
        return MintedWidgetToken(secret, customer_ref, token.expires_at)

    def widget_grant(self, secret: str) -> WidgetGrant:
        """What a presented widget token allows now (this app's clock decides expiry)."""
        if not is_widget_token(secret):
            raise UnauthenticatedError("send a widget token as 'Authorization: Bearer smw_...'")
        try:
            token: WidgetToken = self.repository.get(widget_token_id_for(secret))
        except AggregateNotFoundError:
            raise UnauthenticatedError("unknown widget token") from None
        return token.grant(self.clock())

    def recorded_period(self, period_id: UUID) -> UsagePeriod | None:
        """The usage period with this id, when any usage was ever recorded in it."""
        try:
            period: UsagePeriod = self.repository.get(period_id)
        except AggregateNotFoundError:
            return None
        return period

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
