"""/v1/meters: the metrics a tenant declares (name, aggregation, unit, lateness window)."""

from __future__ import annotations

import anyio.to_thread
import msgspec
from litestar import Response, get, post
from litestar.params import FromPath, JSONBody

from api.auth import PrincipalDep, ServicesDep, requires
from api.controller import V1Controller
from api.problems import created_or_same, error_responses
from api.queries import meters as queries
from api.schemas import MeterIn, MeterOut, MeterPage
from domain.tenancy import Scope


class MetersController(V1Controller):
    """Declaring needs the ``admin`` scope; reading, ``read``."""

    path = "/v1/meters"
    tags = ["meters"]

    @post(
        guards=[requires(Scope.ADMIN)],
        responses=created_or_same(
            MeterOut, "Identical to the metric declared", 400, 401, 403, 409, 422
        ),
    )
    async def declare_meter(
        self, svc: ServicesDep, principal: PrincipalDep, data: JSONBody[MeterIn]
    ) -> Response[MeterOut]:
        """Declare a metric. 201 when new, 200 when identical to one declared, 409 when
        different."""
        app = svc.stores.app
        out, created = await anyio.to_thread.run_sync(
            lambda: queries.declare_meter(app, principal.tenant_id, **msgspec.structs.asdict(data))
        )
        return Response(out, status_code=201 if created else 200)

    @get(guards=[requires(Scope.READ)], sync_to_thread=True, responses=error_responses(401, 403))
    def list_meters(self, svc: ServicesDep, principal: PrincipalDep) -> MeterPage:
        return MeterPage(queries.list_meters(svc.stores.app, principal.tenant_id))

    @get(
        "/{name:str}",
        guards=[requires(Scope.READ)],
        sync_to_thread=True,
        responses=error_responses(400, 401, 403, 404),
    )
    def get_meter(self, svc: ServicesDep, principal: PrincipalDep, name: FromPath[str]) -> MeterOut:
        return queries.meter_out(svc.stores.app.metric(principal.tenant_id, name))
