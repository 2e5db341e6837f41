"""The admin UI's action pages over HTTP (SQLite and PostgreSQL): adjustments, replay and
alerts show the API's answers for the same data, and their POST forms act as the API does,
behind the session's CSRF token and the ``admin`` scope; a domain refusal is an error page."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.e2e.conftest import Api, event
from tests.e2e.test_admin_ui import by_id, csrf_of, page, sign_in
from tests.e2e.test_alerts_api import RULE, create
from tests.e2e.test_replay_api import MARCH, set_counter


def propose(api: Api, quantity: str = "-3", key: str = "credit-1") -> dict[str, Any]:
    answer = api.call(
        "POST",
        "/v1/adjustments",
        json={"customerRef": "cus_1", "metric": "api_calls", "quantity": quantity, "reason": "SLA"},
        headers={"Idempotency-Key": key},
    )
    assert answer.status_code == 201, answer.text
    proposed: dict[str, Any] = answer.json()
    return proposed


def rows(html: str, kind: str) -> list[str]:
    return re.findall(rf'data-{kind}="([^"]+)"', html)


def field(html: str, kind: str, row: str, name: str) -> str:
    found = re.search(
        rf'data-{kind}="{re.escape(row)}">.*?data-field="{name}">([^<]*)<', html, re.S
    )
    assert found is not None, f"no {name} for {row}"
    return found.group(1).strip()


def act(api: Api, path: str, csrf: str | None, **form: str) -> Any:
    data = form if csrf is None else {**form, "csrf_token": csrf}
    return api.client.post(path, data=data, follow_redirects=False)


def token(api: Api, path: str = "/admin/") -> str:
    return csrf_of(page(api, path).text)


def api_adjustments(api: Api, status: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = api.call(
        "GET", f"/v1/adjustments?status={status}", "acme-read"
    ).json()["data"]
    return data


def test_adjustments_are_listed_by_status_as_the_api_lists_them(api: Api) -> None:
    api.ingest(event(quantity=10))
    sign_in(api, "acme-read")
    empty = page(api, "/admin/adjustments")
    assert empty.status_code == 200
    assert 'id="empty"' in empty.text and "<code>POST /v1/adjustments</code>" in empty.text
    first, second = propose(api), propose(api, "5", "credit-2")
    api.settle()
    listed = page(api, "/admin/adjustments?status=pending").text
    expected = api_adjustments(api, "pending")
    assert rows(listed, "adjustment") == [a["id"] for a in expected] == [first["id"], second["id"]]
    for a in expected:
        assert field(listed, "adjustment", a["id"], "quantity") == a["quantity"]
        assert field(listed, "adjustment", a["id"], "status") == "pending"
    assert "data-action=" not in listed  # a read-only session is offered no action
    assert rows(page(api, "/admin/adjustments?status=applied").text, "adjustment") == []
    bad = page(api, "/admin/adjustments?status=lost")
    assert bad.status_code == 422
    assert "status" in by_id(bad.text, "error")


def test_an_adjustment_is_approved_then_reverted_through_the_page(api: Api) -> None:
    api.ingest(event(quantity=10))
    adjustment = propose(api)
    api.settle()
    sign_in(api)
    listed = page(api, "/admin/adjustments").text
    assert f"/admin/adjustments/{adjustment['id']}/approve" in listed
    csrf = csrf_of(listed)
    path = f"/admin/adjustments/{adjustment['id']}"
    approved = act(api, f"{path}/approve", csrf, reason="ok by finance")
    assert approved.status_code == 303, approved.text
    assert approved.headers["location"] == "/admin/adjustments?status=applied"
    api.settle()
    [seen] = api_adjustments(api, "applied")
    assert (seen["id"], seen["decisionReason"], seen["appliedTo"]) == (
        adjustment["id"],
        "ok by finance",
        "2026-03",
    )
    assert seen["decidedBy"].startswith("api-key:")  # the session's key, as the API records it
    usage = api.call("GET", "/v1/usage/current?customerRef=cus_1", "acme-read").json()
    assert usage["counters"][0]["value"] == "7"
    shown = page(api, "/admin/adjustments?status=applied").text
    assert field(shown, "adjustment", seen["id"], "appliedTo") == "2026-03"
    assert field(shown, "adjustment", seen["id"], "decidedBy") == seen["decidedBy"]
    # The domain refuses a second approval: the API's 409, shown as an error page.
    again = act(api, f"{path}/approve", csrf, reason="again")
    assert again.status_code == 409
    assert 'id="error"' in again.text
    assert act(api, f"{path}/revert", csrf, reason="withdrawn").status_code == 303
    api.settle()
    assert [a["id"] for a in api_adjustments(api, "reverted")] == [adjustment["id"]]
    # No reason: the domain's 422 naming it.
    other = propose(api, "2", "credit-3")
    refused = act(api, f"/admin/adjustments/{other['id']}/reject", csrf, reason="")
    assert refused.status_code == 422
    assert "reason" in by_id(refused.text, "error")
    nul = act(api, f"/admin/adjustments/{other['id']}/reject", csrf, reason="a\x00b")
    assert nul.status_code == 422
    assert "reason" in by_id(nul.text, "error")
    unknown = act(api, f"/admin/adjustments/{other['id']}/bless", csrf, reason="x")
    assert unknown.status_code == 404
    assert act(api, "/admin/adjustments/nope/approve", csrf, reason="x").status_code == 422


def test_actions_refuse_a_missing_or_wrong_csrf_token(api: Api) -> None:
    adjustment = propose(api)
    alert = create(api, {**RULE, "threshold": 1, "customerRef": "cus_1"})
    sign_in(api)
    paths = [
        f"/admin/adjustments/{adjustment['id']}/approve",
        "/admin/replay/apply",
        f"/admin/alerts/{alert['id']}/incidents/{alert['id']}/acknowledge",
    ]
    for path in paths:
        for csrf in (None, "forged"):
            answer = act(api, path, csrf, reason="ok", **MARCH)
            assert answer.status_code == 403, path
            assert "CSRF" in answer.text
    api.settle()
    assert api_adjustments(api, "pending")[0]["id"] == adjustment["id"]


def test_a_read_only_session_is_refused_every_action(api: Api) -> None:
    adjustment = propose(api)
    alert = create(api, {**RULE, "threshold": 1, "customerRef": "cus_1"})
    sign_in(api, "acme-read")
    csrf = token(api)
    paths = [
        f"/admin/adjustments/{adjustment['id']}/approve",
        f"/admin/adjustments/{adjustment['id']}/reject",
        "/admin/replay/apply",
        f"/admin/alerts/{alert['id']}/incidents/{alert['id']}/acknowledge",
    ]
    for path in paths:
        answer = act(api, path, csrf, reason="ok", **MARCH)
        assert answer.status_code == 403, path
        assert "read-only" in answer.text
    api.settle()
    assert [a["id"] for a in api_adjustments(api, "pending")] == [adjustment["id"]]


def test_replay_dry_run_then_apply_equals_the_api(api: Api) -> None:
    api.ingest(*[event(idempotencyKey=f"e{i}", quantity=2) for i in range(3)])
    api.settle()
    set_counter(api, "cus_1", 40)
    sign_in(api)
    form = page(api, "/admin/replay")
    assert form.status_code == 200 and 'id="summary"' not in form.text
    query = "since=2026-03-01T00:00:00Z&until=2026-04-01T00:00:00Z"
    dry = page(api, f"/admin/replay?{query}")
    assert dry.status_code == 200, dry.text
    expected = api.call("POST", "/v1/replay", "acme-read", json=MARCH).json()
    summary = expected["summary"]
    for name in ("examined", "changed", "applied", "pendingEvents"):
        found = re.search(rf'data-field="{name}">([^<]*)<', dry.text)
        assert found is not None and found.group(1) == str(summary[name]), name
    [counter] = expected["counters"]
    row = f"{counter['customerRef']}/{counter['metric']}/{counter['period']}"
    assert field(dry.text, "counter", row, "before") == counter["before"]["value"] == "40"
    assert field(dry.text, "counter", row, "after") == counter["after"]["value"] == "6"
    assert field(dry.text, "counter", row, "difference") == counter["difference"]
    usage = api.call("GET", "/v1/usage/current?customerRef=cus_1", "acme-read").json()
    assert usage["counters"][0]["value"] == "40"  # the dry run wrote nothing
    hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', dry.text))
    assert (hidden["since"], hidden["until"]) == (MARCH["since"], MARCH["until"])
    applied = act(api, "/admin/replay/apply", None, **{k: v for k, v in hidden.items()})
    assert applied.status_code == 200, applied.text
    assert by_id(applied.text, "mode") == "apply"
    assert re.search(r'data-field="applied">1<', applied.text)
    usage = api.call("GET", "/v1/usage/current?customerRef=cus_1", "acme-read").json()
    assert usage["counters"][0]["value"] == "6"
    again = api.call("POST", "/v1/replay", "acme-read", json=MARCH).json()
    assert again["summary"]["changed"] == 0


def test_a_read_session_may_dry_run_but_is_offered_no_apply(api: Api) -> None:
    api.ingest(event(quantity=2))
    api.settle()
    set_counter(api, "cus_1", 40)
    sign_in(api, "acme-read")
    dry = page(api, "/admin/replay?since=2026-03-01T00:00:00Z&until=2026-04-01T00:00:00Z")
    assert dry.status_code == 200
    assert 'id="apply-form"' not in dry.text
    assert "needs a key with the 'admin' scope" in dry.text


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("since=yesterday&until=2026-04-01T00:00:00Z", "since"),
        ("since=2026-03-01T00:00:00Z&until=2026-04-01T00:00:00Z&limit=x", "limit"),
        ("since=2026-03-01T00:00:00Z&until=2026-04-01T00:00:00Z&metrics=nope", "metrics"),
        ("since=%00&until=2026-04-01T00:00:00Z", "since"),
        ("since=2026-03-01T00:00:00Z&until=2026-04-01T00:00:00Z&customers=a%00", "customers"),
    ],
)
def test_a_bad_replay_is_an_error_page_naming_the_field(api: Api, query: str, named: str) -> None:
    sign_in(api)
    answer = page(api, f"/admin/replay?{query}")
    assert 400 <= answer.status_code < 500, answer.text
    assert named in by_id(answer.text, "error")


def test_alerts_and_open_incidents_equal_the_api_and_are_acknowledged(api: Api) -> None:
    sign_in(api)
    empty = page(api, "/admin/alerts")
    assert 'id="empty"' in empty.text and "<code>POST /v1/alerts</code>" in empty.text
    alert = create(api, {**RULE, "threshold": 10, "customerRef": "cus_1"})
    api.ingest(event(quantity=6), event(quantity=5))
    api.settle()
    shown = page(api, "/admin/alerts").text
    assert rows(shown, "alert") == [a["id"] for a in api.call("GET", "/v1/alerts").json()["data"]]
    assert field(shown, "alert", alert["id"], "threshold") == alert["threshold"]
    [incident] = api.call("GET", f"/v1/alerts/{alert['id']}/incidents", "acme-read").json()["data"]
    assert rows(shown, "incident") == [incident["id"]]
    assert field(shown, "incident", incident["id"], "observed") == incident["observed"] == "11"
    assert field(shown, "incident", incident["id"], "status") == "triggered"
    assert field(shown, "alert", alert["id"], "open") == "1"
    ack = f"/admin/alerts/{alert['id']}/incidents/{incident['id']}/acknowledge"
    done = act(api, ack, csrf_of(shown))
    assert done.status_code == 303 and done.headers["location"] == "/admin/alerts"
    api.settle()
    [seen] = api.call("GET", f"/v1/alerts/{alert['id']}/incidents").json()["data"]
    assert seen["status"] == "acknowledged"
    assert seen["acknowledgedBy"].startswith("api-key:")
    after = page(api, "/admin/alerts").text
    assert field(after, "incident", incident["id"], "status").startswith("acknowledged by")
    unknown = act(
        api, f"/admin/alerts/{alert['id']}/incidents/{alert['id']}/acknowledge", csrf_of(shown)
    )
    assert unknown.status_code == 404
    assert 'id="error"' in unknown.text


def test_another_tenant_s_adjustments_and_alerts_are_not_shown_or_decided(api: Api) -> None:
    adjustment = propose(api)
    alert = create(api)
    api.settle()
    sign_in(api, "globex-all")
    assert rows(page(api, "/admin/adjustments?status=all").text, "adjustment") == []
    assert rows(page(api, "/admin/alerts").text, "alert") == []
    csrf = token(api)
    answer = act(api, f"/admin/adjustments/{adjustment['id']}/approve", csrf, reason="x")
    assert answer.status_code == 404
    api.ingest(event(quantity=10**6))
    api.settle()
    [incident] = api.call("GET", f"/v1/alerts/{alert['id']}/incidents").json()["data"]
    ack = f"/admin/alerts/{alert['id']}/incidents/{incident['id']}/acknowledge"
    assert act(api, ack, csrf).status_code == 404
    api.settle()
    [still] = api.call("GET", f"/v1/alerts/{alert['id']}/incidents").json()["data"]
    assert still["status"] == "triggered"


def test_signed_out_action_pages_and_forms_send_to_the_sign_in_form(api: Api) -> None:
    adjustment = propose(api)
    for path in ("/admin/adjustments", "/admin/replay", "/admin/alerts"):
        answer = page(api, path)
        assert (answer.status_code, answer.headers["location"]) == (302, "/admin/login"), path
    answer = act(api, f"/admin/adjustments/{adjustment['id']}/approve", "x", reason="ok")
    assert answer.headers["location"] == "/admin/login"
    api.settle()
    assert [a["id"] for a in api_adjustments(api, "pending")] == [adjustment["id"]]


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("application/json", b'{"reason": "x"}'),
        ("multipart/form-data; boundary=zz", b"--zz\r\ngarbage"),
        ("application/x-www-form-urlencoded", b"\xff\xfe%%%=&&=="),
        ("application/x-www-form-urlencoded", b"reason=a%00b&csrf_token=%00"),
    ],
)
def test_hostile_action_bodies_are_a_4xx(api: Api, kind: str, body: bytes) -> None:
    adjustment = propose(api)
    sign_in(api)
    for path in (f"/admin/adjustments/{adjustment['id']}/approve", "/admin/replay/apply"):
        answer = api.client.post(
            path, content=body, headers={"content-type": kind}, follow_redirects=False
        )
        assert 400 <= answer.status_code < 500, (path, answer.status_code)
    api.settle()
    assert [a["id"] for a in api_adjustments(api, "pending")] == [adjustment["id"]]
