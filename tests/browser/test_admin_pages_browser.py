"""Every page of the admin UI in Chromium, reached as an operator does: through the
header's links. Each answers 200 with its heading and no error; an ``admin`` session
gets the action forms and a ``read`` session none of them; the widget origins are
edited through the page and read back through the API."""

from __future__ import annotations

from typing import Any

from domain.tenancy import Scope
from tests.browser.conftest import Service

WAIT_MS = 10_000
# The header's links and the heading each page opens with.
PAGES = {
    "Overview": "Overview",
    "Metrics": "Metrics",
    "Customers": "Customers",
    "Audit": "Invoice-line audit",
    "Reconciliation": "Reconciliation",
    "Adjustments": "Adjustments",
    "Replay": "Replay",
    "Alerts": "Alerts",
    "Widget": "Customer widget",
}
ACTION_FORMS = "#origins-form, #preview-form, form.decide, #apply-form"


def signed_in_page(browser: Any, service: Service, key: str) -> tuple[Any, Any]:
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    page = context.new_page()
    page.goto(f"{service.url}/admin/login")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{service.url}/admin", timeout=WAIT_MS)
    return context, page


def browse_every_page(page: Any, service: Service) -> dict[str, int]:
    """Follow each header link; the number of action forms each page offered."""
    forms = {}
    for link, heading in PAGES.items():
        with page.expect_navigation(timeout=WAIT_MS) as navigation:
            page.locator("header").get_by_role("link", name=link, exact=True).click()
        assert navigation.value.status == 200, link
        assert page.locator("h1").first.inner_text().startswith(heading), link
        assert page.locator("#error").count() == 0, link
        forms[link] = page.locator(ACTION_FORMS).count()
    return forms


def test_each_page_through_the_header_as_admin_then_read_only(
    browser: Any, service: Service, usage: None
) -> None:
    context, page = signed_in_page(browser, service, service.admin)
    try:
        admin_forms = browse_every_page(page, service)
        assert admin_forms["Widget"] == 1 and admin_forms["Reconciliation"] == 1
        # The widget's origins, edited in the page, are what the API answers.
        page.get_by_label("Origins, one per line").fill("https://app.example.com\n")
        page.get_by_role("button", name="Save origins").click()
        page.wait_for_url(f"{service.url}/admin/widget", timeout=WAIT_MS)
        answer = service.call("GET", "/v1/widget/origins").json()
        assert answer["origins"] == ["https://app.example.com"]
        assert page.locator("#origins li").all_inner_texts() == answer["origins"]
    finally:
        context.close()
    app = service.app.state.services.stores.app
    reader = app.issue_api_key(app.tenant_by_slug("acme").id, frozenset({Scope.READ})).secret
    context, page = signed_in_page(browser, service, reader)
    try:
        assert page.locator("#who").inner_text() == "read-only session"
        read_forms = browse_every_page(page, service)
        assert read_forms == dict.fromkeys(PAGES, 0)
    finally:
        context.close()
