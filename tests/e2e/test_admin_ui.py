"""The admin UI over HTTP (SQLite and PostgreSQL): sign-in with the API's own key check,
the session cookie, CSRF on every POST form, sign-out, and pages whose numbers are
the API's answers for the same data, for the signed-in tenant only."""

from __future__ import annotations

import re
from typing import Any

import pytest

from api.admin import routes as admin_routes
from api.admin.sessions import LOGIN_COOKIE, SESSION_COOKIE
from domain.tenancy import Scope, tenant_id_for
from stripe_emulator.testing import RunningEmulator
from tests.e2e.conftest import Api, event
from tests.e2e.test_anchor_webhook_api import move_to, work
from tests.e2e.test_projection_api import NOW, priced_customer, projection, use


def login_token(api: Api) -> str:
    form = api.client.get("/admin/login")
    assert form.status_code == 200
    found = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert found is not None
    return found.group(1)


def sign_in(api: Api, key: str = "acme-all") -> Any:
    token = login_token(api)
    secret = api.keys.get(key, key)
    return api.client.post(
        "/admin/login", data={"api_key": secret, "csrf_token": token}, follow_redirects=False
    )


def page(api: Api, path: str) -> Any:
    return api.client.get(path, follow_redirects=False)


def cell(html: str, metric: str, field: str) -> str:
    """The text of the ``data-field`` cell in the row of ``metric``."""
    found = re.search(
        rf'data-metric="{re.escape(metric)}">.*?data-field="{field}">([^<]*)<', html, re.S
    )
    assert found is not None, f"no {field} for {metric}"
    return found.group(1).strip()


def by_id(html: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}">([^<]*)<', html)
    assert found is not None, f"no #{element_id}"
    return found.group(1).strip()


def csrf_of(html: str) -> str:
    found = re.search(
        r'action="/admin/logout">\s*<input type="hidden" name="csrf_token" '
        r'value="([^"]+)"',
        html,
    )
    assert found is not None
    return found.group(1)


def test_signed_out_pages_redirect_to_the_sign_in_form(api: Api) -> None:
    for path in ("/admin/", "/admin/metrics", "/admin/customers", "/admin/customers/cus_1"):
        answer = page(api, path)
        assert answer.status_code in (302, 303, 307), path
        assert answer.headers["location"] == "/admin/login"
    form = page(api, "/admin/login")
    assert form.status_code == 200
    assert 'name="api_key"' in form.text


def test_an_admin_or_read_key_signs_in_and_the_cookie_is_locked_down(api: Api) -> None:
    answer = sign_in(api)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/admin"
    cookie = next(
        c for c in answer.headers.get_list("set-cookie") if c.startswith(f"{SESSION_COOKIE}=")
    )
    attributes = {a.strip().lower() for a in cookie.split(";")}
    assert "httponly" in attributes
    assert "samesite=strict" in attributes
    assert "path=/admin" in attributes
    assert "secure" not in attributes  # plain HTTP here; HTTPS is tested below
    # The cookie names a session; the key itself is nowhere in it.
    assert api.keys["acme-all"] not in cookie
    overview = page(api, "/admin/")
    assert overview.status_code == 200
    assert "admin session" in overview.text
    api.client.cookies.clear()
    assert sign_in(api, "acme-read").status_code == 303
    read_only = page(api, "/admin/")
    assert read_only.status_code == 200
    assert "read-only session" in read_only.text


def test_the_cookie_is_secure_over_https(api: Api) -> None:
    api.client.base_url = api.client.base_url.copy_with(scheme="https")
    answer = sign_in(api)
    assert answer.status_code == 303
    cookie = next(
        c for c in answer.headers.get_list("set-cookie") if c.startswith(f"{SESSION_COOKIE}=")
    )
    assert "secure" in {a.strip().lower() for a in cookie.split(";")}


@pytest.mark.parametrize(
    ("key", "status", "says"),
    [
        ("sk_not_a_key", 401, "not valid"),
        ("acme-ingest", 403, "the admin UI needs a key with"),
        ("acme-mint", 403, "widget:mint"),
        ("", 422, "api_key"),
    ],
)
def test_a_bad_or_wrong_scope_key_is_refused_with_a_reason(
    api: Api, key: str, status: int, says: str
) -> None:
    app = api.client.app.state.services.stores.app
    api.keys["acme-mint"] = app.issue_api_key(
        tenant_id_for("acme"), frozenset({Scope.WIDGET_MINT})
    ).secret
    answer = sign_in(api, key)
    assert answer.status_code == status
    assert says in answer.text
    assert SESSION_COOKIE not in answer.cookies
    assert page(api, "/admin/").status_code != 200


