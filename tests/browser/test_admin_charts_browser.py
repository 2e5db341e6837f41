"""The customer page's usage charts in Chromium, against the real service over HTTP (the
priced data of conftest.py): the vendored uPlot draws a canvas per metric, with bars
where the API has buckets; the switch moves between daily and hourly; the table under
each chart holds the API's numbers. With STRIPEMETER_SCREENSHOTS=1 it also writes
docs/images/admin-customer.png.
"""

from __future__ import annotations

from typing import Any

from tests.browser.conftest import Service
from tests.browser.test_admin_browser import WAIT_MS, screenshot

# Pixels of the bars' fill (rgb 47, 95, 179 at 35 % over a transparent canvas): how many
# the chart of ``metric`` has. Axes and grid are grey, so only bars count.
BAR_PIXELS = """(metric) => {
  const section = [...document.querySelectorAll("section.usage-chart")]
    .find((s) => s.dataset.metric === metric);
  const canvas = section && section.querySelector(".plot canvas");
  if (!canvas || !canvas.width || !canvas.height) return -1;
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let bars = 0;
  for (let i = 0; i < pixels.length; i += 4) {
    const [r, g, b, a] = [pixels[i], pixels[i + 1], pixels[i + 2], pixels[i + 3]];
    if (a > 40 && Math.abs(r - 47) < 12 && Math.abs(g - 95) < 12 && Math.abs(b - 179) < 12) bars++;
  }
  return bars;
}"""


def sign_in(page: Any, service: Service) -> None:
    page.goto(f"{service.url}/admin/login")
    page.get_by_label("API key").fill(service.admin)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{service.url}/admin", timeout=WAIT_MS)


def history(service: Service, metric: str, granularity: str, page: Any) -> list[tuple[str, str]]:
    since = page.locator("#history-since").inner_text()
    until = page.locator("#history-until").inner_text()
    answer = service.call(
        "GET",
        "/v1/usage/history",
        params={
            "customerRef": "cus_a",
            "metric": metric,
            "granularity": granularity,
            "since": since,
            "until": until,
        },
    )
    assert answer.status_code == 200, answer.text
    return [(b["start"], b["value"]) for b in answer.json()["buckets"]]


def shown(page: Any, metric: str) -> list[tuple[str, str]]:
    """The rows of ``metric``'s table, opened as a reader would (its summary clicked)."""
    section = page.locator("section.usage-chart").filter(
        has=page.locator(f'table[data-metric="{metric}"]')
    )
    section.locator("summary").click()
    rows = section.locator("table.history tr[data-start]")
    return [
        (
            rows.nth(i).get_attribute("data-start"),
            rows.nth(i).locator('[data-field="value"]').inner_text().strip(),
        )
        for i in range(rows.count())
    ]


def test_the_charts_draw_the_api_s_buckets_daily_and_hourly(
    browser: Any, service: Service, usage: None
) -> None:
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # Every file the page loads is served (the browser's own favicon request aside).
    page.on(
        "response",
        lambda r: (
            errors.append(f"{r.status} {r.url}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico")
            else None
        ),
    )
    try:
        sign_in(page, service)
        page.goto(f"{service.url}/admin/customers/cus_a")
        # Daily by default: the billing period, one canvas per metric, bars in each.
        for metric in ("api_calls", "storage_gb"):
            page.wait_for_selector(
                f'section.usage-chart[data-metric="{metric}"] .plot canvas', timeout=WAIT_MS
            )
            assert page.evaluate(BAR_PIXELS, metric) > 50, metric
        assert page.locator(".u-legend", has_text="api_calls (calls)").count() == 1
        daily = history(service, "api_calls", "day", page)
        assert daily == [("2026-03-11T00:00:00Z", "1200"), ("2026-03-14T00:00:00Z", "34.5")]
        assert shown(page, "api_calls") == daily
        assert shown(page, "storage_gb") == history(service, "storage_gb", "day", page)
        assert "987654" not in page.content()  # never cus_b's numbers
        screenshot(page, "admin-customer.png")

        # The switch: hourly, the last 48 hours. storage_gb's one event is older.
        page.get_by_role("link", name="Hourly, last 48 hours").click()
        page.wait_for_url(f"{service.url}/admin/customers/cus_a?granularity=hour#history")
        page.wait_for_selector(
            'section.usage-chart[data-metric="api_calls"] .plot canvas', timeout=WAIT_MS
        )
        assert page.evaluate(BAR_PIXELS, "api_calls") > 20
        assert page.evaluate(BAR_PIXELS, "storage_gb") == -1  # no canvas: nothing to draw
        assert "No storage_gb usage in this range" in page.content()
        hourly = history(service, "api_calls", "hour", page)
        assert hourly == [("2026-03-14T09:00:00Z", "34.5")]
        assert shown(page, "api_calls") == hourly
        current = page.locator('#granularity a[aria-current="page"]').inner_text()
        assert current == "Hourly, last 48 hours"

        # And back to daily.
        page.get_by_role("link", name="Daily, this billing period").click()
        page.wait_for_url(f"{service.url}/admin/customers/cus_a?granularity=day#history")
        page.wait_for_selector(
            'section.usage-chart[data-metric="storage_gb"] .plot canvas', timeout=WAIT_MS
        )
        assert page.evaluate(BAR_PIXELS, "storage_gb") > 50
        assert errors == []
    finally:
        context.close()
