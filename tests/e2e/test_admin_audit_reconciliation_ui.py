"""The admin UI's invoice audit and reconciliation pages over HTTP (SQLite and PostgreSQL):
their numbers are the API's answers for the same data; a repair is previewed, then run,
only from an admin session and only with the session's CSRF token."""

from __future__ import annotations

import re

from stripe_emulator.testing import RunningEmulator
from tests.e2e.conftest import Api, event
from tests.e2e.test_admin_ui import by_id, csrf_of, page, sign_in
from tests.e2e.test_stripe_api import push_all, setup_stripe

AUDIT = "/admin/audit?customer=cus_1&metric=api_calls&period=2026-03"
AUDIT_API = "/v1/audit/invoice?customerRef=cus_1&metric=api_calls&period=2026-03"


def field(html: str, row: str, name: str, attribute: str = "data-line") -> str:
    """The ``data-field`` cell ``name`` in the row whose ``attribute`` is ``row``."""
    found = re.search(
        rf'{attribute}="{re.escape(row)}">.*?data-field="{name}">([^<]*)<', html, re.S
    )
    assert found is not None, f"no {name} in {row}"
    return found.group(1).strip()


def post(api: Api, path: str, token: str | None, month: str = "2026-03") -> tuple[int, str]:
    data = {"month": month} if token is None else {"month": month, "csrf_token": token}
    answer = api.client.post(path, data=data, follow_redirects=False)
    return answer.status_code, answer.text


def test_the_audit_page_shows_the_api_s_audit(webhook_api: Api, emulator: RunningEmulator) -> None:
    api = webhook_api
    setup_stripe(api, emulator)
    api.ingest(event(quantity=3, ts="2026-03-10T09:00:00Z"))
    api.ingest(event(quantity=4, ts="2026-03-10T10:00:00Z"))
    api.settle()
    push_all(api)
    api.ingest(event(quantity=5, ts="2026-03-10T11:00:00Z"))
    api.settle()
    sign_in(api, "acme-read")
    empty = page(api, "/admin/audit")
    assert empty.status_code == 200
    assert "Pick a customer and a metric" in by_id(empty.text, "no-audit")

    # The customer page links each metric's line to its audit.
    customer = page(api, "/admin/customers/cus_1").text
    assert 'href="/admin/audit?customer=cus_1&amp;metric=api_calls&amp;period=' in customer
    shown = page(api, AUDIT)
    assert shown.status_code == 200, shown.text
    audit = api.call(
        "GET", "/v1/audit/invoice?customerRef=cus_1&metric=api_calls&period=2026-03", "acme-read"
    ).json()
    assert by_id(shown.text, "audit-period") == audit["period"] == "2026-03"
    assert by_id(shown.text, "counter-value") == audit["counter"]["value"] == "12"
    [push] = audit["pushes"]
    row = f"{push['target']}:{push['number']}"
    assert field(shown.text, row, "value", "data-push") == str(push["value"]) == "7"
    assert field(shown.text, row, "status", "data-push") == push["status"] == "confirmed"
    assert field(shown.text, row, "identifier", "data-push") == push["identifier"]
    # The events each push covered, and the one no push covers yet, as the API lists them.
    section = shown.text.split(f'data-push="{row}"')[1].split("</section>")[0]
    assert re.findall(r'data-event="([^"]+)"', section) == [e["id"] for e in push["events"]]
    unpushed = shown.text.split("no confirmed push covers yet")[1]
    assert re.findall(r'data-event="([^"]+)"', unpushed) == [
        e["id"] for e in audit["unpushedEvents"]
    ]
    # A line nothing was pushed for says so, and what to do.
    other = page(api, "/admin/audit?customer=cus_2&metric=api_calls&period=2026-03")
    assert other.status_code == 200, other.text
    assert "send events" in by_id(other.text, "no-counter")
    assert "Nothing pushed" in by_id(other.text, "no-pushes")
    # Bad input is the API's 4xx, naming the field.
    bad = page(api, "/admin/audit?customer=cus_1&metric=api_calls&period=March")
    assert bad.status_code == 422
    assert "period" in bad.text
    assert page(api, "/admin/audit?customer=cus_1&metric=nope").status_code == 404


