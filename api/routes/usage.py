"""Reads of the event list and the running counters: /v1/events, /v1/usage/*."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

import anyio.to_thread
from litestar import get, post
from litestar.params import FromQuery, JSONBody, QueryParameter

from api.auth import PrincipalDep, ServicesDep, requires
from api.controller import V1Controller
from api.problems import error_responses
from api.queries.cursors import decode_cursor, encode_cursor
from api.queries.history import usage_history as history_of
from api.queries.projection import project_cost
from api.queries.usage import current_usage as usage_now
from api.queries.usage import event_out
from api.query import given_once
from api.schemas import (
    CurrentUsage,
    EventPage,
    FieldError,
    UsageHistory,
    parse_time,
)
from api.schemas_projection import Projection, ProjectionIn
from domain import fields
from domain.tenancy import Scope
from projections.usage_events import EventFilter

MAX_PAGE = 1_000


def optional_time(field: str, value: str | None) -> datetime | None:
    return None if value is None else parse_time(field, value)


class UsageController(V1Controller):
    """The tenant's usage events and running counters (scope ``read``)."""

    path = "/v1"
    tags = ["usage"]
    guards = [requires(Scope.READ)]

    @get(
        "/events",
        before_request=given_once,
        sync_to_thread=True,
        responses=error_responses(400, 401, 403, 422),
    )
    def list_events(
        self,
        svc: ServicesDep,
        principal: PrincipalDep,
        metric: FromQuery[str | None] = None,
        customer_ref: Annotated[str | None, QueryParameter(name="customerRef")] = None,
        since: FromQuery[str | None] = None,
        until: FromQuery[str | None] = None,
        cursor: FromQuery[str | None] = None,
        limit: FromQuery[int] = 100,
    ) -> EventPage:
        """The tenant's usage events in event-log order, filtered, a page at a time.

        Requests appear in the order they were committed; inside one group commit
        the events of one customer and metric stand together.
        """
        if not 1 <= limit <= MAX_PAGE:
            raise FieldError("limit", f"must be between 1 and {MAX_PAGE}")
        where = EventFilter(
            # A value ingest refuses matches no event; PostgreSQL would fail on a NUL in it.
            metric=None if metric is None else fields.metric(metric),
            customer_ref=None if customer_ref is None else fields.customer_ref(customer_ref),
            since=optional_time("since", since),
            until=optional_time("until", until),
        )
        after = decode_cursor(cursor) if cursor is not None else None
        rows = svc.stores.views.events.page(principal.tenant_id, where, after, limit + 1)
        page = rows[:limit]
        return EventPage(
            data=[event_out(row) for row in page],
            next_cursor=encode_cursor(page[-1].position) if len(rows) > limit else None,
        )

    @get(
        "/usage/current",
        before_request=given_once,
        sync_to_thread=True,
        responses=error_responses(400, 401, 403, 422),
    )
    def current_usage(
        self,
        svc: ServicesDep,
        principal: PrincipalDep,
        customer_ref: Annotated[str, QueryParameter(name="customerRef")],
        metric: FromQuery[str | None] = None,
        period: FromQuery[str | None] = None,
    ) -> CurrentUsage:
        """The running counters of one customer in the current (or a named) billing period."""
        fields.customer_ref(customer_ref)
        if metric is not None:
            fields.metric(metric)
        return usage_now(svc.stores, principal.tenant_id, customer_ref, metric, period)

    @get(
        "/usage/history",
        before_request=given_once,
        sync_to_thread=True,
        responses=error_responses(400, 401, 403, 404, 422),
    )
    def usage_history(
        self,
        svc: ServicesDep,
        principal: PrincipalDep,
        customer_ref: Annotated[str, QueryParameter(name="customerRef")],
        metric: FromQuery[str],
        granularity: FromQuery[str] = "day",
        since: FromQuery[str | None] = None,
        until: FromQuery[str | None] = None,
    ) -> UsageHistory:
        """Usage of one customer and metric in hour or day buckets (UTC), at most 93 days."""
        return history_of(
            svc.stores,
            principal.tenant_id,
            customer_ref,
            metric,
            granularity,
            optional_time("since", since),
            optional_time("until", until),
        )

    @get(
        "/usage/projection",
        before_request=given_once,
        responses=error_responses(400, 401, 403, 404, 422, 503),
    )
    async def cost_projection(
        self,
        svc: ServicesDep,
        principal: PrincipalDep,
        customer_ref: Annotated[str, QueryParameter(name="customerRef")],
        period: FromQuery[str | None] = None,
    ) -> Projection:
        """What Stripe would bill the customer for the period so far, line by line with the
        Stripe price of each metric, and a forecast to the period's end (docs/projection.md)."""
        return await _projection(svc, principal.tenant_id, customer_ref, period)

    @post(
        "/usage/projection",
        status_code=200,
        responses=error_responses(400, 401, 403, 404, 422, 503),
    )
    async def cost_projection_post(
        self, svc: ServicesDep, principal: PrincipalDep, data: JSONBody[ProjectionIn]
    ) -> Projection:
        """The same as ``GET /v1/usage/projection``, the customer and period in the body."""
        return await _projection(svc, principal.tenant_id, data.customer_ref, data.period)


async def _projection(
    svc: ServicesDep, tenant_id: UUID, customer_ref: str, period: str | None
) -> Projection:
    # The price book (which needs Stripe) is asked for only once the fields are checked:
    # bad input is a 422 naming the field, not a 503 telling the client to retry.
    return await anyio.to_thread.run_sync(
        lambda: project_cost(
            svc.stores, svc.price_book, tenant_id, customer_ref, period, svc.clock()
        )
    )
