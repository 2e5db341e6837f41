"""Mapping metrics and customers onto Stripe: checked against Stripe, claimed as they are saved.

Every mapping claims the Stripe objects it pushes to (domain/ownership.py)
in the same transaction as the mapping itself: the live meter's event name
and customer id under the live account, the shadow ones under the shadow
(test) account. Remapping gives up the old objects and claims the new ones
in that one save; unmapping gives them up.

A metric is not moved to another meter while an open period has pushed
usage to the one it has: the new meter would hold only what is pushed after
the move (see ``_check_remap``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from domain import fields
from domain.application import SAVE_ATTEMPTS, MeteringApp
from domain.customers import Customer, check_stripe_customer_id
from domain.errors import ConflictError, InvalidInputError, NotFoundError
from domain.mappings import MeterMapping, check_formula, required_formula
from domain.meters import MetricDefinition
from domain.ownership import (
    ClaimChanges,
    StripeClaim,
    StripeObject,
    StripeObjectKind,
    claim_id_for,
)
from domain.recording import PeriodLoader
from domain.stripe_port import StripeGateway, StripeMeter, StripeRejectedError
from domain.tenancy import Tenant

T = TypeVar("T")
CUSTOMER = StripeObjectKind.CUSTOMER
METER = StripeObjectKind.METER


class PushedOpenPeriods(Protocol):
    """The open periods whose pushes to a target Stripe holds or may hold (confirmed or pending)."""

    def pushed_open_periods(self, tenant_id: UUID, metric: str, target: str) -> list[str]:
        """Of one metric, any customer: their keys."""

    def customer_pushed_open_periods(
        self, tenant_id: UUID, customer_ref: str, target: str
    ) -> list[str]:
        """Of one customer, any metric: ``metric period`` for each."""


@dataclass(frozen=True)
class CheckedMeter:
    """What ``check_meter`` found: the metric, and its Stripe meters (None: to be created)."""

    definition: MetricDefinition
    event_name: str
    meter: StripeMeter | None
    shadow_meter: StripeMeter | None


class StripeMappingService:
    def __init__(
        self,
        app: MeteringApp,
        gateway: StripeGateway,
        shadow: StripeGateway | None = None,
        pushed_open: PushedOpenPeriods | None = None,
    ) -> None:
        self.app = app
        self.gateway = gateway
        self.shadow = shadow
        self.pushed_open = pushed_open

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
        tenant = self.app.fresh_tenant(tenant_id)
        checked = self.check_meter(
            tenant, metric, stripe_meter_id, stripe_event_name, create_meter, shadow_event_name
        )
        definition = checked.definition
        formula = required_formula(definition.aggregation)
        meter = checked.meter or self.gateway.create_meter(
            definition.name, checked.event_name, formula
        )
        check_formula(definition.aggregation, meter.formula)
        shadow_meter = checked.shadow_meter
        if shadow_event_name is not None and shadow_meter is None:
            assert self.shadow is not None  # check_meter refused shadow mode without it
            shadow_meter = self.shadow.create_meter(definition.name, shadow_event_name, formula)
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
        return mapping, self._save_meter(tenant_id, mapping)

    def check_meter(
        self,
        tenant: Tenant,
        metric: str,
        stripe_meter_id: str | None = None,
        stripe_event_name: str | None = None,
        create_meter: bool = False,
        shadow_event_name: str | None = None,
    ) -> CheckedMeter:
        """Every check ``map_meter`` makes before it writes anything, to Stripe or the log.

        ``tenant`` is a fresh copy, which may hold unsaved changes (the metrics
        a config file declares in the same run: api/config_file.py). Stripe is
        only read: a meter to be created is None in the answer. Taking the
        meter's claim is tried on unsaved copies, so a meter another tenant
        owns is refused here too.
        """
        if stripe_event_name is not None:
            fields.stripe_event_name(stripe_event_name)
        if shadow_event_name is not None:
            fields.stripe_event_name(shadow_event_name, "shadowEventName")
        definition = tenant.metric(metric)
        event_name = stripe_event_name or definition.stripe_event_name or definition.name
        # Refused before Stripe is asked (or a meter created) when the move shows by
        # name already; the save checks again with the meter found.
        current = tenant.mappings.get(metric)
        self._check_remap(tenant.id, metric, current, (None, event_name), shadow_event_name)
        meter = self._meter(self.gateway, "stripeMeterId", stripe_meter_id, event_name)
        if meter is None and not create_meter:
            raise InvalidInputError(
                "stripeEventName",
                f"Stripe has no active meter with event name {event_name!r}"
                " (send createMeter: true to create it)",
            )
        if meter is not None:
            check_formula(definition.aggregation, meter.formula)
        shadow_meter = None
        if shadow_event_name is not None:
            if self.shadow is None:
                raise InvalidInputError(
                    "shadowEventName", "shadow mode needs STRIPE_TEST_SECRET_KEY to be set"
                )
            shadow_meter = self._meter(self.shadow, "shadowEventName", None, shadow_event_name)
            if shadow_meter is not None:
                check_formula(definition.aggregation, shadow_meter.formula)
        planned = MeterMapping(
            metric=metric,
            stripe_meter_id=meter.id if meter else "",
            stripe_event_name=meter.event_name if meter else event_name,
            stripe_formula=required_formula(definition.aggregation),
            shadow_event_name=shadow_meter.event_name if shadow_meter else shadow_event_name,
        )
        self._claims(tenant.id, metric).move(
            self.meter_objects(current), self.meter_objects(planned), "remapped"
        )
        return CheckedMeter(definition, planned.stripe_event_name, meter, shadow_meter)

    def _save_meter(self, tenant_id: UUID, mapping: MeterMapping) -> bool:
        def change() -> tuple[list[Any], bool]:
            tenant = self.app.fresh_tenant(tenant_id)
            claims = self._claims(tenant_id, mapping.metric)
            old = tenant.mappings.get(mapping.metric)
            live = (mapping.stripe_meter_id, mapping.stripe_event_name)
            self._check_remap(tenant_id, mapping.metric, old, live, mapping.shadow_event_name)
            claims.move(self.meter_objects(old), self.meter_objects(mapping), "remapped")
            changed = tenant.map_meter(mapping)
            return [tenant, *claims.aggregates], changed

        changed = self._save(change)
        self.app.tenant(tenant_id)
        return changed

    def _check_remap(
        self,
        tenant_id: UUID,
        metric: str,
        old: MeterMapping | None,
        live: tuple[str | None, str],
        shadow_event_name: str | None,
    ) -> None:
        """Refuse to move a metric to another meter while an open period has pushed to its own.

        ``live`` is the new live meter (its id, None while not looked up yet,
        and its event name); ``shadow_event_name`` the new shadow one, if any.
        Stripe sums each meter on its own: the new meter would get only what
        is pushed after the move, and the period's invoice would bill that
        part. The pushes are read from the ledger view, which may lag the log
        by a moment: a push recorded between that read and this save is not
        seen, and the remap goes through (the save is race-checked only on
        the tenant and the claims). Reconciliation then names the cause
        (``meter remapped mid-period``) instead of calling it lag.

        An unmapped metric is checked against the meter it had last, so that
        unmapping and mapping again is no way around this.
        """
        if self.pushed_open is None:
            return
        if old is None:
            old = self._last_mapping(tenant_id, metric)
            if old is None:
                return
        meter_id, event_name = live
        moves = []
        if event_name != old.stripe_event_name or meter_id not in (None, old.stripe_meter_id):
            moves.append(("live", old.stripe_event_name))
        if shadow_event_name not in (None, old.shadow_event_name) and old.shadow_event_name:
            moves.append(("shadow", old.shadow_event_name))
        for target, old_name in moves:
            periods = self.pushed_open.pushed_open_periods(tenant_id, metric, target)
            if periods:
                raise ConflictError(
                    f"metric {metric!r} has usage pushed to the {target} meter"
                    f" {old_name!r} in open periods ({', '.join(periods)}): a new meter"
                    " would hold only what is pushed after the change, and those invoices"
                    " would bill that part. Remap once those periods are closed (or unmap"
                    " now and map again after they close); moving the pushed total to"
                    " another meter is not offered yet"
                )

    def _last_mapping(self, tenant_id: UUID, metric: str) -> MeterMapping | None:
        """The meter a metric was mapped to last, from the tenant's events (a rare read)."""
        last = None
        for event in self.app.repository.event_store.get(tenant_id):
            if isinstance(event, Tenant.MeterMapped) and event.metric == metric:
                last = event
        if last is None:
            return None
        return MeterMapping(
            metric=metric,
            stripe_meter_id=last.stripe_meter_id,
            stripe_event_name=last.stripe_event_name,
            stripe_formula=last.stripe_formula,
            customer_key=last.customer_key,
            value_key=last.value_key,
            shadow_meter_id=last.shadow_meter_id,
            shadow_event_name=last.shadow_event_name,
        )

    def unmap_meter(self, tenant_id: UUID, metric: str) -> MeterMapping:
        """Stop pushing a metric to Stripe and give up its meters; the mapping it had.

        Its usage is still counted; what was not pushed stays unpushed until
        the metric is mapped again.
        """

        def change() -> tuple[list[Any], MeterMapping]:
            tenant = self.app.fresh_tenant(tenant_id)
            mapping = tenant.unmap_meter(metric, "unmapped")
            claims = self._claims(tenant_id, metric)
            claims.move(self.meter_objects(mapping), (), "unmapped")
            return [tenant, *claims.aggregates], mapping

        removed = self._save(change)
        self.app.tenant(tenant_id)
        return removed

    def unmap_customer(self, tenant_id: UUID, customer_ref: str) -> Customer:
        """Stop pushing a customer's usage to Stripe and give up its Stripe customers.

        The customer keeps its billing cycle (its periods are named by it)
        and its usage is still counted.
        """

        def change() -> tuple[list[Any], Customer]:
            customer = self.app.fresh_customer(tenant_id, customer_ref)
            if customer is None or not customer.mapped:
                raise NotFoundError(f"customer {customer_ref!r} is not mapped to Stripe")
            objects = self.customer_objects(customer)
            customer.unmap("unmapped")
            claims = self._claims(tenant_id, customer_ref)
            claims.move(objects, (), "unmapped")
            return [customer, *claims.aggregates], customer

        customer = self._save(change)
        self.app.customer(tenant_id, customer_ref)
        return customer

    # -- claims -----------------------------------------------------------------

    def meter_objects(self, mapping: MeterMapping | None) -> list[StripeObject]:
        """The Stripe objects a meter mapping pushes to: its event names, per account."""
        if mapping is None:
            return []
        found = [StripeObject(self.gateway.account_id(), METER, mapping.stripe_event_name)]
        if mapping.shadow_event_name is not None and self.shadow is not None:
            found.append(StripeObject(self.shadow.account_id(), METER, mapping.shadow_event_name))
        return found

    def customer_objects(self, customer: Customer | None) -> list[StripeObject]:
        """The Stripe customers a mapped customer's usage is pushed to, per account."""
        if customer is None or not customer.mapped:
            return []
        found = [StripeObject(self.gateway.account_id(), CUSTOMER, customer.stripe_customer_id)]
        shadow_id = customer.shadow_stripe_customer_id
        if shadow_id is not None and self.shadow is not None:
            found.append(StripeObject(self.shadow.account_id(), CUSTOMER, shadow_id))
        return found

    def _claims(self, tenant_id: UUID, holder: str) -> ClaimChanges:
        return ClaimChanges(self.claim_by_id, tenant_id, holder)

    def claim(self, obj: StripeObject) -> StripeClaim | None:
        """The claim on a Stripe object, when one was ever recorded."""
        return self.claim_by_id(claim_id_for(obj))

    def claim_by_id(self, claim_id: UUID) -> StripeClaim | None:
        try:
            claim: StripeClaim = self.app.repository.get(claim_id)
        except AggregateNotFoundError:
            return None
        return claim

    def _save(self, change: Callable[[], tuple[list[Any], T]]) -> T:
        """Decide ``change`` on fresh copies and save what it returns in one transaction.

        ``change`` works on fresh, uncached copies (``fresh_tenant``,
        ``fresh_customer``): a change refused half-way never leaves a cached
        copy that pushes would read with an unsaved mapping. A collision
        (another request changed the tenant, the customer or a claim
        meanwhile) decides again: a claim taken by another tenant then refuses
        this change.
        """
        for _ in range(SAVE_ATTEMPTS):
            aggregates, result = change()
            pending = [a for a in aggregates if a.pending_events]
            try:
                if pending:
                    self.app.save(*pending)
            except IntegrityError:
                continue
            return result
        raise ConflictError("this mapping is being changed concurrently; try again")

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
        anchor, billed_from = billing_cycle_anchor, None
        if anchor is None:
            cycle = self.gateway.subscription_cycle(stripe_customer_id)
            if cycle is not None:
                anchor, billed_from = cycle.anchor, cycle.started_at
        result: list[tuple[Customer, bool]] = []

        def change(loader: PeriodLoader) -> Sequence[Any]:
            result.clear()
            old = self.app.fresh_customer(tenant_id, customer_ref)
            customer, changed, periods = self.app.prepare_customer_mapping(
                loader,
                tenant_id,
                customer_ref,
                stripe_customer_id,
                anchor,
                shadow_stripe_customer_id,
                billed_from,
            )
            self._check_customer_remap(old, customer)
            claims = self._claims(tenant_id, customer_ref)
            claims.move(self.customer_objects(old), self.customer_objects(customer), "remapped")
            result.append((customer, changed))
            return [customer, *claims.aggregates, *periods]

        self.app.usage.change_periods(change)
        self.app.customer(tenant_id, customer_ref)
        return result[0]

    def _check_customer_remap(self, old: Customer | None, new: Customer) -> None:
        """Refuse to move a customer to another Stripe customer while open periods have pushes.

        As for meters (``_check_remap``): Stripe sums each customer on its own,
        so the new Stripe customer's invoice would bill only what is pushed
        after the move. An unmapped customer keeps its last Stripe ids, so
        unmapping and mapping again is no way around this.
        """
        if self.pushed_open is None or old is None:
            return
        moves = []
        if new.stripe_customer_id != old.stripe_customer_id:
            moves.append(("live", old.stripe_customer_id))
        if old.shadow_stripe_customer_id not in (None, new.shadow_stripe_customer_id):
            moves.append(("shadow", old.shadow_stripe_customer_id))
        for target, old_id in moves:
            periods = self.pushed_open.customer_pushed_open_periods(
                new.tenant_id, new.customer_ref, target
            )
            if periods:
                raise ConflictError(
                    f"customer {new.customer_ref!r} has usage pushed to the {target} Stripe"
                    f" customer {old_id} in open periods ({', '.join(periods)}): another Stripe"
                    " customer would hold only what is pushed after the change, and its"
                    " invoices would bill that part. Remap once those periods are closed"
                )
