"""Tenants, their metrics and their API keys.

A tenant is one customer of StripeMeter (a SaaS team); all data is scoped to
it. API keys are stored as SHA-256 digests only: the secret is shown once
when issued and never again. Keys are random 256-bit tokens, so a fast digest
is enough; no password-stretching is needed to stop guessing.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.caps import NO_CAPS, Cap, CapMode, TenantCaps
from domain.errors import InvalidInputError, MetricConflictError, NotFoundError
from domain.mappings import MeterMapping, check_formula
from domain.meters import Aggregation, MetricDefinition

NAMESPACE = uuid5(NAMESPACE_URL, "https://stripemeter.dev/ids")
TENANT_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
KEY_PREFIX = "smk_"
# Stripe takes no meter event older than 35 days; neither do we, unless the
# tenant raises its horizon (to import older history, say).
DEFAULT_INGEST_HORIZON_DAYS = 35
MAX_INGEST_HORIZON_DAYS = 36_600  # about a hundred years


class Scope(StrEnum):
    INGEST = "ingest"
    READ = "read"
    ADMIN = "admin"
    # Mints widget tokens (POST /v1/widget-tokens) and does nothing else (docs/widget.md).
    WIDGET_MINT = "widget:mint"


def parse_scopes(values: list[str]) -> frozenset[Scope]:
    scopes: set[Scope] = set()
    for value in values:
        try:
            scopes.add(Scope(value))
        except ValueError:
            allowed = ", ".join(s.value for s in Scope)
            raise InvalidInputError("scopes", f"{value!r} is not one of {allowed}") from None
    if not scopes:
        raise InvalidInputError("scopes", "at least one scope is required")
    return frozenset(scopes)


def tenant_id_for(slug: str) -> UUID:
    return uuid5(NAMESPACE, f"tenant:{slug}")


def key_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def api_key_id_for(secret: str) -> UUID:
    return uuid5(NAMESPACE, f"api-key:{key_digest(secret)}")


def new_key_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


class Tenant(Aggregate):
    """A tenant and the metrics it has declared."""

    # A class default, so that a tenant snapshotted before the setting existed has it.
    ingest_horizon_days: int = DEFAULT_INGEST_HORIZON_DAYS
    # Usage caps (domain/caps.py). A class default, as above; immutable, so sharing it is safe.
    caps: TenantCaps = NO_CAPS
    # The origins whose pages may read the widget's answers (CORS, docs/widget.md). As above.
    widget_origins: tuple[str, ...] = ()

    class Registered(Aggregate.Created):
        slug: str
        display_name: str

    class MetricDeclared(Aggregate.Event):
        name: str
        aggregation: str
        unit: str
        lateness_seconds: int
        stripe_event_name: str | None
        allow_negative: bool

        def apply(self, aggregate: Tenant) -> None:
            aggregate.metrics[self.name] = MetricDefinition(
                name=self.name,
                aggregation=Aggregation(self.aggregation),
                unit=self.unit,
                lateness_seconds=self.lateness_seconds,
                stripe_event_name=self.stripe_event_name,
                allow_negative=self.allow_negative,
            )

    class MeterMapped(Aggregate.Event):
        """A metric's Stripe meter (v1); mapping again replaces it."""

        metric: str
        stripe_meter_id: str
        stripe_event_name: str
        stripe_formula: str
        customer_key: str
        value_key: str
        shadow_meter_id: str | None
        shadow_event_name: str | None

        def apply(self, aggregate: Tenant) -> None:
            aggregate.mappings[self.metric] = MeterMapping(
                metric=self.metric,
                stripe_meter_id=self.stripe_meter_id,
                stripe_event_name=self.stripe_event_name,
                stripe_formula=self.stripe_formula,
                customer_key=self.customer_key,
                value_key=self.value_key,
                shadow_meter_id=self.shadow_meter_id,
                shadow_event_name=self.shadow_event_name,
            )

    class MeterUnmapped(Aggregate.Event):
        """A metric no longer pushes to Stripe (v1); its usage is still counted."""

        metric: str
        reason: str

        def apply(self, aggregate: Tenant) -> None:
            aggregate.mappings.pop(self.metric, None)

    class LatePolicySet(Aggregate.Event):
        """What happens to usage for a closed period: carry_forward or hold (v1)."""

        policy: str

        def apply(self, aggregate: Tenant) -> None:
            aggregate.late_policy = self.policy

    class IngestHorizonSet(Aggregate.Event):
        """How many days before now an event may be timestamped and still be taken (v1)."""

        days: int

        def apply(self, aggregate: Tenant) -> None:
            aggregate.ingest_horizon_days = self.days

    class CapSet(Aggregate.Event):
        """A usage cap on a metric for one customer, or all (``customer_ref`` None) (v1).

        Setting it again on the same metric and customer replaces it.
        """

        metric: str
        customer_ref: str | None
        limit: Decimal
        mode: str

        def apply(self, aggregate: Tenant) -> None:
            cap = Cap(self.metric, self.customer_ref, self.limit, CapMode(self.mode))
            aggregate.caps = aggregate.caps.set(cap)

    class CapRemoved(Aggregate.Event):
        """The cap on a metric for one customer, or the metric-wide one, is gone (v1)."""

        metric: str
        customer_ref: str | None

        def apply(self, aggregate: Tenant) -> None:
            aggregate.caps = aggregate.caps.remove(self.metric, self.customer_ref)

    class WidgetOriginsSet(Aggregate.Event):
        """The web origins allowed to read the widget's answers; replaces the list (v1)."""

        origins: list[str]

        def apply(self, aggregate: Tenant) -> None:
            aggregate.widget_origins = tuple(self.origins)

    class KeyIssued(Aggregate.Event):
        key_id: UUID
        display_prefix: str
        scopes: list[str]

        def apply(self, aggregate: Tenant) -> None:
            aggregate.key_ids.append(self.key_id)

    def __init__(self, slug: str, display_name: str) -> None:
        self.slug = slug
        self.display_name = display_name
        self.metrics: dict[str, MetricDefinition] = {}
        self.mappings: dict[str, MeterMapping] = {}
        self.key_ids: list[UUID] = []
        # A domain.adjustments.LatePolicy value; kept as its string for snapshots.
        self.late_policy = "carry_forward"

    @classmethod
    def register(cls, slug: str, display_name: str) -> Tenant:
        if not TENANT_SLUG.match(slug):
            raise InvalidInputError(
                "slug",
                "must be 2-63 characters of a-z, 0-9 and '-', starting with a letter or digit",
            )
        if not 1 <= len(display_name) <= 200:
            raise InvalidInputError("name", "must be 1 to 200 characters")
        return cls._create(
            cls.Registered, id=tenant_id_for(slug), slug=slug, display_name=display_name
        )

    def declare_metric(self, definition: MetricDefinition) -> bool:
        """Declare a metric; True when new, False when already declared the same way.

        Re-declaring with other settings is refused: counters already computed
        with one aggregation would silently change meaning under another.
        """
        existing = self.metrics.get(definition.name)
        if existing == definition:
            return False
        if existing is not None:
            raise MetricConflictError(
                f"metric {definition.name!r} is already declared with other settings"
            )
        self.trigger_event(
            self.MetricDeclared,
            name=definition.name,
            aggregation=definition.aggregation.value,
            unit=definition.unit,
            lateness_seconds=definition.lateness_seconds,
            stripe_event_name=definition.stripe_event_name,
            allow_negative=definition.allow_negative,
        )
        return True

    def metric(self, name: str) -> MetricDefinition:
        try:
            return self.metrics[name]
        except KeyError:
            raise NotFoundError(f"metric {name!r} is not declared") from None

    def map_meter(self, mapping: MeterMapping) -> bool:
        """Map a declared metric to a Stripe meter; False when already mapped the same way."""
        definition = self.metric(mapping.metric)
        check_formula(definition.aggregation, mapping.stripe_formula)
        if self.mappings.get(mapping.metric) == mapping:
            return False
        self.trigger_event(
            self.MeterMapped,
            metric=mapping.metric,
            stripe_meter_id=mapping.stripe_meter_id,
            stripe_event_name=mapping.stripe_event_name,
            stripe_formula=mapping.stripe_formula,
            customer_key=mapping.customer_key,
            value_key=mapping.value_key,
            shadow_meter_id=mapping.shadow_meter_id,
            shadow_event_name=mapping.shadow_event_name,
        )
        return True

    def unmap_meter(self, metric: str, reason: str) -> MeterMapping:
        """Stop pushing a metric to Stripe; the mapping it had. Not mapped: NotFoundError."""
        mapping = self.mappings.get(metric)
        if mapping is None:
            raise NotFoundError(f"metric {metric!r} is not mapped to a Stripe meter")
        self.trigger_event(self.MeterUnmapped, metric=metric, reason=reason)
        return mapping

    def set_late_policy(self, policy: str) -> bool:
        if policy not in ("carry_forward", "hold"):
            raise InvalidInputError("policy", "must be carry_forward or hold")
        if policy == self.late_policy:
            return False
        self.trigger_event(self.LatePolicySet, policy=policy)
        return True

    def set_ingest_horizon(self, days: int) -> bool:
        if not 1 <= days <= MAX_INGEST_HORIZON_DAYS:
            raise InvalidInputError("days", f"must be between 1 and {MAX_INGEST_HORIZON_DAYS}")
        if days == self.ingest_horizon_days:
            return False
        self.trigger_event(self.IngestHorizonSet, days=days)
        return True

    def set_cap(self, cap: Cap) -> bool:
        """Set a usage cap on a declared metric; False when already set the same way."""
        self.metric(cap.metric)
        if self.caps.find(cap.metric, cap.customer_ref) == cap:
            return False
        self.trigger_event(
            self.CapSet,
            metric=cap.metric,
            customer_ref=cap.customer_ref,
            limit=cap.limit,
            mode=cap.mode.value,
        )
        return True

    def remove_cap(self, metric: str, customer_ref: str | None) -> Cap:
        """Remove a cap; the cap it was. None set there: NotFoundError."""
        cap = self.caps.find(metric, customer_ref)
        if cap is None:
            whom = "all customers" if customer_ref is None else f"customer {customer_ref!r}"
            raise NotFoundError(f"no cap on metric {metric!r} for {whom}")
        self.trigger_event(self.CapRemoved, metric=metric, customer_ref=customer_ref)
        return cap

    def set_widget_origins(self, origins: tuple[str, ...]) -> bool:
        """Replace the widget origins (already checked); False when unchanged."""
        if tuple(self.widget_origins) == origins:
            return False
        self.trigger_event(self.WidgetOriginsSet, origins=list(origins))
        return True

    def record_key(self, key_id: UUID, display_prefix: str, scopes: frozenset[Scope]) -> None:
        self.trigger_event(
            self.KeyIssued,
            key_id=key_id,
            display_prefix=display_prefix,
            scopes=sorted(s.value for s in scopes),
        )


