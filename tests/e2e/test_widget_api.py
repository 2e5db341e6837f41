"""The widget's routes over HTTP (SQLite and PostgreSQL): minting tokens, what a token
reads and nothing else, expiry on the service's clock, widget origins and CORS, the script."""

from __future__ import annotations

from typing import Any

import pytest

from domain.tenancy import Scope, tenant_id_for
from stripe_emulator.testing import RunningEmulator
from tests.e2e.conftest import Api, event
from tests.e2e.test_anchor_webhook_api import move_to, work
from tests.e2e.test_projection_api import NOW, priced_customer, projection, use

APP = "https://app.acme.test"
OTHER = "https://evil.test"


@pytest.fixture
def widget_api(api: Api) -> Api:
    app = api.client.app.state.services.stores.app
    for slug in ("acme", "globex"):
        minter = app.issue_api_key(tenant_id_for(slug), frozenset({Scope.WIDGET_MINT})).secret
        api.keys[f"{slug}-mint"] = minter
    return api


def mint(api: Api, customer: str = "cus_1", key: str = "acme-mint", **body: Any) -> Any:
    return api.call("POST", "/v1/widget-tokens", key, json={"customerRef": customer, **body})


def read(api: Api, token: str, path: str = "/v1/widget/usage", **headers: str) -> Any:
    return api.client.get(path, headers={"Authorization": f"Bearer {token}", **headers})


def test_a_token_reads_its_customers_usage_as_the_api_counts_it(widget_api: Api) -> None:
    api = widget_api
    api.ingest(event(quantity=7), event(customerRef="cus_2", quantity=100))
    api.settle()
    minted = mint(api)
    assert minted.status_code == 201
    body = minted.json()
    assert body["customerRef"] == "cus_1"
    assert body["token"].startswith("smw_")
    assert body["expiresAt"] == "2026-03-15T12:15:00Z"  # 900 s on the service's clock
    shown = read(api, body["token"])
    assert shown.status_code == 200
    usage = shown.json()
    current = api.call("GET", "/v1/usage/current?customerRef=cus_1").json()
    assert usage["customerRef"] == "cus_1"
    assert (usage["period"], usage["periodStart"], usage["periodEnd"]) == (
        current["period"],
        current["periodStart"],
        current["periodEnd"],
    )
    assert [(m["metric"], m["value"]) for m in usage["metrics"]] == [
        (c["metric"], c["value"]) for c in current["counters"]
    ]
    assert usage["metrics"][0]["value"] == "7"
    # Stripe is not configured here: no cost, and why, never a zero.
    assert usage["metrics"][0]["costSoFar"] is None
    assert usage["metrics"][0]["noPrice"]
    assert usage["costSoFar"] is None and usage["costReason"]


def test_a_token_names_one_customer_and_nothing_else(widget_api: Api) -> None:
    api = widget_api
    api.ingest(event(customerRef="cus_2", quantity=100))
    api.settle()
    token = mint(api).json()["token"]
    # No parameter can name another customer.
    other = read(api, token, "/v1/widget/usage?customerRef=cus_2")
    assert other.status_code == 422
    assert other.json()["errors"][0]["field"] == "customerRef"
    assert read(api, token).json()["metrics"] == []
    # Every other route refuses it.
    for method, path in [
        ("GET", "/v1/usage/current?customerRef=cus_1"),
        ("GET", "/v1/events"),
        ("GET", "/v1/meters"),
        ("GET", "/v1/widget/origins"),
        ("POST", "/v1/widget-tokens"),
        ("POST", "/v1/events/ingest"),
    ]:
        answer = api.client.request(
            method, path, headers={"Authorization": f"Bearer {token}"}, json={"events": []}
        )
        assert answer.status_code == 401, (method, path)
        assert "widget token" in answer.json()["detail"]


def test_an_api_key_reads_no_widget_usage(widget_api: Api) -> None:
    for key in ("acme-all", "acme-read", "acme-mint"):
        answer = read(widget_api, widget_api.keys[key])
        assert answer.status_code == 401
        assert answer.headers["content-type"] == "application/problem+json"
    missing = widget_api.client.get("/v1/widget/usage")
    assert missing.status_code == 401
    unknown = read(widget_api, "smw_" + "x" * 43)
    assert unknown.status_code == 401
    assert unknown.json()["detail"] == "unknown widget token"