def test_preview_then_repair_equals_the_api_s_reports(
    webhook_api: Api, emulator: RunningEmulator
) -> None:
    api = webhook_api
    setup_stripe(api, emulator)
    api.ingest(event(quantity=4, ts="2026-03-10T09:00:00Z"))
    api.settle()
    sign_in(api)
    before = page(api, "/admin/reconciliation?month=2026-03")
    assert before.status_code == 200
    assert "No reconciliation has run for 2026-03" in by_id(before.text, "no-report")
    token = csrf_of(before.text)
    assert 'id="preview-form"' in before.text
    # Without the session's CSRF token, neither form does anything.
    for path in ("/admin/reconciliation/preview", "/admin/reconciliation/repair"):
        assert post(api, path, None)[0] == 403
        assert post(api, path, "forged")[0] == 403
    assert api.call("GET", "/v1/reconciliation/2026-03", "acme-read").status_code == 404

    status, preview = post(api, "/admin/reconciliation/preview", token)
    assert status == 200, preview
    report = api.call("GET", "/v1/reconciliation/2026-03", "acme-read").json()
    assert by_id(preview, "run-id") == report["runId"]
    [line] = report["lines"]
    assert (line["status"], line["local"], line["stripe"]) == ("pending", 4, 0)
    key = "cus_1/api_calls/2026-03/live"
    assert field(preview, key, "stripe") == str(line["stripe"])
    assert 'class="repair"' in preview
    repair_row = preview.split('class="repair"')[1]
    assert field(repair_row, key, "local", "data-line") == str(line["local"])
    assert field(repair_row, key, "difference") == str(line["difference"]) == "4"
    # The preview pushed nothing.
    audit = api.call("GET", "/v1/audit/invoice?customerRef=cus_1&metric=api_calls&period=2026-03")
    assert audit.json()["pushes"] == []

    status, done = post(api, "/admin/reconciliation/repair", token)
    assert status == 200, done
    assert 'id="repair-done"' in done
    repaired = api.call("GET", "/v1/reconciliation/2026-03", "acme-read").json()
    assert by_id(done, "run-id") == repaired["runId"]
    [after] = repaired["lines"]
    assert after["status"] == field(done, key, "status") == "repaired"
    assert field(done, key, "stripe") == str(after["stripe"])  # as read before the repair
    assert repaired["actor"].startswith("api-key:")
    api.settle()
    pushed = api.call(
        "GET", "/v1/audit/invoice?customerRef=cus_1&metric=api_calls&period=2026-03"
    ).json()["pushes"]
    assert [p["purpose"].startswith("repair by api-key:") for p in pushed] == [True]
    # The report page shows the same latest run.
    latest = page(api, "/admin/reconciliation?month=2026-03")
    assert by_id(latest.text, "run-id") == repaired["runId"]
    # A second preview finds nothing to repair, and says so.
    _, again = post(api, "/admin/reconciliation/preview", token)
    assert "Nothing to repair in 2026-03" in by_id(again, "nothing")
    assert (field(again, key, "status"), field(again, key, "stripe")) == ("ok", "4")


def test_a_read_only_session_sees_reports_but_cannot_repair(
    webhook_api: Api, emulator: RunningEmulator
) -> None:
    api = webhook_api
    setup_stripe(api, emulator)
    api.ingest(event(quantity=4, ts="2026-03-10T09:00:00Z"))
    api.settle()
    assert api.call("POST", "/v1/reconciliation/run", json={"period": "2026-03"}).status_code == 200
    sign_in(api, "acme-read")
    shown = page(api, "/admin/reconciliation?month=2026-03")
    assert shown.status_code == 200
    report = api.call("GET", "/v1/reconciliation/2026-03", "acme-read").json()
    key = "cus_1/api_calls/2026-03/live"
    [line] = report["lines"]
    assert field(shown.text, key, "status") == line["status"]
    assert field(shown.text, key, "cause") == line["cause"]
    assert field(shown.text, key, "local") == str(line["local"])
    assert 'id="preview-form"' not in shown.text
    token = csrf_of(shown.text)
    for path in ("/admin/reconciliation/preview", "/admin/reconciliation/repair"):
        status, body = post(api, path, token)
        assert status == 403
        assert "read-only" in body
    # Nothing ran: the latest report is still the one above.
    assert api.call("GET", "/v1/reconciliation/2026-03", "acme-read").json() == report
    assert page(api, "/admin/reconciliation?month=March").status_code == 422


def test_signed_out_the_pages_redirect_and_the_forms_refuse(api: Api) -> None:
    for path in ("/admin/audit", "/admin/reconciliation"):
        answer = page(api, path)
        assert answer.status_code in (302, 303, 307)
        assert answer.headers["location"] == "/admin/login"
    for path in ("/admin/reconciliation/preview", "/admin/reconciliation/repair"):
        answer = api.client.post(path, data={"month": "2026-03"}, follow_redirects=False)
        assert answer.status_code in (302, 303, 307)
        assert answer.headers["location"] == "/admin/login"
    assert api.call("GET", "/v1/reconciliation/2026-03", "acme-read").status_code == 404


def test_the_audit_pages_a_push_s_events_as_the_api_does(
    webhook_api: Api, emulator: RunningEmulator
) -> None:
    api = webhook_api
    setup_stripe(api, emulator)
    events = [
        event(quantity=1, ts=f"2026-03-10T09:{i // 60:02d}:{i % 60:02d}Z") for i in range(103)
    ]
    answer = api.call("POST", "/v1/events/ingest", json={"events": events})
    assert answer.status_code == 200, answer.text
    api.settle()
    push_all(api)
    sign_in(api, "acme-read")
    first = page(api, AUDIT).text
    listed = re.findall(r'data-event="([^"]+)"', first)
    assert len(listed) == 100
    found = re.search(r'class="more" href="([^"]+)"', first)
    assert found is not None
    rest = page(api, found.group(1).replace("&amp;", "&"))
    assert rest.status_code == 200, rest.text
    api_rest = api.call(
        "GET",
        "/v1/audit/invoice?customerRef=cus_1&metric=api_calls&period=2026-03&push=live:1"
        f"&cursor={api.call('GET', AUDIT_API).json()['pushes'][0]['eventsNextCursor']}",
    ).json()
    shown = re.findall(r'data-event="([^"]+)"', rest.text)
    assert shown == [e["id"] for e in api_rest["pushes"][0]["events"]]
    assert len(shown) == 3
    assert not set(shown) & set(listed)
