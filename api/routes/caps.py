"""/v1/caps: usage caps per metric, for one customer or all (docs/caps.md)."""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from litestar import delete, get, put
from litestar.params import FromPath, JSONBody, QueryParameter

from api.auth import PrincipalDep, ServicesDep, requires
from api.controller import V1Controller
from api.problems import error_responses
from api.query import given_once
from api.schemas import CapIn, CapOut, CapPage, quantity_of
from domain import fields
from domain.caps import Cap, check_limit, parse_mode
from domain.tenancy import Scope


def cap_out(cap: Cap) -> CapOut:
    return CapOut(cap.metric, cap.customer_ref, str(cap.limit), cap.mode.value)


def _customer(customer_ref: str | None) -> str | None:
    return None if customer_ref is None else fields.customer_ref(customer_ref)


class CapsController(V1Controller):
    """Setting and removing caps needs the ``admin`` scope; reading, ``read``.

    A change is seen at once by the writer this API process writes through (its
    thread, or the writer process, told before the answer); by the writer
    process of another ``serve`` on the same database, within its tenant cache's
    lifetime (``TENANT_CACHE_SECONDS``, 5 s).
    """

    path = "/v1/caps"
    tags = ["caps"]

    @get(guards=[requires(Scope.READ)], sync_to_thread=True, responses=error_responses(401, 403))
    def list_caps(self, svc: ServicesDep, principal: PrincipalDep) -> CapPage:
        """Every cap of the tenant, by metric; the metric-wide cap before customers' own."""
        return CapPage([cap_out(cap) for cap in svc.stores.app.caps(principal.tenant_id)])

    @put(
        "/{metric:str}",
        guards=[requires(Scope.ADMIN)],
        responses=error_responses(400, 401, 403, 404, 409, 422),
    )
    async def set_cap(
        self,
        svc: ServicesDep,
        principal: PrincipalDep,
        metric: FromPath[str],
        data: JSONBody[CapIn],
    ) -> CapOut:
        """Set the cap on a declared metric for one customer (``customerRef``) or all (null).

        Replaces a cap on the same metric and customer. ``hard`` refuses events that
        would take a customer's period past ``limit``; ``soft`` accepts them, marked.
        """
        cap = Cap(
            fields.metric(metric),
            _customer(data.customer_ref),
            check_limit(quantity_of(data.limit, "limit")),
            parse_mode(data.mode),
        )
        app = svc.stores.app
        await anyio.to_thread.run_sync(lambda: app.set_cap(principal.tenant_id, cap))
        await svc.writer.tenant_changed(principal.tenant_id)
        return cap_out(cap)

    @delete(
        "/{metric:str}",
        status_code=200,
        guards=[requires(Scope.ADMIN)],
        before_request=given_once,
        responses=error_responses(400, 401, 403, 404, 409, 422),
    )
    async def remove_cap(
        self,
        svc: ServicesDep,
        principal: PrincipalDep,
        metric: FromPath[str],
        customer_ref: Annotated[str | None, QueryParameter(name="customerRef")] = None,
    ) -> CapOut:
        """Remove the cap on a metric for ``customerRef`` (absent: the metric-wide cap).

        Answers the cap it was.
        """
        name, customer = fields.metric(metric), _customer(customer_ref)
        app = svc.stores.app
        removed = await anyio.to_thread.run_sync(
            lambda: app.remove_cap(principal.tenant_id, name, customer)
        )
        await svc.writer.tenant_changed(principal.tenant_id)
        return cap_out(removed)
