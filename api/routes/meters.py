"""/v1/meters: the metrics a tenant declares (name, aggregation, unit, lateness window)."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from litestar import Request, Response, get, post
from litestar.params import FromPath

from api.auth import authorize, authorize_async, services
from api.schemas import MeterIn, MeterOut, decode_json
from domain.meters import MetricDefinition, parse_aggregation
from domain.tenancy import Scope


def meter_out(definition: MetricDefinition) -> MeterOut:
    return MeterOut(
        name=definition.name,
        aggregation=definition.aggregation.value,
        unit=definition.unit,
        lateness_window_seconds=definition.lateness_seconds,
        stripe_event_name=definition.stripe_event_name,
        allow_negative=definition.allow_negative,
    )


def meter_definition(body: MeterIn) -> MetricDefinition:
    return MetricDefinition(
        name=body.name,
        aggregation=parse_aggregation(body.aggregation),
        unit=body.unit,
        lateness_seconds=body.lateness_window_seconds,
        stripe_event_name=body.stripe_event_name,
        allow_negative=body.allow_negative,
    )


@post("/v1/meters")
async def declare_meter(request: Request[Any, Any, Any]) -> Response[MeterOut]:
    """Declare a metric. 201 when new, 200 when identical to one declared, 409 when different."""
    principal = await authorize_async(request, Scope.ADMIN)
    definition = meter_definition(decode_json(await request.body(), MeterIn))
    created = await anyio.to_thread.run_sync(
        services(request).stores.app.declare_metric, principal.tenant_id, definition
    )
    return Response(meter_out(definition), status_code=201 if created else 200)


@get("/v1/meters", sync_to_thread=True)
def list_meters(request: Request[Any, Any, Any]) -> dict[str, list[MeterOut]]:
    principal = authorize(request, Scope.READ)
    return {
        "data": [meter_out(m) for m in services(request).stores.app.metrics(principal.tenant_id)]
    }


@get("/v1/meters/{name:str}", sync_to_thread=True)
def get_meter(request: Request[Any, Any, Any], name: FromPath[str]) -> MeterOut:
    principal = authorize(request, Scope.READ)
    return meter_out(services(request).stores.app.metric(principal.tenant_id, name))