def test_post_forms_refuse_a_missing_or_wrong_csrf_token(api: Api) -> None:
    login_token(api)  # the form's cookie is set, its token not sent
    for sent in ({}, {"csrf_token": "forged"}):
        answer = api.client.post(
            "/admin/login", data={"api_key": api.keys["acme-all"], **sent}, follow_redirects=False
        )
        assert answer.status_code == 403
        assert "form expired" in answer.text
    assert sign_in(api).status_code == 303
    for sent in ({}, {"csrf_token": "forged"}):
        answer = api.client.post("/admin/logout", data=sent, follow_redirects=False)
        assert answer.status_code == 403
        assert page(api, "/admin/").status_code == 200  # still signed in


def test_sign_out_ends_the_session(api: Api) -> None:
    sign_in(api)
    overview = page(api, "/admin/")
    session_id = api.client.cookies[SESSION_COOKIE]
    answer = api.client.post(
        "/admin/logout", data={"csrf_token": csrf_of(overview.text)}, follow_redirects=False
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/admin/login"
    assert page(api, "/admin/").headers["location"] == "/admin/login"
    # The old cookie, sent again, opens nothing: the session is gone on the server.
    api.client.cookies.set(SESSION_COOKIE, session_id, path="/admin")
    assert page(api, "/admin/").status_code in (302, 303, 307)
    assert LOGIN_COOKIE  # the login form's cookie is a different one


def test_the_overview_shows_readiness_and_the_metrics_samples(api: Api) -> None:
    api.ingest(event(quantity=3), event(customerRef="cus_2", ts="2026-02-01T00:00:00Z"))
    api.settle()
    sign_in(api)
    overview = page(api, "/admin/")
    assert overview.status_code == 200
    ready = api.client.get("/health/ready").json()
    assert by_id(overview.text, "readiness").startswith("Readiness:")
    assert ("not ready" in overview.text) == (ready["status"] != "ready")
    for name in ready["checks"]:
        assert f"<td>{name}</td>" in overview.text
    scraped = api.client.get("/metrics").text
    accepted = re.search(r'stripemeter_ingest_events_total\{outcome="accepted"\} (\S+)', scraped)
    assert accepted is not None
    shown = re.search(
        r'data-family="stripemeter_ingest_events">.*?outcome=accepted</td><td class="num">([^<]+)<',
        overview.text,
        re.S,
    )
    assert shown is not None
    assert float(shown.group(1)) == float(accepted.group(1))
    assert 'data-family="stripemeter_late_events"' in overview.text


def test_the_metrics_page_lists_metrics_and_mappings(api: Api) -> None:
    sign_in(api, "acme-read")
    shown = page(api, "/admin/metrics")
    assert shown.status_code == 200
    assert 'data-metric="api_calls"' in shown.text
    assert "not mapped" in cell(shown.text, "api_calls", "stripeMeterId")


def test_empty_states_say_what_to_do_next(api: Api) -> None:
    app = api.client.app.state.services.stores.app
    tenant = app.register_tenant("initech", "Initech").id
    api.keys["initech"] = app.issue_api_key(tenant, frozenset({Scope.READ})).secret
    sign_in(api, "initech")
    assert "No metrics yet: <code>stripemeter meters create" in page(api, "/admin/metrics").text
    assert "No customer yet" in page(api, "/admin/customers").text
    customer = page(api, "/admin/customers/cus_9")
    assert customer.status_code == 200
    assert "No usage in this period yet" in customer.text
    assert "No cost:" in by_id(customer.text, "cost-error")


def test_bad_input_is_an_error_page_naming_the_field(api: Api) -> None:
    sign_in(api)
    answer = page(api, "/admin/customers/" + "x" * 300)
    assert answer.status_code == 422
    assert "customerRef" in by_id(answer.text, "error")
    search = page(api, "/admin/customers?q=" + "y" * 300)
    assert search.status_code == 422
    assert "q:" in by_id(search.text, "error")


def test_the_customer_page_shows_the_api_s_numbers(
    webhook_api: Api, emulator: RunningEmulator
) -> None:
    api = webhook_api
    priced_customer(api, emulator, "usd", {"unit_amount_decimal": "0.125"})
    move_to(api, emulator, NOW)
    use(api, 1004)
    work(api)
    sign_in(api, "acme-read")
    shown = page(api, "/admin/customers/cus_1")
    assert shown.status_code == 200, shown.text
    current = api.call("GET", "/v1/usage/current?customerRef=cus_1", "acme-read").json()
    cost = projection(api).json()
    assert by_id(shown.text, "period") == current["period"]
    assert by_id(shown.text, "period-start") == current["periodStart"]
    assert by_id(shown.text, "period-end") == current["periodEnd"]
    assert cell(shown.text, "api_calls", "value") == current["counters"][0]["value"]
    line = cost["lines"][0]
    assert cell(shown.text, "api_calls", "amountSoFar") == f"{line['amountSoFar']['decimal']} USD"
    assert (
        cell(shown.text, "api_calls", "forecast") == f"{line['forecast']['amount']['decimal']} USD"
    )
    assert by_id(shown.text, "total") == f"{cost['total']['decimal']} USD"
    customers = page(api, "/admin/customers?q=cus_")
    assert 'data-customer="cus_1"' in customers.text
    assert "No customer" in page(api, "/admin/customers?q=zz").text
    # A prefix means its characters: % and _ are no wildcards.
    assert 'data-customer="cus_1"' not in page(api, "/admin/customers?q=cus%25").text
    assert 'data-customer="cus_1"' not in page(api, "/admin/customers?q=c_s").text
    metrics = page(api, "/admin/metrics")
    mapping = api.call("GET", "/v1/mappings", "acme-read").json()["data"][0]
    assert cell(metrics.text, "api_calls", "stripeMeterId") == mapping["stripeMeterId"]


def test_an_unpriced_metric_says_no_price(api: Api) -> None:
    api.ingest(event(quantity=5))
    api.settle()
    sign_in(api)
    shown = page(api, "/admin/customers/cus_1")
    assert shown.status_code == 200
    assert cell(shown.text, "api_calls", "value") == "5"
    # No Stripe here: the cost is an error said as one, never a number.
    assert "cost-error" in shown.text
    assert 'data-field="amountSoFar"' not in shown.text


def test_a_tenant_never_sees_another_tenant_s_customers(
    webhook_api: Api, emulator: RunningEmulator
) -> None:
    api = webhook_api
    priced_customer(api, emulator, "usd", {"unit_amount_decimal": "0.125"})
    move_to(api, emulator, NOW)
    api.ingest(event(quantity=42))
    api.settle()
    sign_in(api, "globex-all")
    assert 'data-customer="cus_1"' not in page(api, "/admin/customers").text
    assert 'data-customer="cus_1"' not in page(api, "/admin/customers?q=cus").text
    theirs = page(api, "/admin/customers/cus_1")
    assert "42" not in theirs.text
    assert "No usage in this period yet" in theirs.text
    assert 'stripe-customer">' not in theirs.text.replace('id="stripe-customer">', "")


def test_admin_is_not_in_the_openapi_document(api: Api) -> None:
    document = api.client.get("/schema/openapi.json").json()
    assert not [p for p in document["paths"] if p.startswith("/admin")]


def test_revoking_the_key_ends_its_sessions(api: Api) -> None:
    sign_in(api, "acme-read")
    assert page(api, "/admin/").status_code == 200
    app = api.client.app.state.services.stores.app
    principal = app.authenticate(api.keys["acme-read"])
    app.revoke_api_key(principal.tenant_id, principal.key_id, "leaked")
    # At once, not after the API's few-second key cache: the session reads the key itself.
    assert page(api, "/admin/metrics").headers["location"] == "/admin/login"


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("application/json", b'{"api_key": "x"}'),
        ("multipart/form-data; boundary=zz", b"--zz\r\ngarbage"),
        ("application/x-www-form-urlencoded", b"\xff\xfe%%%=&&=="),
        ("application/x-www-form-urlencoded", b"api_key=a%00b&csrf_token=%00"),
    ],
)
def test_hostile_form_bodies_are_a_4xx(api: Api, kind: str, body: bytes) -> None:
    login_token(api)
    assert 400 <= post_raw(api, "/admin/login", kind, body) < 500
    sign_in(api)
    assert 400 <= post_raw(api, "/admin/logout", kind, body) < 500
    assert page(api, "/admin/").status_code == 200  # the session survived
    for path in ("/admin/customers/%00", "/admin/customers?q=%00", "/admin/customers?after="):
        assert page(api, path).status_code == 422, path


