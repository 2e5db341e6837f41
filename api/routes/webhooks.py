"""/v1/webhook-endpoints: where StripeMeter sends the tenant's webhooks, and what it sent.

Outbound only: Stripe's own deliveries to StripeMeter arrive at
/v1/stripe/webhooks (api/routes/reconciliation.py).
"""

from __future__ import annotations

import anyio.to_thread
from litestar import Response, delete, get, post
from litestar.params import FromPath, FromQuery, JSONBody

from api.auth import PrincipalDep, ServicesDep, requires
from api.controller import V1Controller
from api.problems import error_responses
from api.queries import webhooks as queries
from api.queries.cursors import decode_cursor
from api.query import given_once
from api.schemas import FieldError
from api.webhook_schemas import (
    DeliveryPage,
    WebhookEndpointCreated,
    WebhookEndpointIn,
    WebhookEndpointOut,
    WebhookEndpointPage,
)
from domain.tenancy import Scope
from domain.webhook_endpoints import WebhookEndpointsService


class WebhookEndpointsController(V1Controller):
    """Creating and deleting need the ``admin`` scope; reading, ``read``."""

    path = "/v1/webhook-endpoints"
    tags = ["webhooks"]

    @post(guards=[requires(Scope.ADMIN)], responses=error_responses(400, 401, 403, 409, 422))
    async def create_webhook_endpoint(
        self, svc: ServicesDep, principal: PrincipalDep, data: JSONBody[WebhookEndpointIn]
    ) -> Response[WebhookEndpointCreated]:
        """Create an endpoint. The answer holds its signing ``secret``: the only time it is
        shown."""
        service = WebhookEndpointsService(svc.stores.app)
        endpoint = await anyio.to_thread.run_sync(
            lambda: service.create(
                principal.tenant_id,
                data.url,
                data.enabled_events,
                enabled=data.enabled,
                description=data.description,
            )
        )
        return Response(queries.endpoint_created(endpoint), status_code=201)

    @get(guards=[requires(Scope.READ)], sync_to_thread=True, responses=error_responses(401, 403))
    def list_webhook_endpoints(
        self, svc: ServicesDep, principal: PrincipalDep
    ) -> WebhookEndpointPage:
        endpoints = WebhookEndpointsService(svc.stores.app).endpoints(principal.tenant_id)
        return WebhookEndpointPage([queries.endpoint_out(e) for e in endpoints.listed()])

    @get(
        "/{endpoint_id:str}",
        guards=[requires(Scope.READ)],
        sync_to_thread=True,
        responses=error_responses(400, 401, 403, 404, 422),
    )
    def get_webhook_endpoint(
        self, svc: ServicesDep, principal: PrincipalDep, endpoint_id: FromPath[str]
    ) -> WebhookEndpointOut:
        wanted = queries.endpoint_id_of(endpoint_id)
        endpoints = WebhookEndpointsService(svc.stores.app).endpoints(principal.tenant_id)
        return queries.endpoint_out(endpoints.endpoint(wanted))

    @delete(
        "/{endpoint_id:str}",
        guards=[requires(Scope.ADMIN)],
        responses=error_responses(400, 401, 403, 404, 409, 422),
    )
    async def delete_webhook_endpoint(
        self, svc: ServicesDep, principal: PrincipalDep, endpoint_id: FromPath[str]
    ) -> None:
        """Delete an endpoint: it receives nothing more (its pending deliveries fail)."""
        wanted = queries.endpoint_id_of(endpoint_id)
        service = WebhookEndpointsService(svc.stores.app)
        await anyio.to_thread.run_sync(lambda: service.delete(principal.tenant_id, wanted))

    @get(
        "/{endpoint_id:str}/deliveries",
        guards=[requires(Scope.READ)],
        before_request=given_once,
        sync_to_thread=True,
        responses=error_responses(400, 401, 403, 404, 422),
    )
    def list_webhook_deliveries(
        self,
        svc: ServicesDep,
        principal: PrincipalDep,
        endpoint_id: FromPath[str],
        cursor: FromQuery[str | None] = None,
        limit: FromQuery[int] = 20,
    ) -> DeliveryPage:
        """The endpoint's deliveries, newest first, each with its attempts and next one."""
        wanted = queries.endpoint_id_of(endpoint_id)
        if not 1 <= limit <= 100:
            raise FieldError("limit", "must be between 1 and 100")
        after = decode_cursor(cursor) if cursor is not None else None
        endpoints = WebhookEndpointsService(svc.stores.app).endpoints(principal.tenant_id)
        endpoints.endpoint(wanted)  # this tenant's, and not deleted: else 404
        view = svc.stores.views.webhook_deliveries
        return queries.delivery_page(view, principal.tenant_id, wanted, after, limit)
