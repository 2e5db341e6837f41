"""Stripe mappings, customers and the invoice audit: /v1/mappings, /v1/customers, /v1/audit."""

from __future__ import annotations

from typing import Annotated, Any

import anyio.to_thread
from litestar import Request, Response, delete, get, post
from litestar.params import FromPath, FromQuery, QueryParameter

from api.auth import authorize, authorize_async, services
from api.queries.audit import build_audit
from api.queries.usage import when
from api.query import given_once
from api.schemas import (
    CustomerIn,
    CustomerOut,
    FieldError,
    InvoiceAudit,
    MappingIn,
    MappingOut,
    decode_json,
    parse_time,
)
from domain import fields
from domain.customers import Customer
from domain.errors import NotFoundError
from domain.mappings import PUSH_MODE, MeterMapping
from domain.tenancy import Scope
from projections.customers import CustomerRow


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


@post("/v1/mappings")
async def map_meter(request: Request[Any, Any, Any]) -> Response[MappingOut]:
    """Map a metric to a Stripe meter, checked against Stripe (exists, active, formula fits)."""
    principal = await authorize_async(request, Scope.ADMIN)
    body = decode_json(await request.body(), MappingIn)
    svc = services(request)
    service = svc.stripe_mapping()
    mapping, changed = await anyio.to_thread.run_sync(
        lambda: service.map_meter(
            principal.tenant_id,
            body.metric,
            stripe_meter_id=body.stripe_meter_id,
            stripe_event_name=body.stripe_event_name,
            create_meter=body.create_meter,
            shadow_event_name=body.shadow_event_name,
        )
    )
    definition = svc.stores.app.metric(principal.tenant_id, body.metric)
    out = mapping_out(mapping, PUSH_MODE[definition.aggregation].value)
    return Response(out, status_code=201 if changed else 200)


@delete("/v1/mappings/{metric:str}", status_code=200)
async def unmap_meter(request: Request[Any, Any, Any], metric: FromPath[str]) -> MappingOut:
    """Stop pushing a metric to Stripe and give up its meter; answers the mapping it had.

    Usage of the metric is still counted; what was not pushed stays unpushed
    until the metric is mapped again (docs/tenancy.md).
    """
    principal = await authorize_async(request, Scope.ADMIN)
    name = fields.metric(metric)
    svc = services(request)
    service = svc.stripe_mapping()
    definition = svc.stores.app.metric(principal.tenant_id, name)
    mapping = await anyio.to_thread.run_sync(lambda: service.unmap_meter(principal.tenant_id, name))
    return mapping_out(mapping, PUSH_MODE[definition.aggregation].value)


@get("/v1/mappings", sync_to_thread=True)
def list_mappings(request: Request[Any, Any, Any]) -> dict[str, list[MappingOut]]:
    principal = authorize(request, Scope.READ)
    tenant = services(request).tenant(principal.tenant_id)
    return {
        "data": [
            mapping_out(m, PUSH_MODE[tenant.metrics[m.metric].aggregation].value)
            for _, m in sorted(tenant.mappings.items())
        ]
    }


def customer_out(customer: Customer | CustomerRow) -> CustomerOut:
    anchor = customer.billing_cycle_anchor
    return CustomerOut(
        customer_ref=customer.customer_ref,
        stripe_customer_id=customer.stripe_customer_id,
        billing_cycle="anchored" if anchor else "calendar-month",
        billing_cycle_anchor=when(anchor),
        shadow_stripe_customer_id=customer.shadow_stripe_customer_id,
    )


@post("/v1/customers")
async def map_customer(request: Request[Any, Any, Any]) -> Response[CustomerOut]:
    """Map a customer to Stripe. Its billing periods then follow its subscription's anchor."""
    principal = await authorize_async(request, Scope.ADMIN)
    body = decode_json(await request.body(), CustomerIn)
    fields.customer_ref(body.customer_ref)
    anchor = None
    if body.billing_cycle_anchor is not None:
        anchor = parse_time("billingCycleAnchor", body.billing_cycle_anchor)
    service = services(request).stripe_mapping()
    customer, changed = await anyio.to_thread.run_sync(
        lambda: service.map_customer(
            principal.tenant_id,
            body.customer_ref,
            body.stripe_customer_id,
            anchor,
            body.shadow_stripe_customer_id,
        )
    )
    return Response(customer_out(customer), status_code=201 if changed else 200)


@delete("/v1/customers/{customer_ref:str}", status_code=200)
async def unmap_customer(
    request: Request[Any, Any, Any], customer_ref: FromPath[str]
) -> CustomerOut:
    """Stop pushing a customer's usage to Stripe and give up its Stripe customer.

    Answers the mapping it had. The customer keeps its billing cycle, and its
    usage is still counted (docs/tenancy.md).
    """
    principal = await authorize_async(request, Scope.ADMIN)
    ref = fields.customer_ref(customer_ref)
    service = services(request).stripe_mapping()
    customer = await anyio.to_thread.run_sync(
        lambda: service.unmap_customer(principal.tenant_id, ref)
    )
    return customer_out(customer)


@get("/v1/customers", sync_to_thread=True, before_request=given_once)
def list_customers(
    request: Request[Any, Any, Any],
    cursor: FromQuery[str | None] = None,
    limit: FromQuery[int] = 100,
) -> dict[str, Any]:
    principal = authorize(request, Scope.READ)
    if not 1 <= limit <= 1000:
        raise FieldError("limit", "must be between 1 and 1000")
    # The cursor is the last customerRef of a page: never empty, longer than 255 or with a NUL.
    if cursor is not None and (not cursor or len(cursor) > 255 or "\x00" in cursor):
        raise FieldError("cursor", "is not a cursor this API returned")
    rows = services(request).stores.views.customers.page(principal.tenant_id, cursor, limit + 1)
    page = rows[:limit]
    return {
        "data": [customer_out(r) for r in page],
        "nextCursor": page[-1].customer_ref if len(rows) > limit else None,
    }


@get("/v1/customers/{customer_ref:str}", sync_to_thread=True)
def get_customer(request: Request[Any, Any, Any], customer_ref: FromPath[str]) -> CustomerOut:
    principal = authorize(request, Scope.READ)
    customer = services(request).stores.app.customer(principal.tenant_id, customer_ref)
    if customer is None or not customer.mapped:
        raise NotFoundError(f"customer {customer_ref!r} is not mapped to Stripe")
    return customer_out(customer)


@get("/v1/audit/invoice", sync_to_thread=True, before_request=given_once)
def invoice_audit(
    request: Request[Any, Any, Any],
    customer_ref: Annotated[str, QueryParameter(name="customerRef")],
    metric: FromQuery[str],
    period: FromQuery[str | None] = None,
    push: FromQuery[str | None] = None,
    cursor: FromQuery[str | None] = None,
) -> InvoiceAudit:
    """One invoice line, traced: the counter, every push to Stripe and the events each covered.

    Each push lists its first 100 events; to page one push's events, pass
    ``push=<target>:<number>`` and that push's ``eventsNextCursor``.
    """
    principal = authorize(request, Scope.READ)
    return build_audit(
        services(request).stores, principal.tenant_id, customer_ref, metric, period, push, cursor
    )
