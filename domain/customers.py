"""A tenant's customer as Stripe knows it: the Stripe customer id and billing cycles.

The customer aggregate is created when the customer is mapped; a customer
who was never mapped has none, is billed in calendar months and is not
pushed to Stripe. An unmapped customer keeps its aggregate (and its billing
cycles: its periods are named by them) but is no longer pushed.

A customer's periods follow a list of *cycles*, each from the moment it
starts: calendar months before the customer was mapped, then months counted
from the Stripe subscription's anchor, and a new cycle whenever that anchor
changes. A period never crosses the start of a cycle: the last period of a
cycle ends where the next cycle starts. Usage before the first billed cycle
(before the Stripe subscription started) stays in calendar periods that no
invoice covers: counted, reported, never pushed (``bills``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from domain import fields
from domain.errors import ConflictError, InvalidInputError, NotFoundError
from domain.periods import BillingPeriod, period_of, period_within
from domain.tenancy import NAMESPACE


def customer_id_for(tenant_id: UUID, customer_ref: str) -> UUID:
    return uuid5(NAMESPACE, f"customer:{tenant_id}:{customer_ref}")


def check_stripe_customer_id(field: str, value: str) -> str:
    if not value.startswith("cus_") or not 5 <= len(value) <= 255:
        raise InvalidInputError(field, "must be a Stripe customer id (cus_…)")
    return value


class Cycle(NamedTuple):
    """Periods counted from ``anchor`` (None: calendar months) from ``starts_at`` on."""

    starts_at: datetime | None  # None: since always
    anchor: datetime | None


class Customer(Aggregate):
    # Older snapshots predate unmapping: every customer they hold is mapped.
    mapped = True
    # v2 added billing cycles (for snapshots taken by v1: one cycle since always).
    class_version = 2

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state.setdefault("cycles", [Cycle(None, state.get("billing_cycle_anchor"))])
        state.setdefault("billed_from", None)

    class Mapped(Aggregate.Created):
        """Mapped to a Stripe customer (v2: ``billed_from``).

        ``billed_from`` is when the Stripe subscription started, when the
        customer's billing cycle comes from it: usage before that moment is in
        calendar periods that no invoice covers. None: billed since always.
        """

        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state.setdefault("billed_from", None)

        tenant_id: UUID
        customer_ref: str
        stripe_customer_id: str
        billing_cycle_anchor: datetime | None
        shadow_stripe_customer_id: str | None
        billed_from: datetime | None

    class CycleChanged(Aggregate.Event):
        """The Stripe subscription's billing cycle anchor changed (v1).

        From ``starts_at`` periods count from ``anchor``; the period running at
        that moment ends there (Stripe invoices it then, as it does for
        ``billing_cycle_anchor=now``).
        """

        anchor: datetime | None
        starts_at: datetime
        reason: str

        def apply(self, aggregate: Customer) -> None:
            aggregate.cycles = [*aggregate.cycles, Cycle(self.starts_at, self.anchor)]
            aggregate.billing_cycle_anchor = self.anchor

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
        billed_from: datetime | None,
    ) -> None:
        self.tenant_id = tenant_id
        self.customer_ref = customer_ref
        self.stripe_customer_id = stripe_customer_id
        self.billing_cycle_anchor = billing_cycle_anchor
        self.shadow_stripe_customer_id = shadow_stripe_customer_id
        self.billed_from = billed_from
        self.cycles: list[Cycle] = [Cycle(None, billing_cycle_anchor)]
        if billed_from is not None and billing_cycle_anchor is not None:
            self.cycles = [Cycle(None, None), Cycle(billed_from, billing_cycle_anchor)]

    @classmethod
    def map(
        cls,
        tenant_id: UUID,
        customer_ref: str,
        stripe_customer_id: str,
        billing_cycle_anchor: datetime | None,
        shadow_stripe_customer_id: str | None = None,
        billed_from: datetime | None = None,
    ) -> Customer:
        """A new mapping; ``billed_from``: when the Stripe subscription started, if known."""
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
            billed_from=billed_from if billing_cycle_anchor is not None else None,
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

    def change_cycle(self, anchor: datetime | None, starts_at: datetime, reason: str) -> None:
        """Count periods from ``anchor`` from ``starts_at`` on (after every cycle so far)."""
        last = self.cycles[-1].starts_at
        if last is not None and starts_at <= last:
            raise ConflictError(
                f"customer {self.customer_ref!r} has a billing cycle starting"
                f" {last:%Y-%m-%dT%H:%M:%SZ}; a new one must start after it"
            )
        self.trigger_event(
            self.CycleChanged,
            anchor=anchor and fields.billing_cycle_anchor(anchor),
            starts_at=starts_at,
            reason=reason,
        )

    def period_of(self, moment: datetime) -> BillingPeriod:
        """The period holding ``moment``: its cycle's, cut where the next cycle starts."""
        index = 0
        for position, cycle in enumerate(self.cycles):
            if cycle.starts_at is None or cycle.starts_at <= moment:
                index = position
        cycle = self.cycles[index]
        following = self.cycles[index + 1].starts_at if index + 1 < len(self.cycles) else None
        return period_within(period_of(moment, cycle.anchor), cycle.starts_at, following)

    def bills(self, period_key: str, period_start: datetime, period_end: datetime) -> bool:
        """Whether a Stripe invoice covers this period (see ``why_not_billed``)."""
        return self.why_not_billed(period_key, period_start, period_end) is None

    def why_not_billed(
        self, period_key: str, period_start: datetime, period_end: datetime
    ) -> str | None:
        """Why no Stripe invoice covers this period, or None when one does.

        Not when no part of it is left (its usage moved when the cycle
        changed), when it lies before the Stripe subscription started, or when
        it is none of the customer's periods (counted under an older cycle: a
        closed period keeps its usage; one written a moment before the cycle
        changed moves with the next mapping call, see domain/cycle_moves.py).
        """
        if period_end <= period_start:
            return "no part of it is a billing period of the customer since its cycle changed"
        if self.billed_from is not None and period_end <= self.billed_from:
            return (
                "before the customer's Stripe subscription started"
                f" ({self.billed_from:%Y-%m-%dT%H:%M:%SZ}): counted, never pushed"
            )
        if self.period_of(period_start).key != period_key:
            return "counted under an earlier billing cycle of the customer: not pushed"
        return None
