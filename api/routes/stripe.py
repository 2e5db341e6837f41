"""Stripe mappings, customers and the invoice audit: /v1/mappings, /v1/customers, /v1/audit."""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from litestar import Response, delete, get, post
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from api.auth import PrincipalDep, ServicesDep, requires
from api.controller import V1Controller
from api.problems import created_or_same, error_responses
from api.queries.audit import build_audit
from api.queries.mappings import customer_out, mapping_out
from api.query import given_once
from api.schemas import (
    CustomerIn,
    CustomerOut,
    CustomerPage,
    FieldError,
    InvoiceAudit,
    MappingIn,
    MappingOut,
    MappingPage,
    parse_time,
)
from domain import fields
from domain.errors import NotFoundError
from domain.tenancy import Scope


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
        out = mapping_out(mapping, definition)
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
        return mapping_out(mapping, definition)

    @get(guards=[requires(Scope.READ)], sync_to_thread=True, responses=error_responses(401, 403))
    def list_mappings(self, svc: ServicesDep, principal: PrincipalDep) -> MappingPage:
        tenant = svc.tenant(principal.tenant_id)
        return MappingPage(
            [mapping_out(m, tenant.metrics[m.metric]) for _, m in sorted(tenant.mappings.items())]
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
