"""The customer page's usage charts over HTTP (SQLite and PostgreSQL): for each metric,
the buckets in the page (its JSON and its table) are ``/v1/usage/history``'s answer
for the same customer, metric, granularity and range; a bad granularity is a 422
page; the vendored uPlot and our chart script are served as what they are."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import pytest

from api.admin.assets import STATIC
from tests.e2e.conftest import Api, event
from tests.e2e.test_admin_ui import by_id, page, sign_in

# The clock stands at 2026-03-15T12:00Z: the period is March, "hour" the 48 hours
# up to the end of the current hour.
HOSTILE = "storage.gb"
MARKUP = "</script><b>\"'&"  # the unit of HOSTILE: text, never markup


def used(metric: str, quantity: int, ts: str, customer: str = "cus_1") -> dict[str, Any]:
    key = f"{customer}-{metric}-{ts}-{quantity}"
    return event(metric=metric, customerRef=customer, quantity=quantity, ts=ts, idempotencyKey=key)


def seed(api: Api) -> None:
    """Usage of cus_1 across several hours and days of March, and of cus_2 beside it."""
    for meter in (
        {"name": "seats", "aggregation": "max"},
        {"name": HOSTILE, "aggregation": "sum", "unit": MARKUP},
    ):
        declared = api.call("POST", "/v1/meters", json=meter)
        assert declared.status_code == 201, declared.text
    answer = api.ingest(
        used("api_calls", 3, "2026-03-02T08:10:00Z"),
        used("api_calls", 4, "2026-03-02T08:50:00Z"),
        used("api_calls", 5, "2026-03-02T23:30:00Z"),
        used("api_calls", 2, "2026-03-07T10:00:00Z"),
        used("api_calls", 1, "2026-03-14T10:15:00Z"),
        used("api_calls", 2, "2026-03-14T10:45:00Z"),
        used("api_calls", 4, "2026-03-14T23:59:59Z"),
        used("api_calls", 8, "2026-03-15T00:00:00Z"),
        used("api_calls", 16, "2026-03-15T11:30:00Z"),
        used("seats", 5, "2026-03-02T09:00:00Z"),  # none in the last 48 hours
        used("seats", 9, "2026-03-07T09:00:00Z"),
        used("seats", 6, "2026-03-07T15:00:00Z"),
        used(HOSTILE, 7, "2026-03-15T09:00:00Z"),
        used("api_calls", 1000, "2026-03-14T10:30:00Z", customer="cus_2"),
    )
    assert answer.status_code == 200 and answer.json()["accepted"] == 14, answer.text
    api.settle()


def embedded(html: str) -> list[dict[str, Any]]:
    """The chart data the page embeds for its script."""
    found = re.search(
        r'<script type="application/json" id="usage-history">(.*?)</script>', html, re.S
    )
    assert found is not None, "no #usage-history"
    data: list[dict[str, Any]] = json.loads(found.group(1))
    return data


def table(html: str, metric: str) -> list[tuple[str, str, int]]:
    """The rows (start, value, count) of the table of ``metric``'s buckets."""
    escaped = re.escape(metric.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))
    escaped = escaped.replace('"', "&#34;").replace("'", "&#39;")
    found = re.search(rf'<table class="history" data-metric="{escaped}">(.*?)</table>', html, re.S)
    assert found is not None, f"no table for {metric}"
    rows = re.findall(
        r'<tr data-start="([^"]+)">.*?data-field="value">([^<]*)<.*?data-field="count">([^<]*)<',
        found.group(1),
        re.S,
    )
    return [(start, value, int(count)) for start, value, count in rows]


def history(api: Api, chart: dict[str, Any]) -> list[dict[str, Any]]:
    answer = api.call(
        "GET",
        "/v1/usage/history",
        "acme-read",
        params={
            "customerRef": "cus_1",
            "metric": chart["metric"],
            "granularity": chart["granularity"],
            "since": chart["since"],
            "until": chart["until"],
        },
    )
    assert answer.status_code == 200, answer.text
    buckets: list[dict[str, Any]] = answer.json()["buckets"]
    return buckets