class ApiKey(Aggregate):
    """One API key: which tenant it acts for and what it may do."""

    class Issued(Aggregate.Created):
        tenant_id: UUID
        tenant_slug: str
        digest: str
        display_prefix: str
        scopes: list[str]

    class Revoked(Aggregate.Event):
        reason: str

        def apply(self, aggregate: ApiKey) -> None:
            aggregate.revoked = True

    def __init__(
        self,
        tenant_id: UUID,
        tenant_slug: str,
        digest: str,
        display_prefix: str,
        scopes: list[str],
    ) -> None:
        self.tenant_id = tenant_id
        self.tenant_slug = tenant_slug
        self.digest = digest
        self.display_prefix = display_prefix
        self.scopes = frozenset(Scope(s) for s in scopes)
        self.revoked = False

    @classmethod
    def issue(
        cls, tenant_id: UUID, tenant_slug: str, secret: str, scopes: frozenset[Scope]
    ) -> ApiKey:
        return cls._create(
            cls.Issued,
            id=api_key_id_for(secret),
            tenant_id=tenant_id,
            tenant_slug=tenant_slug,
            digest=key_digest(secret),
            display_prefix=secret[:12],
            scopes=sorted(s.value for s in scopes),
        )

    def revoke(self, reason: str) -> None:
        if not self.revoked:
            self.trigger_event(self.Revoked, reason=reason)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant a key acts for and what the key may do."""

    tenant_id: UUID
    tenant_slug: str
    key_id: UUID
    scopes: frozenset[Scope]

    def allows(self, scope: Scope) -> bool:
        return Scope.ADMIN in self.scopes or scope in self.scopes
