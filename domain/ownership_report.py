"""Ownership on upgrade: which Stripe objects are mapped by whom, and which are claimed.

Mappings recorded before ownership claims existed have none, and some may
conflict: two tenants (or two mappings of one tenant) pushing to one Stripe
customer or one meter event name. ``ownership_report`` reads every mapping
from the event log (not from a view, so it never lags) and says, per Stripe
object, who maps it and whether the claim agrees. ``claim_unconflicted``
records the claims that are missing where exactly one mapping holds the
object. A conflict is never resolved here: an operator decides which
mapping is wrong and unmaps it (``DELETE /v1/mappings/…``,
``DELETE /v1/customers/…``), then applies again.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from uuid import UUID

from eventsourcing.persistence import IntegrityError
from eventsourcing.utils import get_topic

from domain.customers import Customer
from domain.ownership import ClaimChanges, StripeObject
from domain.stripe_mapping import StripeMappingService
from domain.tenancy import Tenant

PAGE = 1_000


@dataclass(frozen=True, order=True)
class Holding:
    """One mapping onto a Stripe object: a tenant's metric or customer ref."""

    tenant_slug: str
    tenant_id: UUID
    holder: str


@dataclass
class ObjectStanding:
    obj: StripeObject
    holdings: list[Holding] = field(default_factory=list)
    claim_owner: UUID | None = None
    claim_holder: str | None = None

    @property
    def conflicted(self) -> bool:
        """Two mappings on it, or its claim held by another than its one mapping."""
        if len(self.holdings) > 1:
            return True
        [holding] = self.holdings
        return self.claim_owner is not None and (self.claim_owner, self.claim_holder) != (
            holding.tenant_id,
            holding.holder,
        )

    @property
    def claimed(self) -> bool:
        """Claimed by its one mapping (a conflicted object is never claimed right)."""
        return not self.conflicted and self.claim_owner is not None


@dataclass(frozen=True)
class OwnershipReport:
    objects: list[ObjectStanding]

    @property
    def conflicts(self) -> list[ObjectStanding]:
        return [o for o in self.objects if o.conflicted]

    @property
    def unclaimed(self) -> list[ObjectStanding]:
        return [o for o in self.objects if not o.conflicted and not o.claimed]


def ownership_report(service: StripeMappingService) -> OwnershipReport:
    """Every Stripe object that a current mapping pushes to, with its mappings and claim."""
    app = service.app
    found: dict[StripeObject, ObjectStanding] = {}
    slugs: dict[UUID, str] = {}
    for tenant_id in _originators(service, Tenant.Registered):
        tenant: Tenant = app.repository.get(tenant_id)
        slugs[tenant_id] = tenant.slug
        for metric, mapping in sorted(tenant.mappings.items()):
            for obj in service.meter_objects(mapping):
                standing = found.setdefault(obj, ObjectStanding(obj))
                standing.holdings.append(Holding(tenant.slug, tenant_id, metric))
    for customer_id in _originators(service, Customer.Mapped):
        customer: Customer = app.repository.get(customer_id)
        slug = slugs.get(customer.tenant_id, str(customer.tenant_id))
        for obj in service.customer_objects(customer):
            standing = found.setdefault(obj, ObjectStanding(obj))
            standing.holdings.append(Holding(slug, customer.tenant_id, customer.customer_ref))
    for obj, standing in found.items():
        standing.holdings.sort()
        claim = service.claim(obj)
        if claim is not None:
            standing.claim_owner, standing.claim_holder = claim.owner, claim.holder
    return OwnershipReport([found[obj] for obj in sorted(found)])


def claim_unconflicted(service: StripeMappingService, report: OwnershipReport) -> int:
    """Record the missing claim of every object exactly one mapping holds; how many were new.

    Idempotent: a claim recorded meanwhile (by a mapping request, or another
    run) is left as it is, and the next report shows it. An object claimed by
    someone other than its one mapping is a conflict, never re-claimed here.
    """
    recorded = 0
    for standing in report.unclaimed:
        [holding] = standing.holdings
        claims = ClaimChanges(service.claim_by_id, holding.tenant_id, holding.holder)
        claims.take(standing.obj)
        if not claims.aggregates:
            continue
        try:
            service.app.save(*claims.aggregates)
        except IntegrityError:
            continue  # claimed meanwhile: the next report shows by whom
        recorded += 1
    return recorded


def _originators(service: StripeMappingService, event_class: type) -> Iterator[UUID]:
    """The aggregates that ever recorded ``event_class``, from the event log (in log order)."""
    recorder = service.app.recorder
    topic = get_topic(event_class)
    start = 1
    while batch := recorder.select_notifications(start=start, limit=PAGE, topics=[topic]):
        for notification in batch:
            yield UUID(str(notification.originator_id))
        start = batch[-1].id + 1
