"""The ingest path below Litestar (api/fast_ingest.py): what it answers itself, what it hands on.

Each test drives ``fast_ingest.ingest`` as the ASGI server would, on the
running app, with a fallback that records what Litestar would have been
given. The last tests compare its answers with the Litestar route's own
for the same kind of request.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from api import fast_ingest
from tests.e2e.conftest import Api, event


@dataclass
class Exchange:
    """One request through the fast path: what it sent back, and what it handed on."""

    sent: list[dict[str, Any]] = field(default_factory=list)
    handed_on: list[bytes] = field(default_factory=list)

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.sent[0]["headers"])

    @property
    def body(self) -> Any:
        return json.loads(b"".join(m.get("body", b"") for m in self.sent[1:]))


def ingest_scope(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """The scope an ASGI server gives ``POST /v1/events/ingest`` with these headers."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": fast_ingest.PATH,
        "raw_path": fast_ingest.PATH.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
    }


def through_fast_path(
    api: Api,
    body: bytes,
    headers: list[tuple[bytes, bytes]],
    chunks: int = 1,
) -> Exchange:
    exchange = Exchange()
    size = max(1, -(-len(body) // chunks))
    parts = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    messages = [
        {"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
        for i, part in enumerate(parts)
    ]
    scope = ingest_scope(headers)

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        exchange.sent.append(message)

    async def fallback(
        _scope: Any, replayed: Callable[[], Awaitable[dict[str, Any]]], _send: Any
    ) -> None:
        # Litestar would read the body from here: it must be the whole body, intact.
        got = b""
        while True:
            message = await replayed()
            got += message.get("body", b"")
            if not message.get("more_body"):
                break
        exchange.handed_on.append(got)

    app = api.client.app
    api.client.blocking_portal.call(fast_ingest.ingest, app, scope, receive, send, fallback)
    return exchange


def bearer(api: Api, key: str = "acme-all") -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {api.keys[key]}".encode())]


def body_of(*events: dict[str, Any]) -> bytes:
    return json.dumps({"events": list(events)}).encode()


def counted(api: Api) -> list[str]:
    usage = api.call("GET", "/v1/usage/current?customerRef=cus_1").json()
    return [c["value"] for c in usage["counters"]]


def warm(api: Api, key: str = "acme-all") -> None:
    """Authenticate ``key`` once through Litestar, so that it is cached."""
    assert api.ingest(event(idempotencyKey=f"warm-{key}"), key=key).status_code == 200


def test_a_cached_key_and_a_good_body_are_answered_here_and_written(api: Api) -> None:
    warm(api)
    body = body_of(event(idempotencyKey="fast-1", quantity=5), event(quantity="x"))
    exchange = through_fast_path(api, body, bearer(api))

    assert exchange.handed_on == []
    assert exchange.status == 200
    assert exchange.headers[b"content-type"] == b"application/json"
    assert int(exchange.headers[b"content-length"]) == len(exchange.sent[1]["body"])
    assert exchange.body["accepted"] == 1
    assert exchange.body["errors"] == 1
    assert exchange.body["results"][0] == {
        "index": 0,
        "status": "accepted",
        "idempotencyKey": "fast-1",
    }
    assert exchange.body["results"][1]["field"] == "quantity"
    # Durable and counted once: the same event again is a duplicate, through either path.
    again = api.ingest(event(idempotencyKey="fast-1", quantity=5))
    assert again.json()["results"][0]["status"] == "duplicate"
    api.settle()
    assert counted(api) == ["6"]


def test_a_body_in_several_chunks_is_read_whole(api: Api) -> None:
    warm(api)
    body = body_of(*(event(idempotencyKey=f"chunk-{i}") for i in range(20)))
    exchange = through_fast_path(api, body, bearer(api), chunks=7)
    assert exchange.handed_on == []
    assert exchange.body["accepted"] == 20


def test_what_it_cannot_answer_whole_goes_to_litestar_with_the_body_intact(api: Api) -> None:
    good = body_of(event(idempotencyKey="handed-on"))
    # Not yet authenticated by this process: Litestar looks the key up (off the loop).
    assert through_fast_path(api, good, bearer(api, "globex-all")).handed_on == [good]
    warm(api)
    cases = {
        "no key": [],
        "an unknown key": [(b"authorization", b"Bearer sk_nobody")],
        "a key without the ingest scope": bearer(api, "acme-read"),
        "the key twice": bearer(api) + bearer(api),
        "the idempotency header twice": [
            *bearer(api),
            (b"idempotency-key", b"a"),
            (b"idempotency-key", b"b"),
        ],
    }
    # The read key cached too (by a read): refused for its scope, by Litestar.
    api.call("GET", "/v1/usage/current", key="acme-read", params={"customerRef": "cus_1"})
    for what, headers in cases.items():
        assert through_fast_path(api, good, headers).handed_on == [good], what
    for bad in (b"{", b'{"events": []}', b'{"events": [1], "extra": 2}', b""):
        exchange = through_fast_path(api, bad, bearer(api), chunks=2)
        assert exchange.handed_on == [bad], bad
        assert exchange.sent == []
    # None of them was written.
    api.settle()
    assert counted(api) == ["1"]


def test_a_body_over_the_apps_limit_goes_to_litestar(api: Api) -> None:
    warm(api)
    app = api.client.app
    limit, app.request_max_body_size = app.request_max_body_size, 64
    try:
        body = body_of(event(idempotencyKey="too-long-for-the-limit"))
        assert len(body) > 64
        assert through_fast_path(api, body, bearer(api), chunks=3).handed_on == [body]
    finally:
        app.request_max_body_size = limit


def test_a_writer_that_fails_after_submission_is_answered_here_once(api: Api) -> None:
    warm(api)
    api.client.app.state.services.writer.stop()
    exchange = through_fast_path(api, body_of(event(idempotencyKey="late")), bearer(api))
    assert exchange.handed_on == []  # never resubmitted through Litestar
    assert exchange.status == 503
    assert exchange.headers[b"content-type"] == b"application/problem+json"
    assert exchange.body["title"] == "Shutting down"


def test_its_answers_are_the_routes_byte_for_byte(api: Api) -> None:
    """The same request kind through Litestar (first use of a key) and the fast path."""
    requests = [
        body_of(event(idempotencyKey="same-A", quantity=2), event(metric="")),
        body_of(event(idempotencyKey="same-B", quantity=2), event(metric="")),
    ]
    through_litestar = api.call(
        "POST",
        "/v1/events/ingest",
        content=requests[0],
        headers={"content-type": "application/json"},
    )
    fast = through_fast_path(api, requests[1], bearer(api))
    assert fast.handed_on == []
    assert fast.status == through_litestar.status_code == 200
    assert fast.sent[1]["body"] == through_litestar.content.replace(b"same-A", b"same-B")
    assert fast.headers[b"content-type"] == through_litestar.headers["content-type"].encode()
    assert int(fast.headers[b"content-length"]) == int(through_litestar.headers["content-length"])


def test_http_latency_is_observed_for_the_route_as_before(api: Api) -> None:
    warm(api)
    through_fast_path(api, body_of(event(idempotencyKey="timed")), bearer(api))
    metrics = api.call("GET", "/metrics").text
    line = next(
        row
        for row in metrics.splitlines()
        if row.startswith("http_request_duration_seconds_count")
        and 'route="/v1/events/ingest"' in row
        and 'status="200"' in row
    )
    assert float(line.rsplit(" ", 1)[1]) == 2.0  # the warm-up (Litestar) and this one


def test_cap_results_are_the_routes_byte_for_byte(api: Api) -> None:
    """A soft cap's marker and a hard cap's refusal, through Litestar and the fast path."""
    for body in (
        {"customerRef": None, "limit": 1, "mode": "soft"},
        {"customerRef": "cus_2", "limit": 0, "mode": "hard"},
    ):
        assert api.call("PUT", "/v1/caps/api_calls", json=body).status_code == 200
    requests = [
        body_of(
            event(idempotencyKey=f"cap-{tag}", quantity=2),
            event(idempotencyKey=f"hard-{tag}", customerRef="cus_2"),
        )
        for tag in ("A", "B")
    ]
    through_litestar = api.call(
        "POST",
        "/v1/events/ingest",
        content=requests[0],
        headers={"content-type": "application/json"},
    )
    fast = through_fast_path(api, requests[1], bearer(api))
    assert fast.handed_on == []
    results = fast.body["results"]
    assert [(r["status"], r.get("cap")) for r in results] == [
        ("accepted", "soft"),
        ("error", "hard"),
    ]
    assert fast.sent[1]["body"] == through_litestar.content.replace(b"-A", b"-B")
