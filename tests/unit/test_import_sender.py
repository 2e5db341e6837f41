"""The import's HTTP sender against httpx's mock transport: retries, refusals, splitting."""

from __future__ import annotations

import json

import httpx
import pytest

from api.importing.senders import HttpSender, ImportAbortedError


def sender(handler: httpx.MockTransport, attempts: int = 3) -> HttpSender:
    return HttpSender("http://svc", "smk_test", attempts=attempts, max_wait=0.0, transport=handler)


def events(*names: str) -> list[bytes]:
    return [json.dumps({"customerRef": n}).encode() for n in names]


def accepted(request: httpx.Request) -> httpx.Response:
    sent = json.loads(request.content)["events"]
    results = [{"index": i, "status": "accepted"} for i, _ in enumerate(sent)]
    return httpx.Response(200, json={"results": results})


def test_a_request_without_an_answer_is_sent_again_with_the_same_bytes() -> None:
    bodies: list[bytes] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        assert "idempotency-key" not in request.headers  # the service keys rows by content
        assert request.headers["authorization"] == "Bearer smk_test"
        if len(bodies) == 1:
            raise httpx.ConnectError("refused")
        if len(bodies) == 2:
            return httpx.Response(503, json={"detail": "writer restarting"})
        return accepted(request)

    results = sender(httpx.MockTransport(flaky)).send(events("a", "b"))
    assert [r["status"] for r in results] == ["accepted", "accepted"]
    assert len(bodies) == 3 and len(set(bodies)) == 1


def test_a_batch_refused_whole_is_split_until_the_row_that_made_it_fail() -> None:
    def picky(request: httpx.Request) -> httpx.Response:
        if b'"bad"' in request.content:
            problem = {"detail": "too big", "errors": [{"field": "body", "reason": "too big"}]}
            return httpx.Response(413, json=problem)
        return accepted(request)

    results = sender(httpx.MockTransport(picky)).send(events("a", "b", "bad", "c", "d"))
    assert [r["status"] for r in results] == ["accepted"] * 2 + ["error"] + ["accepted"] * 2
    assert (results[2]["field"], results[2]["reason"]) == ("body", "too big")


@pytest.mark.parametrize(("status", "says"), [(401, "refused the API key"), (500, "gave up")])
def test_a_refused_key_or_a_service_that_keeps_failing_stops_the_import(
    status: int, says: str
) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(status, json={"detail": "no"}))
    with pytest.raises(ImportAbortedError, match=says):
        sender(transport).send(events("a"))
