"""Approving an adjustment through the admin UI in Chromium, against the real service
(conftest.py): a pending adjustment is approved with its form, and the API then answers
it as applied, by the session's key. With STRIPEMETER_SCREENSHOTS=1 it writes
docs/images/admin-adjustments.png.
"""

from __future__ import annotations

from typing import Any

from tests.browser.conftest import Service
from tests.browser.test_admin_browser import WAIT_MS, screenshot


def test_approve_a_pending_adjustment_through_the_page(
    browser: Any, service: Service, usage: None
) -> None:
    proposed = service.call(
        "POST",
        "/v1/adjustments",
        json={"customerRef": "cus_a", "metric": "api_calls", "quantity": "-34.5", "reason": "SLA"},
    )
    assert proposed.status_code == 201, proposed.text
    adjustment = proposed.json()["id"]
    before = service.call("GET", "/v1/usage/current?customerRef=cus_a").json()
    service.settle()
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    page = context.new_page()
    try:
        page.goto(f"{service.url}/admin/login")
        page.get_by_label("API key").fill(service.admin)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{service.url}/admin", timeout=WAIT_MS)
        page.get_by_role("link", name="Adjustments").click()
        page.wait_for_url(f"{service.url}/admin/adjustments", timeout=WAIT_MS)
        row = page.locator(f'tr[data-adjustment="{adjustment}"]')
        assert row.locator('[data-field="status"]').inner_text() == "pending"
        assert row.locator('[data-field="quantity"]').inner_text() == "-34.5"
        row.get_by_label("reason").fill("credit agreed by finance")
        screenshot(page, "admin-adjustments.png")
        row.get_by_role("button", name="Approve").click()
        page.wait_for_url(f"{service.url}/admin/adjustments?status=applied", timeout=WAIT_MS)
        service.settle()  # the list is the adjustments view's, as the API's
        [applied] = service.call("GET", "/v1/adjustments?status=applied").json()["data"]
        assert (applied["id"], applied["decisionReason"]) == (
            adjustment,
            "credit agreed by finance",
        )
        assert applied["decidedBy"].startswith("api-key:")
        after = service.call("GET", "/v1/usage/current?customerRef=cus_a").json()
        value = {c["metric"]: c["value"] for c in after["counters"]}["api_calls"]
        was = {c["metric"]: c["value"] for c in before["counters"]}["api_calls"]
        assert (was, value) == ("1234.5", "1200")
        page.reload()
        row = page.locator(f'tr[data-adjustment="{adjustment}"]')
        assert row.locator('[data-field="status"]').inner_text() == "applied"
        assert row.get_by_role("button", name="Revert").is_visible()
    finally:
        context.close()
