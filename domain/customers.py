"""A tenant's customer as Stripe knows it: the Stripe customer id and billing cycle.

The customer aggregate is created when the customer is mapped; a customer
who was never mapped has none, is billed in calendar months and is not
pushed to Stripe. An unmapped customer keeps its aggregate (and its billing
cycle: its periods are named by it) but is no longer pushed.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from domain import fields
from domain.errors import InvalidInputError, NotFoundError
from domain.periods import BillingPeriod, period_of
from domain.tenancy import NAMESPACE


def customer_id_for(tenant_id: UUID, customer_ref: str) -> UUID:
    return uuid5(NAMESPACE, f"customer:{tenant_id}:{customer_ref}")


def check_stripe_customer_id(field: str, value: str) -> str:
    if not value.startswith("cus_") or not 5 <= len(value) <= 255:
        raise InvalidInputError(field, "must be a Stripe customer id (cus_…)")
    return value


class Customer(Aggregate):
    # Older snapshots predate unmapping: every customer they hold is mapped.
    mapped = True

    class Mapped(Aggregate.Created):
        tenant_id: UUID
        customer_ref: str
        stripe_customer_id: str
        billing_cycle_anchor: datetime | None
        shadow_stripe_customer_id: str | None

    class Remapped(Aggregate.Event):
        """Only the Stripe ids may change; the billing cycle is fixed once usage may exist."""

        stripe_customer_id: str
        shadow_stripe_customer_id: str | None

        def apply(self, aggregate: Customer) -> None:
            aggregate.stripe_customer_id = self.stripe_customer_id
            aggregate.shadow_stripe_customer_id = self.shadow_stripe_customer_id
            aggregate.mapped = True

    class Unmapped(Aggregate.Event):
        """No longer pushed to Stripe (v1). Its billing cycle stays: its periods exist."""

        reason: str

        def apply(self, aggregate: Customer) -> None:
            aggregate.mapped = False

    def __init__(
        self,
        tenant_id: UUID,
        customer_ref: str,
        stripe_customer_id: str,
        billing_cycle_anchor: datetime | None,
        shadow_stripe_customer_id: str | None,
    ) -> None:
        self.tenant_id = tenant_id
        self.customer_ref = customer_ref
        self.stripe_customer_id = stripe_customer_id
        self.billing_cycle_anchor = billing_cycle_anchor
        self.shadow_stripe_customer_id = shadow_stripe_customer_id

    @classmethod
    def map(
        cls,
        tenant_id: UUID,
        customer_ref: str,
        stripe_customer_id: str,
        billing_cycle_anchor: datetime | None,
        shadow_stripe_customer_id: str | None = None,
    ) -> Customer:
        return cls._create(
            cls.Mapped,
            id=customer_id_for(tenant_id, customer_ref),
            tenant_id=tenant_id,
            customer_ref=customer_ref,
            stripe_customer_id=check_stripe_customer_id("stripeCustomerId", stripe_customer_id),
            billing_cycle_anchor=billing_cycle_anchor
            and fields.billing_cycle_anchor(billing_cycle_anchor),
            shadow_stripe_customer_id=shadow_stripe_customer_id
            and check_stripe_customer_id("shadowStripeCustomerId", shadow_stripe_customer_id),
        )

    def remap(self, stripe_customer_id: str, shadow_stripe_customer_id: str | None) -> bool:
        if self.mapped and (stripe_customer_id, shadow_stripe_customer_id) == (
            self.stripe_customer_id,
            self.shadow_stripe_customer_id,
        ):
            return False
        self.trigger_event(
            self.Remapped,
            stripe_customer_id=check_stripe_customer_id("stripeCustomerId", stripe_customer_id),
            shadow_stripe_customer_id=shadow_stripe_customer_id
            and check_stripe_customer_id("shadowStripeCustomerId", shadow_stripe_customer_id),
        )
        return True

    def unmap(self, reason: str) -> None:
        if not self.mapped:
            raise NotFoundError(f"customer {self.customer_ref!r} is not mapped to Stripe")
        self.trigger_event(self.Unmapped, reason=reason)

    def period_of(self, moment: datetime) -> BillingPeriod:
        return period_of(moment, self.billing_cycle_anchor)
