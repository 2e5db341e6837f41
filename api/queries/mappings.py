"""Stripe mappings and customers as the API shows them: one shape for the routes and the CLI."""

from __future__ import annotations

from api.queries.usage import when
from api.schemas import CustomerOut, MappingOut
from domain.customers import Customer
from domain.mappings import PUSH_MODE, MeterMapping
from domain.meters import MetricDefinition
from projections.customers import CustomerRow


def mapping_out(mapping: MeterMapping, metric: MetricDefinition) -> MappingOut:
    """A metric's Stripe meter, with how the metric is pushed to it (delta or value)."""
    return MappingOut(
        metric=mapping.metric,
        stripe_meter_id=mapping.stripe_meter_id,
        stripe_event_name=mapping.stripe_event_name,
        stripe_formula=mapping.stripe_formula,
        push=PUSH_MODE[metric.aggregation].value,
        shadow_meter_id=mapping.shadow_meter_id,
        shadow_event_name=mapping.shadow_event_name,
    )


def customer_out(customer: Customer | CustomerRow) -> CustomerOut:
    anchor = customer.billing_cycle_anchor
    return CustomerOut(
        customer_ref=customer.customer_ref,
        stripe_customer_id=customer.stripe_customer_id,
        billing_cycle="anchored" if anchor else "calendar-month",
        billing_cycle_anchor=when(anchor),
        shadow_stripe_customer_id=customer.shadow_stripe_customer_id,
    )
