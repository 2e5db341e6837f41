"""Following a Stripe subscription's billing cycle anchor (``customer.subscription.updated``).

Stripe resets an anchor to now (``billing_cycle_anchor[type]=now``): the
running period ends there, its invoice is cut (billing reason
``subscription_update``) and the next period counts from the new anchor.
A customer's periods here must follow, or both invoices would bill another
window than ours. Without webhooks, mapping the customer again does the same
(``POST /v1/customers``); with them, this does it on its own:

- the Stripe customer leads to the one tenant and customer ref that own it
  through the ownership claim in the event log (``PeriodCloser.owners``, as
  the invoice webhooks do), never through a view;
- an active subscription whose anchor differs from the customer's starts a
  new cycle through the same domain path as a mapping call
  (``MeteringApp.follow_billing_anchor``: at the anchor when no push is
  stamped after it, otherwise at processing time — domain/cycle_moves.py);
- a subscription that bills none of the tenant's mapped meters, or that is
  not active, moves nothing; neither does the same delivery twice (the anchor
  is the customer's already) or an older one arriving late (its anchor is
  earlier than the customer's).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

import msgspec

from adapters.closing import StripeId, Timestamp
from domain.application import MeteringApp

log = logging.getLogger(__name__)

# Statuses under which Stripe goes on invoicing the subscription's cycles (as the
# mapping call reads the anchor of an active subscription only).
BILLING_STATUSES = ("active",)
Status = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class Recurring(msgspec.Struct, frozen=True):
    meter: StripeId | None = None


class Price(msgspec.Struct, frozen=True):
    recurring: Recurring | None = None


class SubscriptionItem(msgspec.Struct, frozen=True):
    price: Price | None = None


class SubscriptionItems(msgspec.Struct, frozen=True):
    data: Annotated[list[SubscriptionItem], msgspec.Meta(max_length=100)] = []


class Subscription(msgspec.Struct, frozen=True):
    """The fields of a Stripe subscription that following its cycle reads, typed and bounded.

    Converted from ``data.object`` at the boundary, like ``Invoice``: a signed
    but absurd payload is refused by field, never half-applied.
    """

    id: StripeId
    customer: StripeId
    status: Status
    billing_cycle_anchor: Timestamp
    items: SubscriptionItems | None = None

    def meters(self) -> set[str] | None:
        """The meters its metered prices bill; None when the payload does not say."""
        if self.items is None:
            return None
        return {
            item.price.recurring.meter
            for item in self.items.data
            if item.price and item.price.recurring and item.price.recurring.meter
        }


class CycleFollower:
    def __init__(self, app: MeteringApp, owners: Callable[[str], list[tuple[UUID, str]]]) -> None:
        self.app = app
        self.owners = owners

    def subscription_updated(self, subscription: Subscription, event_id: str | None) -> int:
        """Follow the subscription's anchor; the number of customers whose cycle changed."""
        if subscription.status not in BILLING_STATUSES:
            return 0
        anchor = datetime.fromtimestamp(subscription.billing_cycle_anchor, UTC)
        source = f"Stripe subscription {subscription.id}, event {event_id or 'without id'}"
        changed = 0
        for tenant_id, customer_ref in self.owners(subscription.customer):
            billed = subscription.meters()
            mappings = self.app.fresh_tenant(tenant_id).mappings.values()
            if billed is not None and not billed & {m.stripe_meter_id for m in mappings}:
                log.info(
                    "subscription %s of %s bills none of %s's mapped meters: its cycle is"
                    " not this usage's, nothing to change",
                    subscription.id,
                    subscription.customer,
                    customer_ref,
                )
                continue
            customer = self.app.follow_billing_anchor(tenant_id, customer_ref, anchor, source)
            if customer is None:
                current = self.app.fresh_customer(tenant_id, customer_ref)
                log.info(
                    "subscription %s of %s: anchor %s; %s counts from %s (mapped: %s):"
                    " nothing to change (a delivery seen before, or an older one)",
                    subscription.id,
                    subscription.customer,
                    f"{anchor:%F %T}",
                    customer_ref,
                    current and current.billing_cycle_anchor,
                    current is not None and current.mapped,
                )
                continue
            starts_at = customer.cycles[-1].starts_at
            assert starts_at is not None
            if starts_at == anchor:
                log.info(
                    "billing cycle of %s (tenant %s) follows Stripe subscription %s: new periods"
                    " from its anchor %s; the period before ends there, as Stripe's invoice does",
                    customer_ref,
                    tenant_id,
                    subscription.id,
                    f"{anchor:%F %T}",
                )
            else:
                log.warning(
                    "billing cycle of %s (tenant %s) follows Stripe subscription %s from %s,"
                    " not from its anchor %s: pushes stamped after the anchor (or an anchor"
                    " outside the running period) keep what Stripe holds where it is. Usage"
                    " between the two is billed by Stripe in its next period and counted here"
                    " in the cut one: check the cut period's final parity"
                    " (GET /v1/audit/invoice) and decide the adjustment it proposes",
                    customer_ref,
                    tenant_id,
                    subscription.id,
                    f"{starts_at:%F %T}",
                    f"{anchor:%F %T}",
                )
            changed += 1
        return changed
