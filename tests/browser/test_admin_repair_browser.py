"""The invoice audit and a repair in Chromium, against the real service over HTTP (the
priced data of conftest.py): sign in, open the audit of a pushed customer, preview a
repair of the month, confirm it, and see the repaired line and its push. With
STRIPEMETER_SCREENSHOTS=1 it writes docs/images/admin-reconciliation.png.
"""

from __future__ import annotations

from typing import Any

from domain.pushing import PushService, Target
from domain.usage import usage_period_id
from tests.browser.conftest import Service
from tests.browser.test_admin_browser import WAIT_MS, screenshot


def push_cus_a(service: Service) -> str:
    """What the push worker does for cus_a's API calls now; the period's key."""
    svc = service.app.state.services
    app = svc.stores.app
    tenant = app.tenant_by_slug("acme").id
    period = app.period_for(tenant, "cus_a", service.clock.now).key
    PushService(app, svc.gateways, service.clock).push(
        usage_period_id(tenant, "cus_a", "api_calls", period), Target.LIVE
    )
    service.settle()
    return str(period)


def field(page: Any, selector: str, name: str) -> str:
    text: str = page.locator(f'{selector} [data-field="{name}"]').inner_text().strip()
    return text


def test_audit_then_preview_and_confirm_a_repair(
    browser: Any, service: Service, usage: None
) -> None:
    period = push_cus_a(service)
    # More usage after the push: the line is behind Stripe until the next push.
    late = {
        "metric": "api_calls",
        "customerRef": "cus_a",
        "quantity": 66,
        "ts": "2026-03-15T09:00:00Z",
    }
    assert service.call("POST", "/v1/events/ingest", json={"events": [late]}).status_code == 200
    service.settle()
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    try:
        page.goto(f"{service.url}/admin/login")
        page.get_by_label("API key").fill(service.admin)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{service.url}/admin", timeout=WAIT_MS)

        # The audit of cus_a's API calls: the counter, the push and what it covered.
        page.get_by_role("link", name="Audit").click()
        page.get_by_label("Customer").fill("cus_a")
        page.get_by_label("Metric").select_option("api_calls")
        page.get_by_label("Period").fill(period)
        page.get_by_role("button", name="Show").click()
        audit = service.call(
            "GET", f"/v1/audit/invoice?customerRef=cus_a&metric=api_calls&period={period}"
        ).json()
        assert page.locator("#counter-value").inner_text() == audit["counter"]["value"]
        [push] = audit["pushes"]
        row = f'[data-push="live:{push["number"]}"]'
        assert field(page, row, "value") == str(push["value"])
        assert field(page, row, "status") == "confirmed"
        assert page.locator(f"{row} tr[data-event]").count() == len(push["events"]) == 2
        assert len(audit["unpushedEvents"]) == 1

        # Reconciliation of March: preview a repair, then confirm it.
        page.get_by_role("link", name="Reconciliation").click()
        page.get_by_label("Month").fill("2026-03")
        page.get_by_role("button", name="Show", exact=True).click()
        page.get_by_role("button", name="Preview a repair of 2026-03").click()
        key = f'tr.repair[data-line="cus_a/api_calls/{period}/live"]'
        page.locator(key).wait_for(timeout=WAIT_MS)
        preview = service.call("GET", "/v1/reconciliation/2026-03").json()
        [line] = [x for x in preview["lines"] if x["customerRef"] == "cus_a"]
        assert field(page, key, "stripe") == str(line["stripe"]) == str(push["value"])
        assert field(page, key, "local") == str(line["local"])
        assert field(page, key, "difference") == str(line["difference"]) == "66"
        page.get_by_role("button", name="Repair these").click()
        page.locator("#repair-done").wait_for(timeout=WAIT_MS)
        repaired = f'#lines tr[data-line="cus_a/api_calls/{period}/live"]'
        assert field(page, repaired, "status") == "repaired"
        report = service.call("GET", "/v1/reconciliation/2026-03").json()
        assert page.locator("#run-id").inner_text() == report["runId"]
        screenshot(page, "admin-reconciliation.png")

        # The line's audit now shows the repair's push, and nothing left unpushed (once
        # the views have read it: no worker runs here).
        service.settle()
        page.locator(repaired).get_by_role("link", name="audit").click()
        page.locator("section.push").nth(1).wait_for(timeout=WAIT_MS)
        assert "repair by api-key:" in page.locator("section.push").nth(1).inner_text()
        assert page.locator("#no-unpushed").inner_text() == "None."
    finally:
        context.close()
