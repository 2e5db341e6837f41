"""/v1/meters: the metrics a tenant declares (name, aggregation, unit, lateness window)."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
import msgspec
from litestar import Request, Response, get, post
from litestar.params import FromPath

from api.auth import authorize, authorize_async, services
from api.queries import meters as queries
from api.schemas import MeterIn, MeterOut, decode_json
from domain.tenancy import Scope


@post("/v1/meters")
async def declare_meter(request: Request[Any, Any, Any]) -> Response[MeterOut]:
    """Declare a metric. 201 when new, 200 when identical to one declared, 409 when different."""
    principal = await authorize_async(request, Scope.ADMIN)
    body = decode_json(await request.body(), MeterIn)
    app = services(request).stores.app
    out, created = await anyio.to_thread.run_sync(
        lambda: queries.declare_meter(app, principal.tenant_id, **msgspec.structs.asdict(body))
    )
    return Response(out, status_code=201 if created else 200)


@get("/v1/meters", sync_to_thread=True)
def list_meters(request: Request[Any, Any, Any]) -> dict[str, list[MeterOut]]:
    principal = authorize(request, Scope.READ)
    return {"data": queries.list_meters(services(request).stores.app, principal.tenant_id)}


@get("/v1/meters/{name:str}", sync_to_thread=True)
def get_meter(request: Request[Any, Any, Any], name: FromPath[str]) -> MeterOut:
    principal = authorize(request, Scope.READ)
    return queries.meter_out(services(request).stores.app.metric(principal.tenant_id, name))
