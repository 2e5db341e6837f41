"""POST /v1/events/ingest over HTTP: outcomes, idempotency, and every validation rule."""

from __future__ import annotations

from typing import Any

import pytest

from domain.tenancy import tenant_id_for
from tests.e2e.conftest import Api, event


def statuses(response: Any) -> list[str]:
    return [r["status"] for r in response.json()["results"]]


def test_results_come_one_per_event_in_request_order(api: Api) -> None:
    response = api.ingest(
        event(idempotencyKey="a", quantity=2),
        event(idempotencyKey="a", quantity=2),
        event(idempotencyKey="a", quantity=3),
        event(metric="unknown"),
        event(idempotencyKey="b", quantity="0.5"),
    )
    assert response.status_code == 200
    body = response.json()
    assert statuses(response) == ["accepted", "duplicate", "conflict", "error", "accepted"]
    assert (body["accepted"], body["duplicates"], body["conflicts"], body["errors"]) == (2, 1, 1, 1)
    assert body["results"][3]["field"] == "metric"
    assert body["results"][3]["reason"] == "metric 'unknown' is not declared"
    api.settle()
    usage = api.call("GET", "/v1/usage/current?customerRef=cus_1").json()
    assert usage["counters"][0]["value"] == "2.5"


def test_the_idempotency_key_header_covers_the_request_not_each_event(api: Api) -> None:
    events = [event(quantity=1), event(quantity=1), event(quantity=2)]
    first = api.ingest(*events, headers={"Idempotency-Key": "req-42"})
    # Identical events in one request are distinct events under a request key.
    assert statuses(first) == ["accepted", "accepted", "accepted"]
    retry = api.ingest(*events, headers={"Idempotency-Key": "req-42"})
    assert statuses(retry) == ["duplicate", "duplicate", "duplicate"]
    changed = api.ingest(event(quantity=9), headers={"Idempotency-Key": "req-42"})
    assert statuses(changed) == ["conflict"]
    api.settle()
    assert (
        api.call("GET", "/v1/usage/current?customerRef=cus_1").json()["counters"][0]["value"] == "4"
    )


def test_without_any_key_the_content_is_the_key(api: Api) -> None:
    first = api.ingest(event(quantity=1, meta={"b": 1, "a": 2}))
    again = api.ingest(event(quantity="1.0", meta={"a": 2, "b": 1}))
    assert statuses(first) == ["accepted"]
    assert statuses(again) == ["duplicate"]
    assert first.json()["results"][0]["idempotencyKey"].startswith("content:")


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        ({"metric": None}, "metric", "is required"),
        ({"customerRef": None}, "customerRef", "is required"),
        ({"quantity": None}, "quantity", "is required"),
        ({"ts": None}, "ts", "is required"),
        ({"customerRef": ""}, "customerRef", "must not be empty"),
        ({"customerRef": "x" * 256}, "customerRef", "must be at most 255 characters"),
        ({"metric": 7}, "metric", "expected `str`, got `int`"),
        ({"quantity": "lots"}, "quantity", "must be a number written as in JSON, e.g. 12 or 0.5"),
        ({"quantity": "NaN"}, "quantity", "must be a finite number"),
        ({"quantity": "1e16"}, "quantity", "must be smaller than 10^15 in magnitude"),
        ({"quantity": "0.0000000000001"}, "quantity", "must have at most 12 decimal places"),
        (
            {"quantity": -1},
            "quantity",
            "must not be negative: metric 'api_calls' takes no corrections",
        ),
        (
            {"ts": "2026-03-15 11:00"},
            "ts",
            "must be an RFC 3339 timestamp with a time zone, e.g. 2026-01-16T14:30:00Z",
        ),
        ({"ts": "2026-02-30T11:00:00Z"}, "ts", "is not a real date and time"),
        ({"ts": "2026-03-15T12:06:00Z"}, "ts", "is more than 5 minutes in the future"),
        ({"idempotencyKey": "k" * 256}, "idempotencyKey", "must be at most 255 characters"),
        ({"meta": {"blob": "x" * 5000}}, "meta", "must encode to at most 4096 bytes of JSON"),
        ({"meta": [1, 2]}, "meta", "expected `object | null`, got `array`"),
        ({"colour": "red"}, "colour", "is not a known field"),
        ({"": 1}, "body", "holds the unknown field ''"),
        ({"x-y": 1}, "body", "holds the unknown field 'x-y'"),
    ],
)
def test_each_validation_rule_names_the_field_and_reason(
    api: Api, fields: dict[str, Any], field: str, reason: str
) -> None:
    bad = event(**fields)
    for name, value in fields.items():
        if value is None:
            del bad[name]
    response = api.ingest(event(idempotencyKey="good"), bad)
    assert response.status_code == 200
    good, refused = response.json()["results"]
    assert good["status"] == "accepted"  # one bad event does not sink the batch
    assert (refused["status"], refused["field"], refused["reason"]) == ("error", field, reason)


