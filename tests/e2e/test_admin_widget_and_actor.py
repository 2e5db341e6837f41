"""The admin UI's widget-origins page and the actor name on action forms (SQLite and
PostgreSQL): the origins shown and saved are ``/v1/widget/origins``'s, checked as the
API checks them; a typed name is recorded before the key, as the API's ``actor``."""

from __future__ import annotations

import re

from tests.e2e.conftest import Api, event
from tests.e2e.test_admin_actions import act, api_adjustments, propose, token
from tests.e2e.test_admin_ui import by_id, page, sign_in
from tests.e2e.test_alerts_api import RULE, create


def shown_origins(api: Api) -> list[str]:
    return re.findall(r'data-origin="([^"]+)"', page(api, "/admin/widget").text)


def api_origins(api: Api, key: str = "acme-read") -> list[str]:
    answer = api.call("GET", "/v1/widget/origins", key)
    assert answer.status_code == 200, answer.text
    origins: list[str] = answer.json()["origins"]
    return origins


def test_origins_saved_in_the_page_are_the_api_s(api: Api) -> None:
    sign_in(api)
    empty = page(api, "/admin/widget")
    assert empty.status_code == 200 and 'id="no-origins"' in empty.text
    saved = act(
        api,
        "/admin/widget/origins",
        token(api),
        origins="https://app.example.com\n\n  http://localhost:8080  \nhttps://app.example.com\n",
    )
    assert (saved.status_code, saved.headers["location"]) == (303, "/admin/widget")
    assert api_origins(api) == ["https://app.example.com", "http://localhost:8080"]
    assert shown_origins(api) == api_origins(api)
    # The API's change shows in the page, and an empty form allows no origin.
    put = api.call("PUT", "/v1/widget/origins", json={"origins": ["https://b.example"]})
    assert put.status_code == 200, put.text
    assert shown_origins(api) == ["https://b.example"]
    assert act(api, "/admin/widget/origins", token(api), origins="").status_code == 303
    assert api_origins(api) == []


def test_a_bad_origin_is_the_api_s_refusal_and_saves_nothing(api: Api) -> None:
    api.call("PUT", "/v1/widget/origins", json={"origins": ["https://keep.example"]})
    sign_in(api)
    for bad in ("https://app.example.com/path", "app.example.com", "https://ok.example\nftp://x"):
        answer = act(api, "/admin/widget/origins", token(api), origins=bad)
        refused = api.call("PUT", "/v1/widget/origins", json={"origins": bad.splitlines()})
        assert answer.status_code == refused.status_code == 422, (bad, answer.text)
        assert "origins" in by_id(answer.text, "error")
    assert api_origins(api) == ["https://keep.example"]


def test_origins_need_an_admin_session_and_the_csrf_token(api: Api) -> None:
    sign_in(api)
    for csrf in (None, "forged"):
        answer = act(api, "/admin/widget/origins", csrf, origins="https://x.example")
        assert answer.status_code == 403 and "CSRF" in answer.text
    api.client.cookies.clear()
    sign_in(api, "acme-read")
    shown = page(api, "/admin/widget").text
    assert 'id="origins-form"' not in shown
    answer = act(api, "/admin/widget/origins", token(api), origins="https://x.example")
    assert answer.status_code == 403 and "read-only" in answer.text
    assert api_origins(api) == []


def test_another_tenant_s_origins_are_neither_shown_nor_changed(api: Api) -> None:
    api.call("PUT", "/v1/widget/origins", json={"origins": ["https://acme.example"]})
    sign_in(api, "globex-all")
    assert shown_origins(api) == []
    assert act(api, "/admin/widget/origins", token(api), origins="https://g.example").status_code
    assert api_origins(api) == ["https://acme.example"]
    assert api_origins(api, "globex-read") == ["https://g.example"]


def test_a_typed_name_is_recorded_before_the_key(api: Api) -> None:
    api.ingest(event(quantity=10))
    adjustment = propose(api)
    alert = create(api, {**RULE, "threshold": 1, "customerRef": "cus_1"})
    api.settle()
    sign_in(api)
    listed = page(api, "/admin/adjustments").text
    assert 'name="actor"' in listed
    path = f"/admin/adjustments/{adjustment['id']}/approve"
    approved = act(api, path, token(api), reason="ok", actor="  Ada Lovelace ")
    assert approved.status_code == 303, approved.text
    api.settle()
    [seen] = api_adjustments(api, "applied")
    assert re.fullmatch(r"Ada Lovelace \(api-key:[0-9a-f-]+\)", seen["decidedBy"]), seen
    [incident] = api.call("GET", f"/v1/alerts/{alert['id']}/incidents").json()["data"]
    ack = f"/admin/alerts/{alert['id']}/incidents/{incident['id']}/acknowledge"
    assert act(api, ack, token(api), actor="Grace").status_code == 303
    api.settle()
    [acked] = api.call("GET", f"/v1/alerts/{alert['id']}/incidents").json()["data"]
    assert acked["acknowledgedBy"].startswith("Grace (api-key:")


def test_a_bad_name_is_refused_before_anything_acts(api: Api) -> None:
    adjustment = propose(api)
    sign_in(api)
    path = f"/admin/adjustments/{adjustment['id']}/approve"
    for bad in ("x" * 201, "a\x00b"):
        answer = act(api, path, token(api), reason="ok", actor=bad)
        assert 400 <= answer.status_code < 500, answer.text
        assert "actor" in by_id(answer.text, "error")
    api.settle()
    assert [a["id"] for a in api_adjustments(api, "pending")] == [adjustment["id"]]
