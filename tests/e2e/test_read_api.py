"""Reads, meters, auth and tenant isolation over HTTP."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Api, event

READ_ROUTES = [
    "/v1/events",
    "/v1/usage/current?customerRef=cus_1",
    "/v1/usage/history?customerRef=cus_1&metric=api_calls&since=2026-03-01T00:00:00Z",
    "/v1/meters",
    "/v1/meters/api_calls",
]


def test_every_v1_route_needs_a_valid_key(api: Api) -> None:
    for path in [*READ_ROUTES, "/v1/events/ingest"]:
        method = "POST" if path.endswith("ingest") else "GET"
        missing = api.client.request(method, path)
        assert missing.status_code == 401, path
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = api.client.request(method, path, headers={"Authorization": "Bearer smk_nope"})
        assert wrong.status_code == 401, path
        assert wrong.json()["detail"] == "unknown API key"


def test_scopes_are_enforced(api: Api) -> None:
    assert api.ingest(event(), key="acme-read").status_code == 403
    assert api.call("GET", "/v1/events", key="acme-ingest").status_code == 403
    meter = {"name": "seats", "aggregation": "max"}
    assert api.call("POST", "/v1/meters", key="acme-read", json=meter).status_code == 403
    assert api.ingest(event(), key="acme-ingest").status_code == 200
    assert api.call("GET", "/v1/events", key="acme-read").status_code == 200


def test_a_key_sees_nothing_of_another_tenant(api: Api) -> None:
    api.ingest(event(customerRef="cus_1", quantity=5, idempotencyKey="same-key"))
    other = api.ingest(
        event(customerRef="cus_1", quantity=7, idempotencyKey="same-key"), key="globex-all"
    )
    assert other.json()["results"][0]["status"] == "accepted"  # keys are per tenant
    api.call("POST", "/v1/meters", json={"name": "acme_only", "aggregation": "sum"})
    api.settle()
    for path in READ_ROUTES[:-1]:  # both tenants declared api_calls the same way
        mine = api.call("GET", path, key="acme-read").json()
        theirs = api.call("GET", path, key="globex-read").json()
        assert mine != theirs, path
    acme_events = api.call("GET", "/v1/events", key="acme-read").json()["data"]
    globex_events = api.call("GET", "/v1/events", key="globex-read").json()["data"]
    assert [e["quantity"] for e in acme_events] == ["5"]
    assert [e["quantity"] for e in globex_events] == ["7"]
    assert api.call("GET", "/v1/meters/acme_only", key="globex-read").status_code == 404
    globex_usage = api.call("GET", "/v1/usage/current?customerRef=cus_1", key="globex-read").json()
    assert [c["value"] for c in globex_usage["counters"]] == ["7"]


def test_events_list_filters_and_pages_with_a_cursor(api: Api) -> None:
    for i in range(5):  # one request each: the log keeps request order across requests
        api.ingest(
            event(
                idempotencyKey=f"e{i}", customerRef=f"cus_{i % 2}", ts=f"2026-03-{10 + i}T00:00:00Z"
            )
        )
    api.settle()
    first = api.call("GET", "/v1/events?limit=2").json()
    second = api.call("GET", f"/v1/events?limit=2&cursor={first['nextCursor']}").json()
    third = api.call("GET", f"/v1/events?limit=2&cursor={second['nextCursor']}").json()
    keys = [e["idempotencyKey"] for page in (first, second, third) for e in page["data"]]
    assert keys == ["e0", "e1", "e2", "e3", "e4"]
    assert third["nextCursor"] is None
    only = api.call("GET", "/v1/events?customerRef=cus_1").json()["data"]
    assert [e["idempotencyKey"] for e in only] == ["e1", "e3"]
    ranged = api.call(
        "GET", "/v1/events?since=2026-03-11T00:00:00Z&until=2026-03-13T00:00:00Z"
    ).json()
    assert [e["idempotencyKey"] for e in ranged["data"]] == ["e1", "e2"]
    assert api.call("GET", "/v1/events?metric=other").json()["data"] == []


@pytest.mark.parametrize(
    ("query", "field", "reason"),
    [
        ("limit=0", "limit", "must be between 1 and 1000"),
        ("cursor=!!", "cursor", "is not a cursor this API returned"),
        (
            "since=yesterday",
            "since",
            "must be an RFC 3339 timestamp with a time zone, e.g. 2026-01-16T14:30:00Z",
        ),
    ],
)
def test_bad_list_parameters_are_422_with_the_field(
    api: Api, query: str, field: str, reason: str
) -> None:
    response = api.call("GET", f"/v1/events?{query}")
    assert response.status_code == 422
    assert response.json()["errors"] == [{"field": field, "reason": reason}]


def test_usage_history_in_hours_and_days(api: Api) -> None:
    api.ingest(
        event(idempotencyKey="a", quantity=1, ts="2026-03-14T10:15:00Z"),
        event(idempotencyKey="b", quantity=2, ts="2026-03-14T10:45:00Z"),
        event(idempotencyKey="c", quantity=4, ts="2026-03-14T23:59:59Z"),
        event(idempotencyKey="d", quantity=8, ts="2026-03-15T00:00:00Z"),
    )
    api.settle()
    base = "/v1/usage/history?customerRef=cus_1&metric=api_calls&since=2026-03-14T00:00:00Z"
    hours = api.call("GET", base + "&granularity=hour").json()["buckets"]
    assert [(b["start"], b["value"]) for b in hours] == [
        ("2026-03-14T10:00:00Z", "3"),
        ("2026-03-14T23:00:00Z", "4"),
        ("2026-03-15T00:00:00Z", "8"),
    ]
    days = api.call("GET", base + "&granularity=day").json()["buckets"]
    assert [(b["start"], b["value"], b["count"]) for b in days] == [
        ("2026-03-14T00:00:00Z", "7", 3),
        ("2026-03-15T00:00:00Z", "8", 1),
    ]
    bad = api.call("GET", base + "&granularity=week")
    assert bad.json()["errors"] == [{"field": "granularity", "reason": "must be 'hour' or 'day'"}]
    unknown = api.call("GET", "/v1/usage/history?customerRef=cus_1&metric=nope")
    assert unknown.status_code == 404


def test_usage_current_reads_a_named_period(api: Api) -> None:
    api.clock.now = api.clock.now.replace(day=1, hour=12)  # February closed 12 h ago
    api.ingest(event(idempotencyKey="feb", ts="2026-02-27T00:00:00Z"))
    api.settle()
    assert api.call("GET", "/v1/usage/current?customerRef=cus_1").json()["counters"] == []
    february = api.call("GET", "/v1/usage/current?customerRef=cus_1&period=2026-02").json()
    assert february["periodEnd"] == "2026-03-01T00:00:00Z"
    assert [c["value"] for c in february["counters"]] == ["1"]


def test_meters_declare_list_and_refuse_changes(api: Api) -> None:
    seats = {"name": "seats", "aggregation": "max", "unit": "seat", "latenessWindowSeconds": 3600}
    created = api.call("POST", "/v1/meters", json=seats)
    assert created.status_code == 201
    assert created.json()["latenessWindowSeconds"] == 3600
    assert api.call("POST", "/v1/meters", json=seats).status_code == 200
    changed = api.call("POST", "/v1/meters", json={**seats, "aggregation": "sum"})
    assert changed.status_code == 409
    names = [m["name"] for m in api.call("GET", "/v1/meters").json()["data"]]
    assert names == ["api_calls", "seats"]


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        (
            {"name": "Bad Name", "aggregation": "sum"},
            "name",
            "must start with a lowercase letter and use only a-z, 0-9, '_', '.', ':', '-'"
            " (at most 64 characters)",
        ),
        (
            {"name": "x", "aggregation": "avg"},
            "aggregation",
            "must be one of sum, count, max, last",
        ),
        (
            {"name": "x", "aggregation": "sum", "latenessWindowSeconds": -1},
            "latenessWindowSeconds",
            "must be between 0 and 3024000",
        ),
        ({"aggregation": "sum"}, "name", "is required"),
    ],
)
def test_bad_meter_declarations_name_the_field(
    api: Api, body: dict[str, object], field: str, reason: str
) -> None:
    response = api.call("POST", "/v1/meters", json=body)
    assert response.status_code == 422
    assert response.json()["errors"] == [{"field": field, "reason": reason}]


def test_health_readiness_and_metrics(api: Api) -> None:
    assert api.client.get("/health/live").json() == {"status": "ok"}
    api.ingest(event(idempotencyKey="one"))
    unready = api.client.get("/health/ready")
    # The worker is not embedded in these tests: the lag is real until settled.
    services = api.client.app.state.services
    object.__setattr__(services.settings, "ready_max_lag_events", 0)
    assert api.client.get("/health/ready").status_code == 503
    body = api.client.get("/health/ready").json()
    assert body["checks"]["projection:counters"]["status"] == "lagging"
    assert unready.json()["checks"]["eventStore"]["status"] == "ok"
    api.settle()
    assert api.client.get("/health/ready").status_code == 200
    metrics = api.client.get("/metrics").text
    assert 'stripemeter_ingest_events_total{outcome="accepted"} 1.0' in metrics
    assert 'stripemeter_projection_lag_events{projection="counters"} 0.0' in metrics
    assert (
        'http_request_duration_seconds_count{method="POST",route="/v1/events/ingest",status="200"}'
        in metrics
    )
