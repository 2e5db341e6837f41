"""/v1/alerts over HTTP: create, read, replace whole, delete, incidents, tenant isolation."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.e2e.conftest import Api, event

RULE = {"metric": "api_calls", "kind": "usage", "threshold": 100}
WHOLE = {
    "metric": "api_calls",
    "customerRef": None,
    "kind": "usage",
    "threshold": 100,
    "basis": None,
    "currency": None,
    "enabled": True,
    "cooldownSeconds": 3600,
}


def create(api: Api, body: dict[str, Any] | None = None, key: str = "acme-all") -> dict[str, Any]:
    response = api.call("POST", "/v1/alerts", key, json=body or RULE)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def refused(response: Any, status: int = 422) -> tuple[str, str]:
    assert response.status_code == status, response.text
    [error] = response.json()["errors"]
    return error["field"], error["reason"]


def test_an_alert_is_created_with_defaults_read_and_listed(api: Api) -> None:
    created = create(api)
    assert {k: v for k, v in created.items() if k not in ("id", "createdAt", "updatedAt")} == {
        **WHOLE,
        "threshold": "100",
    }
    assert api.call("GET", f"/v1/alerts/{created['id']}", "acme-read").json() == created
    api.settle()
    assert api.call("GET", "/v1/alerts", "acme-read").json()["data"] == [created]


def test_put_replaces_the_whole_alert_and_false_and_zero_are_values(api: Api) -> None:
    alert = create(api, {**RULE, "customerRef": "cus_1", "cooldownSeconds": 60})
    path = f"/v1/alerts/{alert['id']}"
    replaced = api.call("PUT", path, json={**WHOLE, "enabled": False, "threshold": 0})
    assert replaced.status_code == 200, replaced.text
    body = replaced.json()
    # Nothing is kept from before: customerRef and the cooldown are what the PUT said.
    assert (body["enabled"], body["threshold"], body["customerRef"], body["cooldownSeconds"]) == (
        False,
        "0",
        None,
        3600,
    )
    assert api.call("GET", path).json() == body
    api.settle()
    assert api.call("GET", "/v1/alerts").json()["data"] == [body]


@pytest.mark.parametrize("missing", sorted(WHOLE))
def test_put_without_a_field_is_refused_naming_it(api: Api, missing: str) -> None:
    alert = create(api)
    body = {k: v for k, v in WHOLE.items() if k != missing}
    response = api.call("PUT", f"/v1/alerts/{alert['id']}", json=body)
    assert refused(response) == (missing, "is required")
    # Unchanged.
    assert api.call("GET", f"/v1/alerts/{alert['id']}").json() == alert


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"metric": "nope"}, "metric", "'nope' is not declared (declare it with POST /v1/meters)"),
        ({"kind": "budget"}, "kind", "must be one of usage, spend, spike"),
        ({"threshold": -1}, "threshold", "must be zero or more"),
        ({"threshold": "many"}, "threshold", "must be a number written as in JSON, e.g. 12 or 0.5"),
        ({"threshold": None}, "threshold", "must be a number or a string holding one"),
        ({"kind": "spend", "currency": "usd"}, "basis", "is required for a spend alert"
         " (amount_so_far or forecast)"),
        ({"cooldownSeconds": -5}, "cooldownSeconds", "must be between 0 and 31622400 (366 days)"),
        ({"enabled": "yes"}, "enabled", "expected `bool`, got `str`"),
        ({"colour": "red"}, "colour", "is not a known field"),
    ],
)  # fmt: skip
def test_bad_input_is_a_422_naming_the_field_and_why(
    api: Api, change: dict[str, Any], field: str, reason: str
) -> None:
    assert refused(api.call("POST", "/v1/alerts", json={**RULE, **change})) == (field, reason)
    alert = create(api)
    response = api.call("PUT", f"/v1/alerts/{alert['id']}", json={**WHOLE, **change})
    assert refused(response) == (field, reason)


def test_another_tenants_alert_is_not_found_and_ids_are_checked(api: Api) -> None:
    alert = create(api)
    path = f"/v1/alerts/{alert['id']}"
    for method, url, body in [
        ("GET", path, None),
        ("PUT", path, WHOLE),
        ("DELETE", path, None),
        ("GET", f"{path}/incidents", None),
        ("POST", f"{path}/incidents/{alert['id']}/acknowledge", None),
    ]:
        response = api.call(method, url, "globex-all", json=body)
        assert response.status_code == 404, (method, url, response.text)
    api.settle()
    assert api.call("GET", "/v1/alerts", "globex-read").json()["data"] == []
    assert api.call("GET", path).status_code == 200  # still there for its tenant
    assert refused(api.call("GET", "/v1/alerts/not-an-id")) == ("alertId", "must be an id (a UUID)")


def test_scopes_reading_needs_read_and_changing_needs_admin(api: Api) -> None:
    alert = create(api)
    assert api.call("POST", "/v1/alerts", "acme-read", json=RULE).status_code == 403
    assert api.call("PUT", f"/v1/alerts/{alert['id']}", "acme-read", json=WHOLE).status_code == 403
    assert api.call("DELETE", f"/v1/alerts/{alert['id']}", "acme-read").status_code == 403
    assert api.call("GET", "/v1/alerts", "acme-ingest").status_code == 403
    assert api.call("GET", "/v1/alerts", "").status_code == 401


def test_a_deleted_alert_is_gone(api: Api) -> None:
    alert = create(api)
    path = f"/v1/alerts/{alert['id']}"
    assert api.call("DELETE", path).status_code == 204
    assert api.call("GET", path).status_code == 404
    assert api.call("DELETE", path).status_code == 404
    assert api.call("PUT", path, json=WHOLE).status_code == 404
    api.settle()
    assert api.call("GET", "/v1/alerts").json()["data"] == []


def test_usage_over_the_threshold_is_an_incident_seen_and_acknowledged_over_http(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    alert = create(api, {**RULE, "threshold": 10, "customerRef": "cus_1"})
    with caplog.at_level(logging.WARNING, logger="stripemeter.alerts"):
        assert api.ingest(event(quantity=6), event(quantity=5)).status_code == 200
        assert api.ingest(event(quantity=50, customerRef="cus_2")).status_code == 200
        api.settle()
    [warning] = [r.getMessage() for r in caplog.records if r.name == "stripemeter.alerts"]
    assert f"alert {alert['id']} triggered for customer cus_1" in warning
    incidents = api.call("GET", f"/v1/alerts/{alert['id']}/incidents", "acme-read").json()["data"]
    assert [(i["customerRef"], i["status"], i["observed"], i["threshold"]) for i in incidents] == [
        ("cus_1", "triggered", "11", "10")
    ]
    incident = incidents[0]
    assert (incident["period"], incident["periodStart"], incident["periodEnd"]) == (
        "2026-03",
        "2026-03-01T00:00:00Z",
        "2026-04-01T00:00:00Z",
    )
    ack = f"/v1/alerts/{alert['id']}/incidents/{incident['id']}/acknowledge"
    assert api.call("POST", ack, "globex-all").status_code == 404
    assert api.call("POST", ack, "acme-read").status_code == 403
    done = api.call("POST", ack, json={"actor": "ops"})
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "acknowledged"
    assert done.json()["acknowledgedBy"].startswith("ops (api-key:")
    again = api.call("POST", ack)
    assert (
        again.status_code == 200 and again.json()["acknowledgedAt"] == done.json()["acknowledgedAt"]
    )
    api.settle()
    listed = api.call("GET", f"/v1/alerts/{alert['id']}/incidents").json()["data"]
    assert listed[0]["status"] == "acknowledged"
    metrics = api.call("GET", "/metrics", "").text
    assert 'stripemeter_usage_alerts_triggered_total{kind="usage"} 1.0' in metrics
    unknown = f"/v1/alerts/{alert['id']}/incidents/{alert['id']}/acknowledge"
    assert api.call("POST", unknown).status_code == 404
