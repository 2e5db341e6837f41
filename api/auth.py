"""API keys on requests: ``Authorization: Bearer <key>`` (or ``X-API-Key``).

A controller names the scope its handlers need with ``guards=[requires(...)]``;
the guard authenticates the key once per request, checks the scope and leaves
the ``Principal`` on the connection, where the ``principal`` dependency hands
it to the handler. The errors raised here are answered 401/403 by
api/problems.py.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.handlers.base import BaseRouteHandler
from litestar.params import SkipValidation
from litestar.types import Guard

from api.services import Services
from domain.errors import ForbiddenError, UnauthenticatedError
from domain.tenancy import Principal, Scope

# The security requirement a guarded route declares in the OpenAPI document:
# either header authenticates (see the schemes in api/openapi.py).
SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]


def services_of(state: State) -> Services:
    """The ``svc`` dependency: the objects ``create_app``'s lifespan built."""
    result: Services = state.services
    return result


def principal_of(request: Request[Any, Any, Any]) -> Principal:
    """The ``principal`` dependency: who the guard authenticated."""
    result: Principal = request.state.principal
    return result


DEPENDENCIES = {
    "svc": Provide(services_of, sync_to_thread=False),
    "principal": Provide(principal_of, sync_to_thread=False),
}


def presented_key(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    header = connection.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    key = connection.headers.get("x-api-key", "").strip()
    if key:
        return key
    raise UnauthenticatedError("send an API key as 'Authorization: Bearer <key>'")


def requires(scope: Scope) -> Guard:
    """A guard: the request's key must authenticate and allow ``scope``.

    The key lookup runs off the event loop only when it is not cached, so a
    busy ingest path costs no thread hop for its authentication.
    """

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        svc = services_of(connection.app.state)
        secret = presented_key(connection)
        principal = svc.cached_principal(secret)
        if principal is None:
            principal = await anyio.to_thread.run_sync(svc.principal, secret)
        if not principal.allows(scope):
            raise ForbiddenError(f"this API key lacks the {scope.value!r} scope")
        connection.state.principal = principal

    return guard


# How a handler asks for them: by parameter name (Litestar 3 requires it said), and
# passed as they are (Litestar would otherwise re-validate the objects each request).
ServicesDep = NamedDependency[SkipValidation[Services]]
PrincipalDep = NamedDependency[SkipValidation[Principal]]
