"""Mapping metrics and customers onto Stripe, checked against Stripe as they are saved."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from domain import fields
from domain.application import MeteringApp
from domain.customers import Customer, check_stripe_customer_id
from domain.errors import InvalidInputError
from domain.mappings import MeterMapping, check_formula, required_formula
from domain.stripe_port import StripeGateway, StripeMeter, StripeRejectedError


class StripeMappingService:
    def __init__(
        self, app: MeteringApp, gateway: StripeGateway, shadow: StripeGateway | None = None
    ) -> None:
        self.app = app
        self.gateway = gateway
        self.shadow = shadow

    def map_meter(
        self,
        tenant_id: UUID,
        metric: str,
        stripe_meter_id: str | None = None,
        stripe_event_name: str | None = None,
        create_meter: bool = False,
        shadow_event_name: str | None = None,
    ) -> tuple[MeterMapping, bool]:
        """Map a declared metric to a Stripe meter that exists (or is created) and fits.

        True when the mapping is new or changed.
        """
        if stripe_event_name is not None:
            fields.stripe_event_name(stripe_event_name)
        if shadow_event_name is not None:
            fields.stripe_event_name(shadow_event_name, "shadowEventName")
        definition = self.app.metric(tenant_id, metric)
        event_name = stripe_event_name or definition.stripe_event_name or definition.name
        meter = self._meter(self.gateway, "stripeMeterId", stripe_meter_id, event_name)
        if meter is None:
            if not create_meter:
                raise InvalidInputError(
                    "stripeEventName",
                    f"Stripe has no active meter with event name {event_name!r}"
                    " (send createMeter: true to create it)",
                )
            meter = self.gateway.create_meter(
                definition.name, event_name, required_formula(definition.aggregation)
            )
        check_formula(definition.aggregation, meter.formula)
        shadow_meter = None
        if shadow_event_name is not None:
            if self.shadow is None:
                raise InvalidInputError(
                    "shadowEventName", "shadow mode needs STRIPE_TEST_SECRET_KEY to be set"
                )
            shadow_meter = self._meter(self.shadow, "shadowEventName", None, shadow_event_name)
            if shadow_meter is None:
                shadow_meter = self.shadow.create_meter(
                    definition.name, shadow_event_name, required_formula(definition.aggregation)
                )
            check_formula(definition.aggregation, shadow_meter.formula)
        mapping = MeterMapping(
            metric=metric,
            stripe_meter_id=meter.id,
            stripe_event_name=meter.event_name,
            stripe_formula=meter.formula,
            customer_key=meter.customer_key,
            value_key=meter.value_key,
            shadow_meter_id=shadow_meter.id if shadow_meter else None,
            shadow_event_name=shadow_meter.event_name if shadow_meter else None,
        )
        return mapping, self.app.map_meter(tenant_id, mapping)

    def _meter(
        self, gateway: StripeGateway, field: str, meter_id: str | None, event_name: str
    ) -> StripeMeter | None:
        if meter_id is None:
            return gateway.find_meter(event_name)
        try:
            meter = gateway.retrieve_meter(meter_id)
        except StripeRejectedError:
            raise InvalidInputError(field, f"Stripe has no meter {meter_id}") from None
        if meter.status != "active":
            raise InvalidInputError(field, f"Stripe meter {meter_id} is {meter.status}")
        return meter

    def map_customer(
        self,
        tenant_id: UUID,
        customer_ref: str,
        stripe_customer_id: str,
        billing_cycle_anchor: datetime | None = None,
        shadow_stripe_customer_id: str | None = None,
    ) -> tuple[Customer, bool]:
        """Map a customer; the billing anchor is their Stripe subscription's unless given."""
        fields.customer_ref(customer_ref)
        check_stripe_customer_id("stripeCustomerId", stripe_customer_id)
        if not self.gateway.customer_exists(stripe_customer_id):
            raise InvalidInputError(
                "stripeCustomerId", f"Stripe has no customer {stripe_customer_id}"
            )
        if shadow_stripe_customer_id is not None:
            if self.shadow is None:
                raise InvalidInputError(
                    "shadowStripeCustomerId", "shadow mode needs STRIPE_TEST_SECRET_KEY to be set"
                )
            if not self.shadow.customer_exists(shadow_stripe_customer_id):
                raise InvalidInputError(
                    "shadowStripeCustomerId",
                    f"the Stripe test account has no customer {shadow_stripe_customer_id}",
                )
        anchor = billing_cycle_anchor or self.gateway.billing_cycle_anchor(stripe_customer_id)
        return self.app.map_customer(
            tenant_id, customer_ref, stripe_customer_id, anchor, shadow_stripe_customer_id
        )
