"""The CORS preflight of ``GET /v1/widget/usage``, answered before Litestar routes it.

A browser asks ``OPTIONS`` before sending the widget's ``Authorization`` header
from another origin. The question carries no token, hence no tenant: an origin
that some tenant configured, asking for ``GET`` with ``authorization``, is told
it may send it; any other origin is granted nothing. What protects the data is
the answer itself: ``GET /v1/widget/usage`` grants it
(``Access-Control-Allow-Origin``) only to an origin the *token's* tenant
configured, and without that grant the browser gives the page nothing.

Answered here, like ingest in api/fast_ingest.py, because Litestar answers every
``OPTIONS`` itself (with ``Allow``) and a CORS config of its own would apply to
every route, where this grant belongs on one.
"""

from __future__ import annotations

import anyio.to_thread
from litestar import Litestar
from litestar.enums import ScopeType
from litestar.types import HTTPResponseBodyEvent, HTTPResponseStartEvent, Receive, Scope, Send

from api.services import Services
from domain.errors import InvalidInputError
from domain.widget import parse_origin

PATH = "/v1/widget/usage"


async def _granted(svc: Services, scope: Scope, origin: str) -> bool:
    """A GET with (at most) the Authorization header, from an origin some tenant allows."""
    method = _header(scope, b"access-control-request-method")
    requested = _header(scope, b"access-control-request-headers")
    if method != "GET" or {h.strip().lower() for h in requested.split(",")} - {"", "authorization"}:
        return False
    try:
        if parse_origin(origin) != origin:
            return False  # browsers send origins in this form; anything else asks nothing
    except InvalidInputError:
        return False
    known = svc.cached_widget_origin(origin)
    if known is None:
        known = await anyio.to_thread.run_sync(svc.widget_origin_allowed, origin)
    return known


# Browsers may keep a preflight's answer this long before asking again.
MAX_AGE = b"600"


def handles(scope: Scope) -> bool:
    return (
        scope["type"] == ScopeType.HTTP and scope["path"] == PATH and scope["method"] == "OPTIONS"
    )


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return ""


async def answer(app: Litestar, scope: Scope, receive: Receive, send: Send) -> None:
    origin = _header(scope, b"origin")
    headers: list[tuple[bytes, bytes]] = [(b"vary", b"Origin"), (b"allow", b"GET, OPTIONS")]
    if await _granted(app.state.services, scope, origin):
        headers += [
            (b"access-control-allow-origin", origin.encode()),
            (b"access-control-allow-methods", b"GET"),
            (b"access-control-allow-headers", b"authorization"),
            (b"access-control-max-age", MAX_AGE),
        ]
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": 204,
        "headers": headers,
    }
    await send(start)
    body: HTTPResponseBodyEvent = {"type": "http.response.body", "body": b"", "more_body": False}
    await send(body)
