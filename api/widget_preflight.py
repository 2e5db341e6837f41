"""The CORS preflight of ``GET /v1/widget/usage``, answered before Litestar routes it.

A browser asks ``OPTIONS`` before sending the widget's ``Authorization`` header
from another origin. The question carries no token, hence no tenant: any
well-formed origin that asks for ``GET`` with ``authorization`` is told it may
send it. What protects the data is the answer itself: ``GET /v1/widget/usage``
grants it (``Access-Control-Allow-Origin``) only to an origin the token's tenant
configured, and without that grant the browser gives the page nothing.

Answered here, like ingest in api/fast_ingest.py, because Litestar answers every
``OPTIONS`` itself (with ``Allow``) and a CORS config of its own would apply to
every route, where this grant belongs on one.
"""

from __future__ import annotations

from litestar.enums import ScopeType
from litestar.types import HTTPResponseBodyEvent, HTTPResponseStartEvent, Receive, Scope, Send

from domain.errors import InvalidInputError
from domain.widget import parse_origin

PATH = "/v1/widget/usage"
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


async def answer(scope: Scope, receive: Receive, send: Send) -> None:
    origin = _header(scope, b"origin")
    method = _header(scope, b"access-control-request-method")
    asked = {
        h.strip().lower() for h in _header(scope, b"access-control-request-headers").split(",")
    }
    headers: list[tuple[bytes, bytes]] = [(b"vary", b"Origin"), (b"allow", b"GET, OPTIONS")]
    try:
        well_formed = parse_origin(origin) == origin
    except InvalidInputError:
        well_formed = False
    if well_formed and method == "GET" and asked <= {"", "authorization"}:
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
