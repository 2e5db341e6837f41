"""API keys on requests: ``Authorization: Bearer <key>`` (or ``X-API-Key``)."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from litestar import Request

from api.services import Services
from domain.errors import ForbiddenError, UnauthenticatedError
from domain.tenancy import Principal, Scope


def services(request: Request[Any, Any, Any]) -> Services:
    result: Services = request.app.state.services
    return result


def presented_key(request: Request[Any, Any, Any]) -> str:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    key = request.headers.get("x-api-key", "").strip()
    if key:
        return key
    raise UnauthenticatedError("send an API key as 'Authorization: Bearer <key>'")


def _checked(principal: Principal, scope: Scope) -> Principal:
    if not principal.allows(scope):
        raise ForbiddenError(f"this API key lacks the {scope.value!r} scope")
    return principal


def authorize(request: Request[Any, Any, Any], scope: Scope) -> Principal:
    """For sync handlers (they already run in a worker thread)."""
    return _checked(services(request).principal(presented_key(request)), scope)


async def authorize_async(request: Request[Any, Any, Any], scope: Scope) -> Principal:
    """For async handlers: the key lookup, when not cached, runs off the event loop."""
    svc = services(request)
    secret = presented_key(request)
    principal = svc.cached_principal(secret)
    if principal is None:
        principal = await anyio.to_thread.run_sync(svc.principal, secret)
    return _checked(principal, scope)