def test_malformed_json_is_one_400_and_nothing_is_written(api: Api) -> None:
    response = api.call(
        "POST",
        "/v1/events/ingest",
        content=b'{"events": [{"metric": "api_calls"',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["title"] == "Malformed JSON"
    assert response.json()["errors"][0]["field"] == "body"
    api.settle()
    assert api.call("GET", "/v1/events").json()["data"] == []


ONE = {"metric": "api_calls", "customerRef": "cus_1", "quantity": 1, "ts": "2026-01-16T14:30:00Z"}


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ({"events": []}, "events", "must hold at least one event"),
        ({"events": [{"metric": "api_calls"}] * 1001}, "events", "must hold at most 1000 events"),
        ({"event": []}, "event", "is not a known field"),  # unknown top-level fields: refused
        ({"events": "all of them"}, "events", "expected `array`, got `str`"),
        # The history flag (docs/import.md): a boolean or nothing; checked before any event.
        ({"events": [ONE], "history": "yes"}, "history", "expected `bool`, got `str`"),
        ({"events": [ONE], "history": None}, "history", "expected `bool`, got `null`"),
        ({"events": [ONE], "history": 1}, "history", "expected `bool`, got `int`"),
    ],
)
def test_a_bad_batch_is_one_4xx_and_nothing_is_written(
    api: Api, body: dict[str, Any], field: str, reason: str
) -> None:
    response = api.call("POST", "/v1/events/ingest", json=body)
    assert response.status_code == 422
    assert response.json()["errors"] == [{"field": field, "reason": reason}]
    api.settle()
    assert api.call("GET", "/v1/events").json()["data"] == []


def test_a_tenant_id_in_the_body_must_be_the_keys_tenant(api: Api) -> None:
    assert statuses(api.ingest(event(tenantId="acme"))) == ["accepted"]
    refused = api.ingest(event(idempotencyKey="x"), event(tenantId="globex"))
    assert refused.status_code == 403
    assert "tenantId" in refused.json()["detail"]
    api.settle()
    assert len(api.call("GET", "/v1/events").json()["data"]) == 1  # nothing of the refused request


def test_late_events_report_their_lateness(api: Api) -> None:
    api.clock.now = api.clock.now.replace(month=4, day=1, hour=6)
    # The "past" event is 40 days old: past the default 35-day ingest horizon.
    api.client.app.state.services.stores.app.set_ingest_horizon(tenant_id_for("acme"), 60)
    response = api.ingest(
        event(ts="2026-03-31T23:00:00Z", idempotencyKey="in"),
        event(ts="2026-02-20T10:00:00Z", idempotencyKey="past"),
    )
    assert [r.get("late") for r in response.json()["results"]] == ["in_window", "carried"]
    api.settle()
    listed = api.call("GET", "/v1/events").json()["data"]
    assert [(e["period"], e["status"]) for e in listed] == [
        ("2026-03", "counted"),
        ("2026-04", "correction"),
        ("2026-02", "late"),
    ]
    assert "carried into period 2026-04" in listed[2]["note"]
    metrics = api.client.get("/metrics").text
    assert 'stripemeter_late_events_total{kind="in_window"} 1.0' in metrics
    assert 'stripemeter_late_events_total{kind="carried"} 1.0' in metrics
    assert 'stripemeter_corrections_total{outcome="carried"} 1.0' in metrics