@pytest.mark.parametrize(
    ("granularity", "since", "until"),
    [
        ("hour", "2026-03-13T13:00:00Z", "2026-03-15T13:00:00Z"),
        ("day", "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z"),
    ],
)
def test_the_charts_are_the_api_s_buckets(
    api: Api, granularity: str, since: str, until: str
) -> None:
    seed(api)
    sign_in(api, "acme-read")
    shown = page(api, f"/admin/customers/cus_1?granularity={granularity}")
    assert shown.status_code == 200, shown.text
    charts = embedded(shown.text)
    assert [c["metric"] for c in charts] == sorted(["api_calls", "seats", HOSTILE])
    assert (by_id(shown.text, "history-since"), by_id(shown.text, "history-until")) == (
        since,
        until,
    )
    for chart in charts:
        assert (chart["granularity"], chart["since"], chart["until"]) == (granularity, since, until)
        # The same query, the same range: the same buckets, field for field.
        assert chart["buckets"] == history(api, chart), chart["metric"]
        rows = [(b["start"], b["value"], b["count"]) for b in chart["buckets"]]
        if rows:
            assert table(shown.text, chart["metric"]) == rows
    # And they are the usage ingested above, so both sides cannot be wrong alike.
    calls = {c["metric"]: [(b["start"], b["value"]) for b in c["buckets"]] for c in charts}
    if granularity == "hour":
        assert calls["api_calls"] == [
            ("2026-03-14T10:00:00Z", "3"),
            ("2026-03-14T23:00:00Z", "4"),
            ("2026-03-15T00:00:00Z", "8"),
            ("2026-03-15T11:00:00Z", "16"),
        ]
        assert calls["seats"] == []
        assert "No seats usage in this range" in shown.text
    else:
        assert calls["api_calls"] == [
            ("2026-03-02T00:00:00Z", "12"),
            ("2026-03-07T00:00:00Z", "2"),
            ("2026-03-14T00:00:00Z", "7"),
            ("2026-03-15T00:00:00Z", "24"),
        ]
        assert calls["seats"] == [("2026-03-02T00:00:00Z", "5"), ("2026-03-07T00:00:00Z", "9")]
    assert calls[HOSTILE] == [
        ("2026-03-15T09:00:00Z" if granularity == "hour" else "2026-03-15T00:00:00Z", "7")
    ]
    # A unit is text, never markup: it stays inside the JSON and the heading.
    assert [c["unit"] for c in charts if c["metric"] == HOSTILE] == [MARKUP]
    assert "</script><b>" not in shown.text
    assert "1000" not in shown.text  # never cus_2's usage


def test_the_switch_links_to_both_granularities(api: Api) -> None:
    seed(api)
    sign_in(api)
    daily = page(api, "/admin/customers/cus_1")  # daily by default, as the API
    assert embedded(daily.text)[0]["granularity"] == "day"
    assert re.search(r'href="\?granularity=day#history" aria-current="page"', daily.text)
    assert 'href="?granularity=hour#history">' in daily.text
    hourly = page(api, "/admin/customers/cus_1?granularity=hour")
    assert re.search(r'href="\?granularity=hour#history" aria-current="page"', hourly.text)
    assert 'src="/admin/assets/uplot/uPlot.iife.min.js"' in hourly.text
    assert 'src="/admin/assets/usage-chart.js"' in hourly.text


@pytest.mark.parametrize("customer", ["cus_1", "cus_9"])  # with usage, and without
@pytest.mark.parametrize("granularity", ["week", "", "HOUR", "hour\x00"])
def test_a_bad_granularity_is_a_422_page_naming_it(
    api: Api, customer: str, granularity: str
) -> None:
    seed(api)
    sign_in(api)
    answer = api.client.get(
        f"/admin/customers/{customer}", params={"granularity": granularity}, follow_redirects=False
    )
    assert answer.status_code == 422, answer.text
    assert html.unescape(by_id(answer.text, "error")) == "granularity: must be 'hour' or 'day'"
    # The API says the same of the same value.
    same = api.call(
        "GET",
        "/v1/usage/history",
        params={"customerRef": customer, "metric": "api_calls", "granularity": granularity},
    )
    assert same.status_code == 422
    assert same.json()["errors"] == [{"field": "granularity", "reason": "must be 'hour' or 'day'"}]


def test_no_usage_shows_no_chart(api: Api) -> None:
    sign_in(api)
    shown = page(api, "/admin/customers/cus_9?granularity=hour")
    assert shown.status_code == 200
    assert "No usage in this period yet" in shown.text
    assert 'id="usage-history"' not in shown.text
    assert "uPlot" not in shown.text


@pytest.mark.parametrize(
    ("name", "path", "media_type"),
    [
        ("uplot/uPlot.iife.min.js", "vendor/uplot/uPlot.iife.min.js", "text/javascript"),
        ("uplot/uPlot.min.css", "vendor/uplot/uPlot.min.css", "text/css"),
        ("uplot/LICENSE", "vendor/uplot/LICENSE", "text/plain"),
        ("usage-chart.js", "admin/usage-chart.js", "text/javascript"),
    ],
)
def test_the_chart_files_are_served_as_what_they_are(
    api: Api, name: str, path: str, media_type: str
) -> None:
    answer = page(api, f"/admin/assets/{name}")  # no session needed: public code
    assert answer.status_code == 200
    assert answer.headers["content-type"].split(";")[0] == media_type
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.content == (Path(STATIC) / path).read_bytes()
    again = api.client.get(
        f"/admin/assets/{name}", headers={"If-None-Match": answer.headers["etag"]}
    )
    assert again.status_code == 304


def test_the_vendored_library_is_uplot_under_its_licence(api: Api) -> None:
    script = page(api, "/admin/assets/uplot/uPlot.iife.min.js").text
    assert script.startswith("/*! https://github.com/leeoniya/uPlot (v1.6.32) */")
    assert "The MIT License" in page(api, "/admin/assets/uplot/LICENSE").text


@pytest.mark.parametrize(
    "name", ["nope.js", "uplot", "../routes.py", "uplot/../../admin/routes.py", "%2e%2e/x"]
)
def test_an_unknown_asset_is_a_404(api: Api, name: str) -> None:
    answer = page(api, f"/admin/assets/{name}")
    assert answer.status_code == 404
