"""The admin UI in Chromium, against the real service over HTTP (the same service and
priced data as the widget's tests, see conftest.py): sign in through the form, read
the overview and a customer page, check the numbers shown are the API's, sign out.
With STRIPEMETER_SCREENSHOTS=1 it also writes docs/images/admin-overview.png
(test_admin_charts_browser.py writes admin-customer.png, with its charts drawn).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tests.browser.conftest import Service

IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
WAIT_MS = 10_000


def screenshot(page: Any, name: str) -> None:
    if os.environ.get("STRIPEMETER_SCREENSHOTS") == "1":
        IMAGES.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(IMAGES / name), full_page=True)


def cell(page: Any, table: str, metric: str, field: str) -> str:
    text: str = (
        page.locator(f'#{table} tr[data-metric="{metric}"] [data-field="{field}"]')
        .inner_text()
        .strip()
    )
    return text


def test_sign_in_browse_and_sign_out(browser: Any, service: Service, usage: None) -> None:
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    page = context.new_page()
    try:
        page.goto(f"{service.url}/admin/")
        page.wait_for_url(f"{service.url}/admin/login", timeout=WAIT_MS)
        # A key without the scope is refused, with the reason on the page.
        page.get_by_label("API key").fill(service.minter)
        page.get_by_role("button", name="Sign in").click()
        assert "widget:mint" in page.get_by_role("alert").inner_text()
        page.get_by_label("API key").fill(service.admin)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{service.url}/admin", timeout=WAIT_MS)
        [cookie] = [c for c in context.cookies() if c["name"] == "sm_admin"]
        assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (
            True,
            "Strict",
            "/admin",
        )
        assert page.evaluate("document.cookie") == ""  # HttpOnly: no script reads it

        # The overview: readiness and the metrics samples, as /metrics has them.
        ready = service.call("GET", "/health/ready").json()
        assert page.locator("#readiness strong").inner_text() == (
            "ready" if ready["status"] == "ready" else "not ready"
        )
        accepted = page.locator(
            '[data-family="stripemeter_ingest_events"] tr', has_text="outcome=accepted"
        ).locator("td.num")
        assert float(accepted.inner_text()) >= 4  # the fixture's four events, at least
        screenshot(page, "admin-overview.png")

        # Customers, searched by prefix, then cus_a's page.
        page.get_by_role("link", name="Customers").click()
        page.get_by_label("customerRef starts with").fill("cus_")
        page.get_by_role("button", name="Search").click()
        page.get_by_role("link", name="cus_a").click()
        page.wait_for_url(f"{service.url}/admin/customers/cus_a", timeout=WAIT_MS)
        current = service.call("GET", "/v1/usage/current?customerRef=cus_a").json()
        projection = service.call("GET", "/v1/usage/projection?customerRef=cus_a").json()
        assert page.locator("#period").inner_text() == current["period"]
        assert {c["metric"]: c["value"] for c in current["counters"]} == {
            metric: cell(page, "usage", metric, "value") for metric in ("api_calls", "storage_gb")
        }
        [line] = projection["lines"]
        assert cell(page, "cost", "api_calls", "amountSoFar") == (
            f"{line['amountSoFar']['decimal']} USD"
        )
        assert cell(page, "cost", "api_calls", "forecast") == (
            f"{line['forecast']['amount']['decimal']} USD"
        )
        assert cell(page, "cost", "storage_gb", "amountSoFar").startswith("no price")
        assert page.locator("#total").inner_text() == f"{projection['total']['decimal']} USD"
        assert "987654" not in page.content()  # never cus_b's numbers

        # Sign out: the session is gone, the pages send back to the form.
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url(f"{service.url}/admin/login", timeout=WAIT_MS)
        page.goto(f"{service.url}/admin/customers/cus_a")
        page.wait_for_url(f"{service.url}/admin/login", timeout=WAIT_MS)
    finally:
        context.close()
