"""``POST /v1/events/ingest`` answered below the framework, for the requests it can answer whole.

A one-event ingest is the service's hottest request, and Litestar's
per-request machinery around it (routing, the exception layers, the handler
call, turning a struct into a response) cost more CPU than the route's own
work (docs/benchmarks.md, "where a single-event request spends its CPU").
This path runs the same route code (``read_body``, the writer, the same
metrics, the same response struct) without that machinery, for a request:

- whose API key is cached as allowing ``ingest`` (authenticated by an
  earlier request in the last few seconds), and
- whose body ``read_body`` accepts as a batch, in the format its
  ``Content-Type`` names (JSON, or CloudEvents: api/cloudevents.py); events
  refused one by one are results, as on the route, and
- that sends each of the headers it reads at most once, and a body within
  the app's size limit.

Anything else goes to the Litestar route with the body already read, so
every refusal is decided and worded in one place (``api/problems.py``) as
before, and the OpenAPI document still describes this route from the
Litestar handler. An error from the writer, after the events were
submitted, is answered here through the same ``problems.handle``: the
events are never submitted twice.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Request
from litestar.enums import ScopeType

from api import problems
from api.auth import key_in, services_of
from api.routes.ingest import read_body, respond
from domain.errors import UnauthenticatedError
from domain.tenancy import Scope

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.types import Receive, ReceiveMessage, Send
    from litestar.types import Scope as AsgiScope

PATH = "/v1/events/ingest"
# Where a request handed on to Litestar keeps the time it arrived, for the timing
# middleware (api/app.py): the body this path read is part of its latency.
RECEIVED_AT = "stripemeter_received_at"
_JSON_HEADERS = [(b"content-type", b"application/json")]
_READ = {
    b"authorization": "authorization",
    b"x-api-key": "x-api-key",
    b"idempotency-key": "idempotency-key",
    b"content-type": "content-type",
}

Fallback = Callable[["AsgiScope", "Receive", "Send"], Awaitable[None]]


def handles(scope: AsgiScope) -> bool:
    """Whether a request is an ingest this path tries first."""
    return scope["type"] == ScopeType.HTTP and scope["path"] == PATH and scope["method"] == "POST"


async def ingest(
    app: Litestar, scope: AsgiScope, receive: Receive, send: Send, fallback: Fallback
) -> None:
    """Answer an ingest request, or hand it to ``fallback`` (Litestar) with its body."""
    started = time.perf_counter()
    limit = app.request_max_body_size
    messages, body = await _read_body(receive, limit if isinstance(limit, int) else None)
    if body is not None and await _answer(app, scope, receive, send, body, started):
        return
    # Litestar's timing middleware counts the body this path already read.
    scope.setdefault("state", {})[RECEIVED_AT] = started
    await fallback(scope, _replay(messages, receive), send)


async def _answer(
    app: Litestar, scope: AsgiScope, receive: Receive, send: Send, body: bytes, started: float
) -> bool:
    """Answer the request if this path can answer it whole; False to hand it on."""
    svc = services_of(app.state)
    headers = _headers(scope)
    if headers is None:
        return False
    try:
        secret = key_in(headers.get("authorization", ""), headers.get("x-api-key", ""))
    except UnauthenticatedError:
        return False
    principal = svc.cached_principal(secret)
    if principal is None or not principal.allows(Scope.INGEST):
        return False
    try:
        read = read_body(
            headers.get("content-type"),
            body,
            principal,
            headers.get("idempotency-key"),
            svc.settings,
        )
    except Exception:  # refused as a whole: the route refuses it again, in its words
        return False
    try:
        written = await svc.writer.submit(read.submissions) if read.submissions else []
    except Exception as error:  # the writer's answer: never resubmitted
        status = await _send_problem(app, scope, receive, send, error)
    else:
        outcomes = read.outcomes(written)
        svc.metrics.observe_ingest(outcomes)
        await _send_json(send, msgspec.json.encode(respond(outcomes)))
        status = 200
    svc.metrics.observe_http("POST", PATH, status, time.perf_counter() - started)
    return True


async def _read_body(
    receive: Receive, limit: int | None
) -> tuple[list[ReceiveMessage], bytes | None]:
    """The messages received and the whole body; None when Litestar should take it over."""
    messages: list[ReceiveMessage] = []
    chunks: list[bytes] = []
    size = 0
    while True:
        message: ReceiveMessage = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, None
        chunk = message.get("body", b"")  # both keys are optional in ASGI
        chunks.append(chunk)
        size += len(chunk)
        if limit is not None and size > limit:
            return messages, None
        if not message.get("more_body", False):
            return messages, chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _replay(messages: list[ReceiveMessage], receive: Receive) -> Receive:
    """A ``receive`` that gives back what was already read, then the rest."""
    pending = list(messages)

    async def replayed() -> ReceiveMessage:
        if pending:
            return pending.pop(0)
        message: ReceiveMessage = await receive()
        return message

    return replayed


def _headers(scope: AsgiScope) -> dict[str, str] | None:
    """The headers this path reads, or None if one is sent twice (Litestar decides then)."""
    found: dict[str, str] = {}
    for name, value in scope["headers"]:
        key = _READ.get(name)
        if key is None:
            continue
        if key in found:
            return None
        found[key] = value.decode("latin-1")
    return found


async def _send_json(send: Send, body: bytes, status: int = 200) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _send_problem(
    app: Litestar, scope: AsgiScope, receive: Receive, send: Send, error: Exception
) -> int:
    scope["app"] = scope["litestar_app"] = app
    request: Request[Any, Any, Any] = Request(scope, receive)
    response = problems.handle(request, error)
    await response.to_asgi_response(None, request)(scope, receive, send)
    return response.status_code or 500
