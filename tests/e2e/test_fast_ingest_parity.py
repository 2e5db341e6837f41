"""The ingest path below Litestar against the route alone: it must answer what the route answers.

Each request is driven twice as an ASGI server would: once through the app
(``MeteringAPI``, which tries the fast path first) and once through
``Litestar.__call__`` alone (the route), each with its own tenant's cached
key so that both write the same event afresh.
"""

from __future__ import annotations

import json
import re
from typing import Any

import anyio
from litestar import Litestar

from tests.e2e.conftest import Api, event
from tests.e2e.test_fast_ingest import ingest_scope

Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


def drive(
    api: Api,
    messages: list[dict[str, Any]],
    key: str,
    *,
    route_only: bool,
    body_after: float = 0.0,
) -> Answer | BaseException:
    app = api.client.app
    pending = list(messages)
    sent: list[dict[str, Any]] = []
    scope = ingest_scope(
        [
            (b"authorization", f"Bearer {api.keys[key]}".encode()),
            (b"content-type", b"application/json"),
        ]
    )

    async def receive() -> dict[str, Any]:
        if len(pending) == len(messages):  # the client takes ``body_after`` s to send it
            await anyio.sleep(body_after)
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def through_route(s: Any, r: Any, se: Any) -> None:
        await Litestar.__call__(app, s, r, se)

    try:
        api.client.blocking_portal.call(through_route if route_only else app, scope, receive, send)
    except Exception as error:  # what the ASGI server would turn into a bare 500
        return error
    return (
        int(sent[0]["status"]),
        list(sent[0]["headers"]),
        b"".join(m.get("body", b"") for m in sent[1:]),
    )


def warm(api: Api) -> None:
    for key in ("acme-all", "globex-all"):
        api.call("GET", "/v1/usage/current", key=key, params={"customerRef": "cus_1"})


def test_a_request_message_without_more_body_is_answered_as_the_route_answers_it(
    api: Api,
) -> None:
    """ASGI 2.x/3.0: ``more_body`` is optional in ``http.request`` (default False).

    Litestar reads it with ``event.get("more_body", False)``; the fast path indexes
    ``message["more_body"]`` and raises KeyError out of the app (a bare 500 from the
    server, the event unanswered) where the route accepts the event.
    """
    warm(api)
    body = json.dumps({"events": [event(idempotencyKey="no-more-body")]}).encode()
    messages = [{"type": "http.request", "body": body}]
    route = drive(api, messages, "acme-all", route_only=True)
    fast = drive(api, messages, "globex-all", route_only=False)
    assert not isinstance(route, BaseException)
    assert route[0] == 200
    assert fast == route


def ingest_seconds(api: Api) -> float:
    """The latency histogram's sum for accepted ingests, as /metrics shows it."""
    text = api.call("GET", "/metrics").text
    found = re.search(
        r'^http_request_duration_seconds_sum\{method="POST",route="/v1/events/ingest",'
        r'status="200"\} (\S+)$',
        text,
        re.MULTILINE,
    )
    return float(found.group(1)) if found else 0.0


def test_a_request_handed_on_to_litestar_is_timed_from_its_start(api: Api) -> None:
    """The route's latency includes receiving the body: it is timed from the request's
    start, as the timing middleware did before the fast path. A request the fast path
    reads and then hands on (here: a key not cached yet, the first request of every key
    every 5 s; likewise any refusal) is timed by the middleware only from the hand-over,
    so the time the body took to arrive (0.3 s) is missing from the histogram."""
    body = json.dumps({"events": [event(idempotencyKey="slow-body")]}).encode()
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    before = ingest_seconds(api)
    route = drive(api, messages, "acme-all", route_only=True, body_after=0.3)
    through_route = ingest_seconds(api) - before
    before = ingest_seconds(api)
    handed_on = drive(api, messages, "globex-all", route_only=False, body_after=0.3)
    through_app = ingest_seconds(api) - before

    assert not isinstance(route, BaseException) and route[0] == 200
    assert handed_on == route
    assert through_route >= 0.3  # Litestar alone: the body's time is in the latency
    assert through_app >= 0.3
