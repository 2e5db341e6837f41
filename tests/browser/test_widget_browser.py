"""<stripemeter-usage> in Chromium, against the real service over HTTP.

One service per module (uvicorn in a thread, SQLite, a clock the test moves) and
a test page served from another origin. The widget must show the numbers the
API gives for its token's customer and nothing else, and an error state (never a
number) when the token expired, the page's origin is not configured, the
service fails or answers nonsense. With STRIPEMETER_SCREENSHOTS=1 it also writes
docs/images/widget.png.
"""

from __future__ import annotations

import html
import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.browser.conftest import Service, free_port

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "images" / "widget.png"
WAIT_MS = 10_000


class PageHandler(BaseHTTPRequestHandler):
    """The tenant's app: a page embedding the widget, and a fake 'service' that fails."""

    service_url = ""

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/page":
            token = html.escape(query.get("token", ""))
            api = html.escape(query.get("api", self.service_url))
            body = (
                "<!doctype html><html lang=en><head><meta charset=utf-8><title>Billing</title>"
                f'<script src="{html.escape(self.service_url)}/widget/stripemeter-usage.js">'
                "</script></head><body style='margin:16px;width:560px'>"
                f'<stripemeter-usage token="{token}" api-url="{api}"></stripemeter-usage>'
                "</body></html>"
            ).encode()
            self._send(200, "text/html", body)
        elif url.path == "/broken/v1/widget/usage":
            self._send(503, "application/problem+json", b'{"detail": "down for a test"}')
        elif url.path == "/nonsense/v1/widget/usage":
            shape = {"customerRef": "cus_a", "metrics": [{"metric": "api_calls", "value": 9}]}
            self._send(200, "application/json", json.dumps(shape).encode())
        else:
            self._send(404, "text/plain", b"not here")

    def do_OPTIONS(self) -> None:
        self._send(204, "text/plain", b"")

    def _send(self, status: int, kind: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Allow-Headers", "authorization, accept")
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def pages(service: Service) -> Iterator[str]:
    """The test page's server; its port, reached as 127.0.0.1 (configured) or localhost."""
    handler = type("Handler", (PageHandler,), {"service_url": service.url})
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        assert (
            service.call(
                "PUT", "/v1/widget/origins", json={"origins": [f"http://127.0.0.1:{port}"]}
            ).status_code
            == 200
        )
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def open_widget(browser: Any, origin: str, token: str, api: str | None = None) -> Any:
    page = browser.new_page()
    query = {"token": token} | ({"api": api} if api else {})
    page.goto(str(httpx.URL(f"{origin}/page", params=query)))
    page.locator("stripemeter-usage [data-state]").wait_for(timeout=WAIT_MS)
    return page


def shown(page: Any) -> dict[str, dict[str, str]]:
    """The widget's rows as the reader sees them, by metric."""
    rows = page.locator("stripemeter-usage tbody tr")
    result = {}
    for i in range(rows.count()):
        row = rows.nth(i)
        cells = {
            field: row.locator(f'[data-field="{field}"]').inner_text().strip()
            for field in ("value", "cost", "forecast")
        }
        result[row.get_attribute("data-metric") or ""] = cells
    return result


def assert_error_state(page: Any, says: str) -> None:
    widget = page.locator("stripemeter-usage")
    alert = widget.get_by_role("alert")
    assert alert.is_visible()
    assert says in alert.inner_text()
    assert widget.locator("table").count() == 0  # no number survives an error
    assert widget.get_by_role("button", name="Try again").is_visible()


def test_the_widget_shows_its_customers_numbers_as_the_api_gives_them(
    browser: Any, service: Service, pages: str, usage: None
) -> None:
    token = service.mint("cus_a")
    page = open_widget(browser, pages, token)
    try:
        api = service.call("GET", "/v1/widget/usage", token).json()
        current = service.call("GET", "/v1/usage/current?customerRef=cus_a").json()
        rows = shown(page)
        widget = page.locator("stripemeter-usage")
        # The same numbers as the widget's answer and as /v1/usage/current, metric by metric.
        units = {m["metric"]: m["unit"] for m in api["metrics"]}
        assert {m: r["value"] for m, r in rows.items()} == {
            c["metric"]: f"{c['value']} {units[c['metric']]}" for c in current["counters"]
        }
        assert rows["api_calls"]["value"] == "1234.5 calls"
        assert rows["storage_gb"]["value"] == "7.25 GB"
        # The projection's amounts for the priced metric; words, never a zero, for the other.
        projection = service.call("GET", "/v1/usage/projection?customerRef=cus_a").json()
        [line] = projection["lines"]
        assert rows["api_calls"]["cost"] == f"{line['amountSoFar']['decimal']} USD"
        assert rows["api_calls"]["forecast"] == f"{line['forecast']['amount']['decimal']} USD"
        assert line["amountSoFar"]["amount"] == 154  # 1234 whole calls at 0.125 cent, rounded
        assert (rows["storage_gb"]["cost"], rows["storage_gb"]["forecast"]) == (
            "no price",
            "no price",
        )
        total = widget.locator('[data-field="total-cost"]').inner_text()
        assert total == f"{projection['total']['decimal']} USD"
        widget = page.locator("stripemeter-usage")
        assert "987654" not in widget.inner_text()  # never customer B's numbers
        times = widget.locator("time")
        assert times.nth(0).get_attribute("datetime") == api["periodStart"]
        assert widget.locator('[data-field="as-of"]').get_attribute("datetime") == api["asOf"]
        end = widget.locator('[data-field="period-end"]')
        assert end.get_attribute("datetime") == api["periodEnd"]
        assert "in 26 days" in widget.locator("[part=period]").inner_text()  # from asOf
        # Accessible: a labelled region with a table of headed columns and rows.
        region = widget.get_by_role("region", name="Your usage")
        assert region.is_visible()
        headers = region.get_by_role("columnheader").all_inner_texts()
        assert headers == ["Metric", "Usage", "Cost so far", "Forecast"]
        assert region.get_by_role("rowheader").all_inner_texts() == [
            "api_calls",
            "storage_gb",
            "Total of priced metrics",
        ]
        if os.environ.get("STRIPEMETER_SCREENSHOTS") == "1":
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            widget.screenshot(path=str(SCREENSHOT))
    finally:
        page.close()


def test_a_token_for_one_customer_never_shows_another(
    browser: Any, service: Service, pages: str, usage: None
) -> None:
    token = service.mint("cus_a")
    # A page that bends the address to ask for cus_b with cus_a's token: refused.
    bent = f"{service.url}/v1/widget/usage?customerRef=cus_b#"
    page = open_widget(browser, pages, token, api=bent)
    try:
        assert_error_state(page, "Error")
        assert "987654" not in page.locator("stripemeter-usage").inner_text()
    finally:
        page.close()
    # cus_b's own token shows cus_b's numbers, and those only.
    page = open_widget(browser, pages, service.mint("cus_b"))
    try:
        assert shown(page) == {
            "api_calls": {"value": "987654 calls", "cost": "no price", "forecast": "no price"}
        }
    finally:
        page.close()


def test_an_origin_the_tenant_did_not_configure_reads_nothing(
    browser: Any, service: Service, pages: str, usage: None
) -> None:
    elsewhere = pages.replace("127.0.0.1", "localhost")  # same page, another origin
    page = open_widget(browser, elsewhere, service.mint("cus_a"))
    try:
        assert_error_state(page, "could not be reached")
    finally:
        page.close()


def test_an_expired_token_shows_the_error_state_and_a_new_one_recovers(
    browser: Any, service: Service, pages: str, usage: None
) -> None:
    page = open_widget(browser, pages, service.mint("cus_a", lifetime=60))
    try:
        assert shown(page)["api_calls"]["value"] == "1234.5 calls"
        service.clock.advance(seconds=61)
        page.locator("stripemeter-usage").evaluate("element => element.refresh()")
        page.get_by_role("alert").wait_for(timeout=WAIT_MS)
        assert_error_state(page, "expired")
        # The host page hands it a fresh token through the property.
        fresh = service.mint("cus_a")
        page.locator("stripemeter-usage").evaluate(f"element => {{ element.token = {fresh!r}; }}")
        page.locator("stripemeter-usage tbody tr").first.wait_for(timeout=WAIT_MS)
        assert shown(page)["api_calls"]["value"] == "1234.5 calls"
    finally:
        page.close()


def test_a_failing_or_nonsense_service_shows_the_error_state(
    browser: Any, service: Service, pages: str
) -> None:
    token = service.mint("cus_a")
    page = open_widget(browser, pages, token, api=f"{pages}/broken")
    try:
        assert_error_state(page, "HTTP 503: down for a test")
        # The retry button is reached with the keyboard and works from it.
        page.keyboard.press("Tab")
        focused = page.locator("stripemeter-usage button:focus")
        assert focused.count() == 1
        page.keyboard.press("Enter")
        page.get_by_role("alert").wait_for(timeout=WAIT_MS)
        assert_error_state(page, "HTTP 503")
    finally:
        page.close()
    page = open_widget(browser, pages, token, api=f"{pages}/nonsense")
    try:
        assert_error_state(page, "does not understand")
        assert "9" not in page.locator("stripemeter-usage").inner_text().replace("503", "")
    finally:
        page.close()