def test_who_may_mint_and_the_minter_may_do_nothing_else(widget_api: Api) -> None:
    api = widget_api
    assert mint(api, key="acme-all").status_code == 201
    assert mint(api, key="acme-mint").status_code == 201
    for key in ("acme-read", "acme-ingest"):
        assert mint(api, key=key).status_code == 403
    for method, path in [
        ("GET", "/v1/usage/current?customerRef=cus_1"),
        ("GET", "/v1/meters"),
        ("GET", "/v1/widget/origins"),
        ("PUT", "/v1/widget/origins"),
    ]:
        answer = api.call(method, path, "acme-mint", json={"origins": []})
        assert answer.status_code == 403, (method, path)
    assert api.ingest(event(), key="acme-mint").status_code == 403


def test_bad_mint_requests_name_the_field(widget_api: Api) -> None:
    api = widget_api
    for lifetime in (0, -5, 86_401, 1.5, "900", True):
        answer = mint(api, lifetimeSeconds=lifetime)
        assert answer.status_code == 422, lifetime
        assert [e["field"] for e in answer.json()["errors"]] == ["lifetimeSeconds"]
    assert mint(api, lifetimeSeconds=86_400).json()["expiresAt"] == "2026-03-16T12:00:00Z"
    for customer in ("", "x" * 300):
        answer = mint(api, customer)
        assert answer.status_code == 422
        assert [e["field"] for e in answer.json()["errors"]] == ["customerRef"]
    extra = api.call("POST", "/v1/widget-tokens", "acme-mint", json={"customerRef": "c", "x": 1})
    assert extra.status_code == 422


def test_a_token_expires_on_the_services_clock(widget_api: Api) -> None:
    api = widget_api
    token = mint(api, lifetimeSeconds=60).json()["token"]
    api.clock.advance(seconds=59)
    assert read(api, token).status_code == 200
    api.clock.advance(seconds=1)
    expired = read(api, token)
    assert expired.status_code == 401
    assert expired.headers["content-type"] == "application/problem+json"
    assert expired.json()["detail"].startswith("this widget token expired at 2026-03-15T12:01:00Z")


def test_origins_are_set_by_admin_checked_and_kept_per_tenant(widget_api: Api) -> None:
    api = widget_api
    assert api.call("GET", "/v1/widget/origins", "acme-read").json() == {"origins": []}
    put = api.call(
        "PUT", "/v1/widget/origins", json={"origins": [APP, "http://LOCALHOST:8080", APP]}
    )
    assert put.status_code == 200
    assert put.json() == {"origins": [APP, "http://localhost:8080"]}
    assert api.call("GET", "/v1/widget/origins", "acme-read").json() == put.json()
    assert api.call("GET", "/v1/widget/origins", "globex-all").json() == {"origins": []}
    assert (
        api.call("PUT", "/v1/widget/origins", "acme-read", json={"origins": []}).status_code == 403
    )
    for bad in (
        "https://app.acme.test/",
        "https://a.test/path",
        "ftp://a.test",
        "a.test",
        "https://a.test?x=1",
        "https://user@a.test",
        "https://",
        "https://a.test:99999",
    ):
        answer = api.call("PUT", "/v1/widget/origins", json={"origins": [bad]})
        assert answer.status_code == 422, bad
        assert [e["field"] for e in answer.json()["errors"]] == ["origins"]
    assert api.call("GET", "/v1/widget/origins").json()["origins"] == [APP, "http://localhost:8080"]


