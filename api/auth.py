"""API keys on requests: ``Authorization: Bearer <key>`` (or ``X-API-Key``).

A controller names the scope its handlers need with ``guards=[requires(...)]``;
the guard authenticates the key once per request, checks the scope and leaves
the ``Principal`` on the connection, where the ``principal`` dependency hands
it to the handler. Ingest alone calls ``authenticated`` itself (see
api/routes/ingest.py for why). The errors raised here are answered 401/403 by
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


# How a handler asks for them: by parameter name (Litestar 3 requires it said), and
# passed as they are (Litestar would otherwise re-validate the objects each request).
ServicesDep = NamedDependency[SkipValidation[Services]]
PrincipalDep = NamedDependency[SkipValidation[Principal]]


def services_of(state: State) -> Services:
    """The ``svc`` dependency: the objects ``create_app``'s lifespan built."""
    result: Services = state.services
    return result


def principal_of(request: Request[Any, Any, Any], svc: ServicesDep) -> Principal:
    """The ``principal`` dependency: who the guard authenticated.

    It takes ``svc`` (unused) so that Litestar resolves the two one after the
    other: it resolves independent dependencies concurrently, in a task group
    per request, which cost ingest more than its own work (measured: +150 µs).
    """
    result: Principal = request.state.principal
    return result


DEPENDENCIES = {
    "svc": Provide(services_of, sync_to_thread=False),
    "principal": Provide(principal_of, sync_to_thread=False),
}


def presented_key(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    return key_in(
        connection.headers.get("authorization", ""), connection.headers.get("x-api-key", "")
    )


def key_in(authorization: str, x_api_key: str) -> str:
    """The API key of a request with these two headers ("" when absent)."""
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    key = x_api_key.strip()
    if key:
        return key
    raise UnauthenticatedError("send an API key as 'Authorization: Bearer <key>'")


async def authenticated(connection: ASGIConnection[Any, Any, Any, Any], scope: Scope) -> Principal:
    """Who the request's key belongs to, once it is known to allow ``scope``.

    The key lookup runs off the event loop only when it is not cached, so a
    busy ingest path costs no thread hop for its authentication.
    """
    svc = services_of(connection.app.state)
    secret = presented_key(connection)
    principal = svc.cached_principal(secret)
    if principal is None:
        principal = await anyio.to_thread.run_sync(svc.principal, secret)
    if not principal.allows(scope):
        raise ForbiddenError(f"this API key lacks the {scope.value!r} scope")
    return principal


def requires(scope: Scope) -> Guard:
    """A guard: the request's key must authenticate and allow ``scope``."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        connection.state.principal = await authenticated(connection, scope)

    return guard
