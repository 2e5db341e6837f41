"""The customer usage widget's routes (docs/widget.md).

- ``POST /v1/widget-tokens``: the tenant's backend mints a token for one customer
  (scope ``admin`` or ``widget:mint``);
- ``GET``/``PUT /v1/widget/origins``: the web origins whose pages may read with one;
- ``GET /v1/widget/usage``: what a token reads, with CORS for those origins only;
- ``GET /widget/stripemeter-usage.js``: the ``<stripemeter-usage>`` Web Component.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import anyio.to_thread
from litestar import Controller, Request, Response, get, post, put
from litestar.params import JSONBody

from api import problems
from api.auth import PrincipalDep, ServicesDep, presented_key, requires
from api.controller import V1Controller
from api.problems import error_responses
from api.queries.usage import when
from api.queries.widget import widget_usage
from api.schemas import FieldError
from api.widget_schemas import (
    WidgetOriginsIn,
    WidgetOriginsOut,
    WidgetTokenIn,
    WidgetTokenOut,
    WidgetUsage,
)
from domain import fields
from domain.errors import StripeMeterError
from domain.tenancy import Scope
from domain.widget import ExpiredWidgetTokenError, check_lifetime, parse_origins

SCRIPT = (Path(__file__).parent.parent / "static" / "stripemeter-usage.js").read_bytes()
SCRIPT_ETAG = '"' + hashlib.sha256(SCRIPT).hexdigest()[:32] + '"'


class WidgetTokensController(V1Controller):
    path = "/v1/widget-tokens"
    tags = ["widget"]

    @post(
        guards=[requires(Scope.WIDGET_MINT)],
        status_code=201,
        responses=error_responses(400, 401, 403, 422),
    )
    async def mint_widget_token(
        self, svc: ServicesDep, principal: PrincipalDep, data: JSONBody[WidgetTokenIn]
    ) -> WidgetTokenOut:
        """A read-only token for one customer's usage, valid ``lifetimeSeconds`` (900 by
        default, at most 86,400). Hand it to that customer's page only."""
        customer_ref = fields.customer_ref(data.customer_ref)
        lifetime = check_lifetime(data.lifetime_seconds)
        app = svc.stores.app
        minted = await anyio.to_thread.run_sync(
            lambda: app.mint_widget_token(principal.tenant_id, customer_ref, lifetime)
        )
        return WidgetTokenOut(minted.secret, minted.customer_ref, when(minted.expires_at) or "")


class WidgetOriginsController(V1Controller):
    path = "/v1/widget/origins"
    tags = ["widget"]

    @get(guards=[requires(Scope.READ)], sync_to_thread=True, responses=error_responses(401, 403))
    def widget_origins(self, svc: ServicesDep, principal: PrincipalDep) -> WidgetOriginsOut:
        """The web origins whose pages may read the widget's answers."""
        return WidgetOriginsOut(list(svc.stores.app.tenant(principal.tenant_id).widget_origins))

    @put(guards=[requires(Scope.ADMIN)], responses=error_responses(400, 401, 403, 409, 422))
    async def set_widget_origins(
        self, svc: ServicesDep, principal: PrincipalDep, data: JSONBody[WidgetOriginsIn]
    ) -> WidgetOriginsOut:
        """Replace the origins (``scheme://host[:port]``, no path) whose pages may read
        the widget's answers; ``[]`` allows none."""
        origins = parse_origins(data.origins)
        app = svc.stores.app
        await anyio.to_thread.run_sync(lambda: app.set_widget_origins(principal.tenant_id, origins))
        return WidgetOriginsOut(list(origins))


class WidgetUsageController(Controller):
    """Read with a widget token, never an API key; CORS for the token's tenant's origins."""

    path = "/v1/widget"
    tags = ["widget"]
    security = [{"bearer": []}]

    @get("/usage", responses=error_responses(400, 401, 403, 422, 503))
    async def widget_usage(
        self, request: Request[Any, Any, Any], svc: ServicesDep
    ) -> Response[WidgetUsage]:
        """The token's customer's usage per metric in the current billing period, with
        cost so far and forecast where Stripe prices it. Send the widget token as
        ``Authorization: Bearer smw_...``; the token names the customer, so this
        route takes no parameter."""
        app = svc.stores.app
        tenant_id = None
        response: Response[Any]
        try:
            for name in request.query_params:
                raise FieldError(
                    name, "this route takes no parameter: the token names the customer"
                )
            secret = presented_key(request)
            grant = await anyio.to_thread.run_sync(app.widget_grant, secret)
            tenant_id = grant.tenant_id
            body = await anyio.to_thread.run_sync(
                lambda: widget_usage(svc.stores, svc.price_book, grant, svc.clock())
            )
            response = Response(body)
        except ExpiredWidgetTokenError as error:
            # The tenant is known: its page may read why, and ask for a new token.
            tenant_id = error.tenant_id
            response = problems.handle(request, error)
        except StripeMeterError as error:
            response = problems.handle(request, error)
        origin = request.headers.get("origin")
        response.headers["Vary"] = "Origin"
        if origin is not None and tenant_id is not None:
            allowed = await anyio.to_thread.run_sync(
                lambda: app.cached_tenant(tenant_id).widget_origins
            )
            if origin in allowed:
                response.headers["Access-Control-Allow-Origin"] = origin
        return response


@get("/widget/stripemeter-usage.js", include_in_schema=False)
async def widget_script(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The ``<stripemeter-usage>`` Web Component: one file, no dependency, cacheable."""
    headers = {
        "Cache-Control": "public, max-age=3600",
        "ETag": SCRIPT_ETAG,
        "X-Content-Type-Options": "nosniff",
    }
    if request.headers.get("if-none-match") == SCRIPT_ETAG:
        return Response(b"", status_code=304, headers=headers)
    return Response(SCRIPT, media_type="text/javascript", headers=headers)