def post_raw(api: Api, path: str, kind: str, body: bytes) -> int:
    answer = api.client.post(
        path, content=body, headers={"content-type": kind}, follow_redirects=False
    )
    status: int = answer.status_code
    return status


def test_customers_with_usage_are_listed_searched_and_paged(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admin_routes, "CUSTOMERS_PAGE", 2)
    refs = ["acme_1", "acme_2", "acme_3", "beta_1", "c%t_1"]
    api.ingest(*(event(customerRef=ref, idempotencyKey=ref) for ref in refs))
    api.ingest(event(customerRef="acme_9"), key="globex-all")  # another tenant's
    api.settle()
    sign_in(api, "acme-read")

    def listed(path: str) -> list[str]:
        return re.findall(r'data-customer="([^"]+)"', page(api, path).text)

    assert listed("/admin/customers") == ["acme_1", "acme_2"]
    first = page(api, "/admin/customers?q=acme_")
    assert re.findall(r'data-customer="([^"]+)"', first.text) == ["acme_1", "acme_2"]
    assert "after=acme_2" in first.text
    assert listed("/admin/customers?q=acme_&after=acme_2") == ["acme_3"]
    assert listed("/admin/customers?q=c%25") == ["c%t_1"]
    assert listed("/admin/customers?q=b") == ["beta_1"]
    assert "not mapped" in page(api, "/admin/customers?q=beta").text
