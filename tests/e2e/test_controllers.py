"""What the controllers' machinery decides: the guard before the body, and how a
typed body is read (StrictBody) where Litestar alone would read it otherwise."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Api

EMPTY = "is not valid JSON: Input data was truncated"


@pytest.mark.parametrize(
    "path", ["/v1/meters", "/v1/adjustments", "/v1/replay", "/v1/customers", "/v1/mappings"]
)
def test_an_empty_required_body_is_malformed_json(api: Api, path: str) -> None:
    response = api.call("POST", path, content=b"")
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"] == [{"field": "body", "reason": EMPTY}]


@pytest.mark.parametrize("body", [b"", b"  \n", b"{}"])
def test_reconciliation_run_takes_no_body_or_an_empty_one(api: Api, body: bytes) -> None:
    response = api.call("POST", "/v1/reconciliation/run", content=body)
    # Stripe is not configured here: the run is refused for that, not for the body.
    assert response.status_code == 503
    assert response.json()["title"] == "Stripe unavailable"


def test_a_null_body_is_not_an_absent_one(api: Api) -> None:
    response = api.call("POST", "/v1/reconciliation/run", content=b"null")
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"field": "body", "reason": "Expected `object`, got `null`"}
    ]


def test_the_key_is_checked_before_the_body_is_read(api: Api) -> None:
    no_key = api.call("POST", "/v1/meters", key="", content=b"{not json")
    assert no_key.status_code == 401
    assert no_key.headers["www-authenticate"] == "Bearer"
    wrong_scope = api.call("POST", "/v1/meters", key="acme-read", content=b"{not json")
    assert wrong_scope.status_code == 403
    assert wrong_scope.json()["detail"] == "this API key lacks the 'admin' scope"


def test_a_typed_body_keeps_the_repeated_key_rule(api: Api) -> None:
    body = b'{"name":"calls","aggregation":"sum","aggregation":"max"}'
    response = api.call("POST", "/v1/meters", content=body)
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"field": "aggregation", "reason": "appears more than once in one object"}
    ]


def test_a_key_sent_as_x_api_key_is_the_same_key(api: Api) -> None:
    headers = {"X-API-Key": api.keys["acme-read"]}
    response = api.call("GET", "/v1/meters", key="", headers=headers)
    assert response.status_code == 200
    assert [m["name"] for m in response.json()["data"]] == ["api_calls"]