def test_cors_grants_only_the_tokens_tenants_origins(widget_api: Api) -> None:
    api = widget_api
    api.call("PUT", "/v1/widget/origins", json={"origins": [APP]})
    api.call("PUT", "/v1/widget/origins", "globex-all", json={"origins": [OTHER]})
    token = mint(api).json()["token"]
    granted = read(api, token, Origin=APP)
    assert granted.status_code == 200
    assert granted.headers["access-control-allow-origin"] == APP
    assert granted.headers["vary"] == "Origin"
    # Globex configured OTHER; an acme token's answer is not granted to it.
    refused = read(api, token, Origin=OTHER)
    assert refused.status_code == 200
    assert "access-control-allow-origin" not in refused.headers
    # An expired token's problem is granted to the tenant's page, so that it can say why.
    api.clock.advance(seconds=900)
    expired = read(api, token, Origin=APP)
    assert expired.status_code == 401
    assert expired.headers["access-control-allow-origin"] == APP
    assert preflight(api, APP).headers["access-control-allow-origin"] == APP
    granted_preflight = preflight(api, APP)
    assert granted_preflight.status_code == 204
    assert granted_preflight.headers["access-control-allow-headers"] == "authorization"
    assert granted_preflight.headers["vary"] == "Origin"
    # The preflight carries no token: an origin some tenant configured may ask (the answer
    # above is the gate); one no tenant configured, a malformed one, or another method
    # or header is granted nothing.
    assert preflight(api, OTHER).headers["access-control-allow-origin"] == OTHER
    for origin, method, headers in [
        ("https://nobody.test", "GET", "authorization"),
        ("null", "GET", "authorization"),
        (APP + "/", "GET", "authorization"),
        (APP, "DELETE", "authorization"),
        (APP, "GET", "authorization, x-custom"),
    ]:
        refused_preflight = preflight(api, origin, method, headers)
        assert refused_preflight.status_code == 204
        assert "access-control-allow-origin" not in refused_preflight.headers, origin
    # Withdrawn by every tenant: no longer granted (within the 5 s cache; here the
    # origin was never asked about before).
    api.call("PUT", "/v1/widget/origins", "globex-all", json={"origins": ["https://b.test"]})
    assert "access-control-allow-origin" not in preflight(api, "https://old.test").headers
    api.call("PUT", "/v1/widget/origins", "globex-all", json={"origins": ["https://old.test"]})
    assert preflight(api, "https://b.test").headers.get("access-control-allow-origin") is None
    # Other routes are unaffected: no CORS grant anywhere else.
    other = api.call("GET", "/v1/meters", headers={"Origin": APP})
    assert other.status_code == 200
    assert "access-control-allow-origin" not in other.headers


def preflight(api: Api, origin: str, method: str = "GET", headers: str = "authorization") -> Any:
    return api.client.options(
        "/v1/widget/usage",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": headers,
        },
    )


def test_the_script_is_served_cacheable(widget_api: Api) -> None:
    script = widget_api.client.get("/widget/stripemeter-usage.js")
    assert script.status_code == 200
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert "max-age" in script.headers["cache-control"]
    assert "customElements.define" in script.text
    again = widget_api.client.get(
        "/widget/stripemeter-usage.js", headers={"If-None-Match": script.headers["etag"]}
    )
    assert again.status_code == 304


def test_the_widgets_cost_is_the_projections(webhook_api: Api, emulator: RunningEmulator) -> None:
    """Priced by the emulator's Stripe: the widget shows the projection's amounts, per
    metric and in total, and its usage equals /v1/usage/current."""
    api = webhook_api
    priced_customer(api, emulator, "usd", {"unit_amount_decimal": "0.125"})
    move_to(api, emulator, NOW)
    use(api, 1004)
    work(api)
    expected = projection(api).json()
    minted = api.call("POST", "/v1/widget-tokens", json={"customerRef": "cus_1"})
    usage = read(api, minted.json()["token"]).json()
    [line] = expected["lines"]
    [metric] = usage["metrics"]
    assert (metric["metric"], metric["value"]) == ("api_calls", line["quantity"])
    assert metric["costSoFar"] == line["amountSoFar"] == expected["total"] == usage["costSoFar"]
    assert metric["forecast"] == line["forecast"]["amount"] == usage["forecast"]
    assert (metric["currency"], usage["currency"], metric["noPrice"]) == ("usd", "usd", None)
    assert usage["costReason"] is None
    assert usage["periodStart"] == expected["period"]["start"] == "2026-03-10T12:00:00Z"
    current = api.call("GET", "/v1/usage/current?customerRef=cus_1").json()
    assert usage["period"] == current["period"]
    assert [c["value"] for c in current["counters"]] == [metric["value"]]
