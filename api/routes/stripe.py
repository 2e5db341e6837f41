"""Stripe mappings, customers and the invoice audit: /v1/mappings, /v1/customers, /v1/audit."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import anyio.to_thread
from litestar import Response, delete, get, post
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from adapters.persistence import Stores
from api.auth import PrincipalDep, ServicesDep, requires
from api.controller import V1Controller
from api.problems import created_or_same, error_responses
from api.query import given_once, whole_number
from api.routes.usage import counter_out, decode_cursor, encode_cursor, event_out, when
from api.schemas import (
    ClosingOut,
    CustomerIn,
    CustomerOut,
    CustomerPage,
    FieldError,
    InvoiceAudit,
    MappingIn,
    MappingOut,
    MappingPage,
    PushOut,
    RepairOut,
    parse_time,
)
from domain import fields
from domain.customers import Customer
from domain.errors import NotFoundError
from domain.ledger import stripe_expected
from domain.mappings import PUSH_MODE, MeterMapping, PushMode
from domain.periods import BillingPeriod, named_period
from domain.tenancy import Scope
from domain.usage import usage_period_id
from projections.customers import CustomerRow

AUDIT_EVENTS = 100


def mapping_out(mapping: MeterMapping, push: str) -> MappingOut:
    return MappingOut(
        metric=mapping.metric,
        stripe_meter_id=mapping.stripe_meter_id,
        stripe_event_name=mapping.stripe_event_name,
        stripe_formula=mapping.stripe_formula,
        push=push,
        shadow_meter_id=mapping.shadow_meter_id,
        shadow_event_name=mapping.shadow_event_name,
    )


class MappingsController(V1Controller):
    """Which Stripe meter each metric is pushed to (``admin`` to change, ``read`` to list)."""

    path = "/v1/mappings"
    tags = ["stripe"]

    @post(
        guards=[requires(Scope.ADMIN)],
        responses=created_or_same(
            MappingOut, "Already mapped so", 400, 401, 403, 404, 409, 422, 503
        ),
    )
    async def map_meter(
        self, svc: ServicesDep, principal: PrincipalDep, data: JSONBody[MappingIn]
    ) -> Response[MappingOut]:
        """Map a metric to a Stripe meter, checked against Stripe (exists, active, formula
        fits)."""
        service = svc.stripe_mapping()
        mapping, changed = await anyio.to_thread.run_sync(
            lambda: service.map_meter(
                principal.tenant_id,
                data.metric,
                stripe_meter_id=data.stripe_meter_id,
                stripe_event_name=data.stripe_event_name,
                create_meter=data.create_meter,
                shadow_event_name=data.shadow_event_name,
            )
        )
        definition = svc.stores.app.metric(principal.tenant_id, data.metric)
        out = mapping_out(mapping, PUSH_MODE[definition.aggregation].value)
        return Response(out, status_code=201 if changed else 200)

    @delete(
        "/{metric:str}",
        status_code=200,
        guards=[requires(Scope.ADMIN)],
        responses=error_responses(400, 401, 403, 404, 409, 422, 503),
    )
    async def unmap_meter(
        self, svc: ServicesDep, principal: PrincipalDep, metric: FromPath[str]
    ) -> MappingOut:
        """Stop pushing a metric to Stripe and give up its meter; answers the mapping it had.

        Usage of the metric is still counted; what was not pushed stays unpushed
        until the metric is mapped again (docs/tenancy.md).
        """
        name = fields.metric(metric)
        service = svc.stripe_mapping()
        definition = svc.stores.app.metric(principal.tenant_id, name)
        mapping = await anyio.to_thread.run_sync(
            lambda: service.unmap_meter(principal.tenant_id, name)
        )
        return mapping_out(mapping, PUSH_MODE[definition.aggregation].value)

    @get(guards=[requires(Scope.READ)], sync_to_thread=True, responses=error_responses(401, 403))
    def list_mappings(self, svc: ServicesDep, principal: PrincipalDep) -> MappingPage:
        tenant = svc.tenant(principal.tenant_id)
        return MappingPage(
            [
                mapping_out(m, PUSH_MODE[tenant.metrics[m.metric].aggregation].value)
                for _, m in sorted(tenant.mappings.items())
            ]
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


class CustomersController(V1Controller):
    """Which Stripe customer each customerRef bills to (``admin`` to change, ``read`` to list)."""

    path = "/v1/customers"
    tags = ["stripe"]

    @post(
        guards=[requires(Scope.ADMIN)],
        responses=created_or_same(
            CustomerOut, "Already mapped so", 400, 401, 403, 404, 409, 422, 503
        ),
    )
    async def map_customer(
        self, svc: ServicesDep, principal: PrincipalDep, data: JSONBody[CustomerIn]
    ) -> Response[CustomerOut]:
        """Map a customer to Stripe. Its billing periods then follow its subscription's
        anchor."""
        fields.customer_ref(data.customer_ref)
        anchor = None
        if data.billing_cycle_anchor is not None:
            anchor = parse_time("billingCycleAnchor", data.billing_cycle_anchor)
        service = svc.stripe_mapping()
        customer, changed = await anyio.to_thread.run_sync(
            lambda: service.map_customer(
                principal.tenant_id,
                data.customer_ref,
                data.stripe_customer_id,
                anchor,
                data.shadow_stripe_customer_id,
            )
        )
        return Response(customer_out(customer), status_code=201 if changed else 200)

    @delete(
        "/{customer_ref:str}",
        status_code=200,
        guards=[requires(Scope.ADMIN)],
        responses=error_responses(400, 401, 403, 404, 409, 422, 503),
    )
    async def unmap_customer(
        self, svc: ServicesDep, principal: PrincipalDep, customer_ref: FromPath[str]
    ) -> CustomerOut:
        """Stop pushing a customer's usage to Stripe and give up its Stripe customer.

        Answers the mapping it had. The customer keeps its billing cycle, and its
        usage is still counted (docs/tenancy.md).
        """
        ref = fields.customer_ref(customer_ref)
        service = svc.stripe_mapping()
        customer = await anyio.to_thread.run_sync(
            lambda: service.unmap_customer(principal.tenant_id, ref)
        )
        return customer_out(customer)

    @get(
        guards=[requires(Scope.READ)],
        before_request=given_once,
        sync_to_thread=True,
        responses=error_responses(400, 401, 403, 422),
    )
    def list_customers(
        self,
        svc: ServicesDep,
        principal: PrincipalDep,
        cursor: FromQuery[str | None] = None,
        limit: FromQuery[int] = 100,
    ) -> CustomerPage:
        if not 1 <= limit <= 1000:
            raise FieldError("limit", "must be between 1 and 1000")
        # The cursor is the last customerRef of a page: never empty, longer than 255 or
        # with a NUL.
        if cursor is not None and (not cursor or len(cursor) > 255 or "\x00" in cursor):
            raise FieldError("cursor", "is not a cursor this API returned")
        rows = svc.stores.views.customers.page(principal.tenant_id, cursor, limit + 1)
        page = rows[:limit]
        return CustomerPage(
            data=[customer_out(r) for r in page],
            next_cursor=page[-1].customer_ref if len(rows) > limit else None,
        )

    @get(
        "/{customer_ref:str}",
        guards=[requires(Scope.READ)],
        sync_to_thread=True,
        responses=error_responses(400, 401, 403, 404),
    )
    def get_customer(
        self, svc: ServicesDep, principal: PrincipalDep, customer_ref: FromPath[str]
    ) -> CustomerOut:
        customer = svc.stores.app.customer(principal.tenant_id, customer_ref)
        if customer is None or not customer.mapped:
            raise NotFoundError(f"customer {customer_ref!r} is not mapped to Stripe")
        return customer_out(customer)


class AuditController(V1Controller):
    path = "/v1/audit"
    tags = ["stripe"]
    guards = [requires(Scope.READ)]

    @get(
        "/invoice",
        before_request=given_once,
        sync_to_thread=True,
        responses=error_responses(400, 401, 403, 404, 422),
    )
    def invoice_audit(
        self,
        svc: ServicesDep,
        principal: PrincipalDep,
        customer_ref: Annotated[str, QueryParameter(name="customerRef")],
        metric: FromQuery[str],
        period: FromQuery[str | None] = None,
        push: FromQuery[str | None] = None,
        cursor: FromQuery[str | None] = None,
    ) -> InvoiceAudit:
        """One invoice line, traced: the counter, every push to Stripe and the events each
        covered.

        Each push lists its first 100 events; to page one push's events, pass
        ``push=<target>:<number>`` and that push's ``eventsNextCursor``.
        """
        return build_audit(
            svc.stores, principal.tenant_id, customer_ref, metric, period, push, cursor
        )


def build_audit(
    stores: Stores,
    tenant_id: UUID,
    customer_ref: str,
    metric: str,
    period: str | None = None,
    push: str | None = None,
    cursor: str | None = None,
) -> InvoiceAudit:
    """The audit of one invoice line (shared by the API and the CLI)."""
    app, views = stores.app, stores.views
    fields.customer_ref(customer_ref)
    app.metric(tenant_id, metric)
    customer = app.customer(tenant_id, customer_ref)
    anchor = customer.billing_cycle_anchor if customer else None
    billing_period: BillingPeriod = (
        named_period(period, anchor, customer_ref)
        if period is not None
        else app.period_for(tenant_id, customer_ref, app.clock())
    )
    period_id = usage_period_id(tenant_id, customer_ref, metric, billing_period.key)
    wanted, after = _paging(push, cursor)
    counters = views.counters.counters(
        tenant_id, customer_ref=customer_ref, metric=metric, period=billing_period.key
    )
    pushes = []
    covered = 0
    for row in views.ledger.pushes(period_id):
        paged = wanted == (row.target, row.number)
        events = views.events.covered(
            period_id, row.covers_from, row.covers_to, after if paged else 0, AUDIT_EVENTS + 1
        )
        if row.status == "confirmed" and row.target == "live":
            covered = max(covered, row.covers_to)
        pushes.append(
            PushOut(
                target=row.target,
                number=row.number,
                identifier=row.identifier,
                value=row.value,
                mode=row.mode,
                status=row.status,
                settled_by=row.how,
                reason=row.reason,
                stripe_timestamp=when(row.stripe_timestamp) or "",
                requested_at=when(row.intended_at) or "",
                settled_at=when(row.settled_at),
                covers_versions=[row.covers_from, row.covers_to],
                events=[event_out(e) for e in events[:AUDIT_EVENTS]],
                events_next_cursor=_cursor(events),
                purpose=row.purpose,
            )
        )
    unpushed = views.events.covered(
        period_id, covered + 1, 2**62, after if wanted == ("unpushed", 0) else 0, AUDIT_EVENTS + 1
    )
    mode = PUSH_MODE[counters[0].aggregation].value if counters else PushMode.VALUE.value
    confirmed = {
        ledger.target: stripe_expected(
            mode, ledger.confirmed_total, ledger.external_total, ledger.confirmed_value
        )
        for ledger in views.ledger.ledgers([period_id])
    }
    closing = views.reports.closing(period_id)
    return InvoiceAudit(
        closing=None
        if closing is None
        else ClosingOut(
            invoice_id=closing.invoice_id,
            finalizes_at=when(closing.finalizes_at),
            closed_at=when(closing.closed_at),
            verdict=closing.verdict,
            local=closing.local,
            stripe=closing.stripe,
            invoice_quantity=closing.invoice_quantity,
        ),
        customer_ref=customer_ref,
        metric=metric,
        period=billing_period.key,
        period_start=when(billing_period.start) or "",
        period_end=when(billing_period.end) or "",
        counter=counter_out(counters[0]) if counters else None,
        stripe_units_confirmed=confirmed,
        pushes=pushes,
        unpushed_events=[event_out(e) for e in unpushed[:AUDIT_EVENTS]],
        unpushed_next_cursor=_cursor(unpushed),
        repairs=[
            RepairOut(
                target=r.target,
                recorded_at=when(r.recorded_at) or "",
                stripe_total=r.stripe_total,
                expected_total=r.expected_total,
                actor=r.actor,
                reason=r.reason,
            )
            for r in views.ledger.repairs(period_id)
        ],
    )


def _paging(push: str | None, cursor: str | None) -> tuple[tuple[str, int] | None, int]:
    if push is None:
        if cursor is not None:
            raise FieldError("push", "is required with cursor: name the push to page")
        return None, 0
    after = decode_cursor(cursor) if cursor is not None else 0
    if push == "unpushed":
        return ("unpushed", 0), after
    target, _, number = push.partition(":")
    reason = "must be <target>:<number> (e.g. live:3) or 'unpushed'"
    if target not in ("live", "shadow"):
        raise FieldError("push", reason)
    return (target, whole_number("push", number, reason)), after


def _cursor(events: list[Any]) -> str | None:
    return encode_cursor(events[AUDIT_EVENTS - 1].version) if len(events) > AUDIT_EVENTS else None
