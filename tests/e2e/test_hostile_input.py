"""Hostile query strings, paths and bodies on every route but ingest: a 4xx naming the field.

Each case is what a hostile or careless client sends and the exact answer:
status, then ``errors: [{field, reason}]`` for a bad value (422) or the
problem's status alone (404, 403). Every case runs on SQLite and PostgreSQL:
several of them failed in one backend only (a cursor past 2^63 in SQLite, a
NUL in PostgreSQL). Hypothesis runs then send arbitrary query strings to
every GET route, and arbitrary bodies to replay, reconciliation runs and
adjustment decisions, and assert that none answers 5xx and that a refused
request writes nothing. Run against the code before issue 9, they find the
500s of cursors, extreme offsets and NULs; the tables pin every one.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote, quote_from_bytes

import msgspec
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from stripe_emulator.testing import RunningEmulator
from tests.e2e.conftest import Api, event

# parse_time's reason for an offset that moves a time past year 1 or 9999 (branch b owns it).
OUT_OF_RANGE = "is outside years 0001 to 9999 once in UTC"
NOT_A_CURSOR = "is not a cursor this API returned"
PUSH = "must be <target>:<number> (e.g. live:3) or 'unpushed'"
MONTHS = "must be a month from 2000-01 to 2100-12"
NOT_A_MONTH = "must be a month as YYYY-MM, e.g. 2026-03"
BAD_MONTH = "must be a month as YYYY-MM: the month is 01 to 12"
CONTROL = "must not contain control, separator or bidi characters"
WHOLE = "must be a whole number"
AUDIT = "/v1/audit/invoice?customerRef=cus_1&metric=api_calls&"
HISTORY = "/v1/usage/history?customerRef=cus_1&metric=api_calls&"
EARLY = "0001-01-01T00:00:00%2B23:59"  # year 0 in UTC
LATE = "9999-12-31T23:59:59-23:59"  # year 10000 in UTC


def cursor_of(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


# Cursors the API could not have returned: past 2^63, signed, padded, other digits.
HOSTILE_CURSORS = [
    cursor_of("p:9223372036854775808"),  # 2^63: SQLite cannot bind it (500 before)
    cursor_of("p:" + "9" * 40),
    cursor_of("p:-1"),
    cursor_of("p:+1"),
    cursor_of("p: 1"),
    cursor_of("p:1_0"),
    cursor_of("p:01"),
    cursor_of("p:\u0663"),  # ARABIC-INDIC DIGIT THREE: int() reads it
    cursor_of("p:"),
    cursor_of("x:1"),
    cursor_of("p:1") + "==",  # padding the API never writes
    "p:1",
    "abc",
    "",
    "%00",
    "%F0%9F%92%A5",
    "A" * 10_000,
]
CURSOR_ROUTES = ["/v1/events?", "/v1/adjustments?", AUDIT + "push=unpushed&"]

# (query, status, field, reason) for GET routes; field None: a problem without `errors`.
GET_CASES: list[tuple[str, int, str | None, str | None]] = [
    *[
        (f"{route}cursor={cursor}", 422, "cursor", NOT_A_CURSOR)
        for route in CURSOR_ROUTES
        for cursor in HOSTILE_CURSORS
    ],
    # /v1/events
    ("/v1/events?limit=0", 422, "limit", "must be between 1 and 1000"),
    ("/v1/events?limit=-1", 422, "limit", "must be between 1 and 1000"),
    ("/v1/events?limit=" + "9" * 30, 422, "limit", "must be between 1 and 1000"),
    ("/v1/events?limit=abc", 422, "limit", WHOLE),
    ("/v1/events?limit=", 422, "limit", WHOLE),
    ("/v1/events?limit=1.5", 422, "limit", WHOLE),
    ("/v1/events?limit=%2B5", 422, "limit", WHOLE),
    ("/v1/events?limit=%D9%A1%D9%A2", 422, "limit", WHOLE),  # ARABIC-INDIC "12"
    ("/v1/events?limit=1_0", 422, "limit", WHOLE),
    ("/v1/events?limit=1&limit=1000", 422, "limit", "must be given once"),
    ("/v1/events?metric=a&metric=b", 422, "metric", "must be given once"),
    (AUDIT + "customerRef=cus_2", 422, "customerRef", "must be given once"),
    (
        "/v1/usage/current?customerRef=cus_1&period=2026-03&period=2026-04",
        422,
        "period",
        "must be given once",
    ),
    ("/v1/usage/history?customerRef=a&metric=b&metric=c", 422, "metric", "must be given once"),
    ("/v1/customers?limit=1&limit=2", 422, "limit", "must be given once"),
    ("/v1/adjustments?status=pending&status=applied", 422, "status", "must be given once"),
    ("/v1/reconciliation/2026-03?format=csv&format=json", 422, "format", "must be given once"),
    ("/v1/events?metric=%00", 422, "metric", CONTROL),
    ("/v1/events?metric=" + "m" * 65, 422, "metric", "must be at most 64 characters"),
    ("/v1/events?metric=", 422, "metric", "must not be empty"),
    ("/v1/events?customerRef=%00", 422, "customerRef", CONTROL),
    ("/v1/events?customerRef=%1B%5B31m", 422, "customerRef", CONTROL),
    (
        "/v1/events?customerRef=" + "c" * 10_000,
        422,
        "customerRef",
        "must be at most 255 characters",
    ),
    ("/v1/events?since=" + EARLY, 422, "since", OUT_OF_RANGE),
    ("/v1/events?until=" + LATE, 422, "until", OUT_OF_RANGE),
    # /v1/usage/current
    ("/v1/usage/current", 422, "customerRef", "is required"),
    ("/v1/usage/current?customerRef=%00", 422, "customerRef", CONTROL),
    ("/v1/usage/current?customerRef=cus_1&metric=%00", 422, "metric", CONTROL),  # 500 on PG
    (
        "/v1/usage/current?customerRef=cus_1&metric=" + "m" * 65,
        422,
        "metric",
        "must be at most 64 characters",
    ),
    ("/v1/usage/current?customerRef=cus_1&period=0888-10", 422, "period", MONTHS),
    ("/v1/usage/current?customerRef=cus_1&period=9999-12", 422, "period", MONTHS),
    ("/v1/usage/current?customerRef=cus_1&period=2026-13", 422, "period", BAD_MONTH),
    ("/v1/usage/current?customerRef=cus_1&period=", 422, "period", NOT_A_MONTH),
    ("/v1/usage/current?customerRef=cus_1&period=%EF%BC%92026-03", 422, "period", NOT_A_MONTH),
    (
        "/v1/usage/current?customerRef=cus_1&period=9999-12-31T23:00:00Z",
        422,
        "period",
        "must start in a month from 2000-01 to 2100-12",
    ),
    # /v1/usage/history
    ("/v1/usage/history?customerRef=cus_1", 422, "metric", "is required"),
    ("/v1/usage/history?customerRef=%00&metric=api_calls", 422, "customerRef", CONTROL),
    ("/v1/usage/history?customerRef=cus_1&metric=nope", 404, None, None),
    (HISTORY + "granularity=week", 422, "granularity", "must be 'hour' or 'day'"),
    (HISTORY + "since=" + EARLY, 422, "since", OUT_OF_RANGE),
    (HISTORY + "until=" + LATE, 422, "until", OUT_OF_RANGE),
    (
        HISTORY + "until=0001-01-01T00:00:00Z",  # the default 30 days before it (500 before)
        422,
        "until",
        "is too early: the range would start before year 1",
    ),
    (
        HISTORY + "since=2026-03-10T00:00:00Z&until=2026-03-01T00:00:00Z",
        422,
        "since",
        "must be before until",
    ),
    (
        HISTORY + "since=0001-01-01T00:00:00Z&until=9999-12-31T23:59:59Z",
        422,
        "since",
        "the range must be at most 93 days",
    ),
    # /v1/audit/invoice
    (AUDIT + "push=live:%C2%B2", 422, "push", PUSH),  # isdigit() then int(): 500 before
    (AUDIT + "push=live:%D9%A3", 422, "push", PUSH),  # ARABIC-INDIC DIGIT THREE
    (AUDIT + "push=live:-1", 422, "push", PUSH),
    (AUDIT + "push=live:%2B1", 422, "push", PUSH),
    (AUDIT + "push=live:1.0", 422, "push", PUSH),
    (AUDIT + "push=live:", 422, "push", PUSH),
    (AUDIT + "push=live:9223372036854775808", 422, "push", PUSH),
    (AUDIT + "push=shadow:" + "9" * 5_000, 422, "push", PUSH),
    (AUDIT + "push=other:1", 422, "push", PUSH),
    (AUDIT + "push=unpushed:1", 422, "push", PUSH),
    (AUDIT + "push=", 422, "push", PUSH),
    (
        AUDIT + "cursor=" + cursor_of("p:1"),
        422,
        "push",
        "is required with cursor: name the push to page",
    ),
    ("/v1/audit/invoice?customerRef=%00&metric=api_calls", 422, "customerRef", CONTROL),
    ("/v1/audit/invoice?customerRef=cus_1&metric=nope", 404, None, None),
    ("/v1/audit/invoice?metric=api_calls", 422, "customerRef", "is required"),
    (AUDIT + "period=0888-10", 422, "period", MONTHS),
    # /v1/customers, /v1/meters
    ("/v1/customers?cursor=%00", 422, "cursor", NOT_A_CURSOR),
    ("/v1/customers?cursor=", 422, "cursor", NOT_A_CURSOR),
    ("/v1/customers?cursor=" + "c" * 256, 422, "cursor", NOT_A_CURSOR),
    ("/v1/customers?limit=0", 422, "limit", "must be between 1 and 1000"),
    ("/v1/customers?limit=x", 422, "limit", WHOLE),
    ("/v1/customers/%00", 404, None, None),
    ("/v1/customers/" + "c" * 10_000, 404, None, None),
    ("/v1/meters/%00", 404, None, None),
    ("/v1/meters/" + "m" * 10_000, 404, None, None),
    # /v1/adjustments
    (
        "/v1/adjustments?status=bogus",
        422,
        "status",
        "must be pending, applied, rejected or reverted",
    ),
    ("/v1/adjustments?status=%00", 422, "status", "must be pending, applied, rejected or reverted"),
    ("/v1/adjustments?limit=" + "9" * 30, 422, "limit", "must be between 1 and 1000"),
    ("/v1/adjustments?limit=abc", 422, "limit", WHOLE),
    # /v1/reconciliation/{month}
    ("/v1/reconciliation/0888-10", 422, "period", MONTHS),  # "not YYYY-MM" before
    ("/v1/reconciliation/1999-12", 422, "period", MONTHS),
    ("/v1/reconciliation/2101-01", 422, "period", MONTHS),
    ("/v1/reconciliation/2026-13", 422, "period", BAD_MONTH),
    ("/v1/reconciliation/2026-3", 422, "period", NOT_A_MONTH),
    ("/v1/reconciliation/%EF%BC%92026-03", 422, "period", NOT_A_MONTH),
    ("/v1/reconciliation/" + "9" * 10_000, 422, "period", NOT_A_MONTH),
    ("/v1/reconciliation/2026-03?format=xml", 422, "format", "must be json or csv"),
    ("/v1/reconciliation/2026-03?format=%00", 422, "format", "must be json or csv"),
    ("/v1/reconciliation/2026-03", 404, None, None),
    ("/v1/reconciliation/2000-01", 404, None, None),  # the first month anyone can name
    ("/v1/reconciliation/2100-12", 404, None, None),  # and the last
]

SPAN = {"since": "2026-03-01T00:00:00Z", "until": "2026-04-01T00:00:00Z"}
UUID0 = "00000000-0000-0000-0000-000000000000"

# (path, body, status, field, reason) for POST routes other than ingest.
POST_CASES: list[tuple[str, Any, int, str | None, str | None]] = [
    # /v1/replay
    ("/v1/replay", {**SPAN, "since": EARLY.replace("%2B", "+")}, 422, "since", OUT_OF_RANGE),
    ("/v1/replay", {**SPAN, "until": LATE}, 422, "until", OUT_OF_RANGE),
    ("/v1/replay", {**SPAN, "limit": 0}, 422, "limit", "must be between 1 and 1000"),
    ("/v1/replay", {**SPAN, "limit": -1}, 422, "limit", "must be between 1 and 1000"),
    ("/v1/replay", {**SPAN, "limit": 10**30}, 422, "limit", "must be between 1 and 1000"),
    ("/v1/replay", {**SPAN, "limit": "abc"}, 422, "limit", "expected `int`, got `str`"),
    ("/v1/replay", {**SPAN, "mode": "bogus"}, 422, "mode", "must be dry-run or apply"),
    ("/v1/replay", {**SPAN, "mode": None}, 422, "mode", "expected `str`, got `null`"),
    (
        "/v1/replay",
        {**SPAN, "metrics": []},
        422,
        "metrics",
        "must list 1 to 100 names (or be left out)",
    ),
    (
        "/v1/replay",
        {**SPAN, "customers": ["c"] * 100_000},
        422,
        "customers",
        "must list 1 to 100 names (or be left out)",
    ),
    (
        "/v1/replay",
        {**SPAN, "metrics": ["nope"]},
        422,
        "metrics",
        "'nope' is not a declared metric",
    ),
    ("/v1/replay", {**SPAN, "metrics": [1]}, 422, "metrics[0]", "expected `str`, got `int`"),
    ("/v1/replay", {**SPAN, "customers": ["\x00"]}, 422, "customers", CONTROL),
    (
        "/v1/replay",
        {**SPAN, "customers": ["c" * 256]},
        422,
        "customers",
        "must be at most 255 characters",
    ),
    (
        "/v1/replay",
        {**SPAN, "metrics": ["m" * 65]},
        422,
        "metrics",
        "must be at most 64 characters",
    ),
    ("/v1/replay", {**SPAN, "metrics": ["\x1b[2J"]}, 422, "metrics", CONTROL),
    (
        "/v1/replay",
        {**SPAN, "customers": "cus_1"},
        422,
        "customers",
        "expected `array | null`, got `str`",
    ),
    ("/v1/replay", {**SPAN, "cursor": "abc"}, 422, "cursor", NOT_A_CURSOR),
    ("/v1/replay", {**SPAN, "cursor": "A" * 10_000}, 422, "cursor", NOT_A_CURSOR),
    # /v1/reconciliation/run
    ("/v1/reconciliation/run", {"period": "0888-10"}, 422, "period", MONTHS),
    ("/v1/reconciliation/run", {"period": "9999-12"}, 422, "period", MONTHS),
    ("/v1/reconciliation/run", {"period": "2026-13"}, 422, "period", BAD_MONTH),
    ("/v1/reconciliation/run", {"period": "2026-03-05T10:30:00Z"}, 422, "period", NOT_A_MONTH),
    (
        "/v1/reconciliation/run",
        {"period": 202603},
        422,
        "period",
        "expected `str | null`, got `int`",
    ),
    ("/v1/reconciliation/run", {"actor": "\x00"}, 422, "actor", CONTROL),
    (
        "/v1/reconciliation/run",
        {"actor": "a" * 201},
        422,
        "actor",
        "must be at most 200 characters",
    ),
    ("/v1/reconciliation/run", {"actor": ""}, 422, "actor", "must not be empty"),
    ("/v1/reconciliation/run", {"repair": "yes"}, 422, "repair", "expected `bool`, got `str`"),
    ("/v1/reconciliation/run", [], 422, "body", "Expected `object`, got `array`"),
    # /v1/adjustments/{id}/{decision}
    (
        "/v1/adjustments/not-a-uuid/approve",
        {"reason": "r"},
        422,
        "id",
        "must be an adjustment id (a UUID)",
    ),
    (
        f"/v1/adjustments/{'f' * 10_000}/approve",
        {"reason": "r"},
        422,
        "id",
        "must be an adjustment id (a UUID)",
    ),
    (f"/v1/adjustments/{UUID0}/bogus", {"reason": "r"}, 404, None, None),
    (f"/v1/adjustments/{UUID0}/%00", {"reason": "r"}, 404, None, None),
    (f"/v1/adjustments/{UUID0}/approve", {"reason": "r"}, 404, None, None),
    (f"/v1/adjustments/{UUID0}/approve", {}, 422, "reason", "is required"),
    (f"/v1/adjustments/{UUID0}/approve", {"reason": 5}, 422, "reason", "expected `str`, got `int`"),
    (
        f"/v1/adjustments/{UUID0}/approve",
        {"reason": "r", "actor": "\x00"},
        422,
        "actor",
        CONTROL,
    ),
    (
        f"/v1/adjustments/{UUID0}/reject",
        {"reason": "r" * 501},
        422,
        "reason",
        "must be at most 500 characters",
    ),
]


def answer(response: Any) -> tuple[int, str | None, str | None]:
    body = response.json() if response.content else {}
    errors = body.get("errors") if isinstance(body, dict) else None
    if not errors:
        return response.status_code, None, None
    assert len(errors) == 1, body
    return response.status_code, errors[0]["field"], errors[0]["reason"]


def test_every_hostile_query_value_is_a_4xx_naming_the_parameter(api: Api) -> None:
    api.ingest(event())
    api.settle()
    wrong = []
    for query, *expected in GET_CASES:
        got = answer(api.call("GET", query))
        if got != tuple(expected):
            wrong.append(f"GET {query[:120]}: {got} != {tuple(expected)}")
    assert not wrong, "\n".join(wrong)


def test_every_hostile_body_value_is_a_4xx_naming_the_field(api: Api) -> None:
    api.ingest(event())
    api.settle()
    wrong = []
    for path, body, *expected in POST_CASES:
        got = answer(api.call("POST", path, content=json.dumps(body)))
        if got != tuple(expected):
            wrong.append(f"POST {path[:80]} {str(body)[:80]}: {got} != {tuple(expected)}")
    assert not wrong, "\n".join(wrong)


def test_every_cursor_the_api_could_issue_is_read(api: Api) -> None:
    """The decoder's range is exactly what it can issue: 0..2^63-1, both ends."""
    api.ingest(*(event(idempotencyKey=f"k{n}") for n in range(3)))
    api.settle()
    first = api.call("GET", "/v1/events?limit=2").json()
    rest = api.call("GET", f"/v1/events?limit=2&cursor={first['nextCursor']}").json()
    assert [len(first["data"]), len(rest["data"]), rest["nextCursor"]] == [2, 1, None]
    for route in CURSOR_ROUTES:
        everything = api.call("GET", f"{route}cursor={cursor_of('p:0')}")
        assert everything.status_code == 200, everything.text
        last = api.call("GET", f"{route}cursor={cursor_of(f'p:{2**63 - 1}')}")
        assert last.status_code == 200, last.text
    events = api.call("GET", f"/v1/events?cursor={cursor_of('p:0')}").json()["data"]
    assert len(events) == 3
    assert api.call("GET", f"/v1/events?cursor={cursor_of(f'p:{2**63 - 1}')}").json()["data"] == []


def test_a_replay_cursor_rewritten_by_the_client_is_refused(api: Api) -> None:
    """The binding covers the range, not the key: a key the API cannot have stored is refused."""
    api.ingest(event(customerRef="cus_1"), event(customerRef="cus_2"))
    api.settle()
    page = api.call("POST", "/v1/replay", json={**SPAN, "limit": 1})
    cursor = page.json()["nextCursor"]
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    kind, customer, metric, period, bound = msgspec.json.decode(raw)
    assert customer == "cus_1"
    for forged in (["\x00", metric, period], [customer, "m" * 300, period]):
        text = msgspec.json.encode([kind, *forged, bound])
        forged_cursor = base64.urlsafe_b64encode(text).decode().rstrip("=")
        refused = api.call("POST", "/v1/replay", json={**SPAN, "cursor": forged_cursor})
        assert answer(refused) == (422, "cursor", NOT_A_CURSOR)
    resumed = api.call("POST", "/v1/replay", json={**SPAN, "limit": 1, "cursor": cursor})
    assert [c["customerRef"] for c in resumed.json()["counters"]] == ["cus_2"]


# -- naming a period: one rule on every route ---------------------------------------

ANCHORED = (
    "customer cus_1 is billed from its Stripe anchor 2026-01-05T10:30:00Z;"
    " name a period by its start, e.g. 2026-03-05T10:30:00Z"
)


def map_customers(api: Api, emulator: RunningEmulator) -> None:
    """cus_1 billed from a Stripe anchor, cus_cal mapped in calendar months, cus_new unmapped."""
    mapping = api.call("POST", "/v1/mappings", json={"metric": "api_calls", "createMeter": True})
    assert mapping.status_code == 201, mapping.text
    for ref, anchor in (("cus_1", "2026-01-05T10:30:00Z"), ("cus_cal", None)):
        stripe_id = emulator.client().v1.customers.create({"name": ref}).id
        body = {"customerRef": ref, "stripeCustomerId": stripe_id, "billingCycleAnchor": anchor}
        mapped = api.call("POST", "/v1/customers", json=body)
        assert mapped.status_code == 201, mapped.text
    for ref in ("cus_1", "cus_cal", "cus_new"):
        api.ingest(event(customerRef=ref, quantity=3, ts="2026-03-10T09:00:00Z"))
    api.settle()


@pytest.mark.parametrize("route", ["/v1/usage/current?", "/v1/audit/invoice?metric=api_calls&"])
def test_a_period_is_named_by_the_key_the_customer_has(
    stripe_api: Api, emulator: RunningEmulator, route: str
) -> None:
    api = stripe_api
    map_customers(api, emulator)

    def named(customer: str, period: str) -> Any:
        return api.call("GET", f"{route}customerRef={customer}&period={period}", key="acme-read")

    # An anchored customer never has the calendar month: 422, not an empty 200.
    assert answer(named("cus_1", "2026-03")) == (422, "period", ANCHORED)
    assert answer(named("cus_1", "2026-03-01T00:00:00Z")) == (
        422,
        "period",
        "is not the start of a billing period of customer cus_1: its periods start each month"
        " from its Stripe anchor 2026-01-05T10:30:00Z; the one holding 2026-03-01T00:00:00Z"
        " starts 2026-02-05T10:30:00Z",
    )
    anchored = named("cus_1", "2026-03-05T10:30:00Z")
    assert anchored.status_code == 200, anchored.text
    body = anchored.json()
    assert (body["period"], body["periodStart"], body["periodEnd"]) == (
        "2026-03-05T10:30:00Z",
        "2026-03-05T10:30:00Z",
        "2026-04-05T10:30:00Z",
    )
    counters = body["counters"] if "counters" in body else [body["counter"]]
    assert [c["value"] for c in counters] == ["3"]

    # A calendar customer, mapped or not, names the month; its start is not its key.
    for customer in ("cus_cal", "cus_new"):
        calendar = named(customer, "2026-03")
        assert calendar.status_code == 200, calendar.text
        body = calendar.json()
        counters = body["counters"] if "counters" in body else [body["counter"]]
        assert (body["period"], [c["value"] for c in counters]) == ("2026-03", ["3"])
        assert answer(named(customer, "2026-03-01T00:00:00Z")) == (
            422,
            "period",
            f"customer {customer} is billed in calendar months (UTC); name a period as"
            " YYYY-MM, e.g. 2026-03",
        )


def test_a_reconciliation_month_holds_the_periods_starting_in_it(
    stripe_api: Api, emulator: RunningEmulator
) -> None:
    """Not one period but a month of period starts: anchored and calendar periods both."""
    api = stripe_api
    map_customers(api, emulator)
    run = api.call("POST", "/v1/reconciliation/run", json={"period": "2026-03"})
    assert run.status_code == 200, run.text
    [report] = run.json()["data"]
    assert report["month"] == "2026-03"
    assert sorted((line["customerRef"], line["period"]) for line in report["lines"]) == [
        ("cus_1", "2026-03-05T10:30:00Z"),
        ("cus_cal", "2026-03"),
    ]


# -- arbitrary query strings on every GET route --------------------------------------

# Each route with the query that makes it do its work (so that the fuzzed parameters
# reach past "is required") and the names it reads.
GET_ROUTES: dict[str, tuple[str, list[str]]] = {
    "/v1/events": ("", ["metric", "customerRef", "since", "until", "cursor", "limit"]),
    "/v1/usage/current": ("customerRef=cus_1", ["customerRef", "metric", "period"]),
    "/v1/usage/history": (
        "customerRef=cus_1&metric=api_calls",
        ["customerRef", "metric", "granularity", "since", "until"],
    ),
    "/v1/audit/invoice": (
        "customerRef=cus_1&metric=api_calls",
        ["customerRef", "metric", "period", "push", "cursor"],
    ),
    "/v1/customers": ("", ["cursor", "limit"]),
    "/v1/adjustments": ("", ["status", "cursor", "limit"]),
    "/v1/reconciliation/2026-03": ("", ["format"]),
    "/v1/meters": ("", []),
    "/v1/meters/api_calls": ("", []),
    "/v1/mappings": ("", []),
    "/v1/customers/cus_1": ("", []),
    "/health/live": ("", []),
    "/health/ready": ("", []),
    "/health": ("", []),
    "/metrics": ("", []),
}
# Routes whose path segment is a value too: the segment is fuzzed like a query value.
PATH_ROUTES = ["/v1/reconciliation/{}", "/v1/meters/{}", "/v1/customers/{}"]

numbers = st.one_of(
    st.integers(),
    st.integers(min_value=2**62, max_value=2**200),
    st.integers(max_value=-(2**62)),
).map(str)
offsets = st.sampled_from(["Z", "+23:59", "-23:59", "+00:00", "-00:00", "+24:00", "z", ""])
times = st.one_of(
    # The edges of datetime's range, where an offset moves a time out of it.
    st.builds(
        lambda moment, offset: moment + offset,
        st.sampled_from(["0001-01-01T00:00:00", "9999-12-31T23:59:59", "2026-03-10T09:00:00"]),
        offsets,
    ),
    st.builds(
        lambda y, mo, d, h, off: f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:00:00{off}",
        st.integers(0, 10_000),
        st.integers(0, 13),
        st.integers(0, 32),
        st.integers(0, 25),
        offsets,
    ),
)
months = st.builds(lambda y, m: f"{y:04d}-{m:02d}", st.integers(0, 9999), st.integers(0, 99))
cursors = st.one_of(
    numbers.map(lambda n: cursor_of(f"p:{n}")),
    st.text(max_size=30).map(cursor_of),
)
pushes = st.builds(
    lambda target, n: f"{target}:{n}",
    st.sampled_from(["live", "shadow", "unpushed", ""]),
    st.one_of(numbers, st.text(max_size=5)),
)
# What the fuzzer should try often: characters and shapes that broke a route before.
TRICKY = [
    "\x00",
    "\x00cus_1",
    "\u00b2",  # SUPERSCRIPT TWO: isdigit() but not int()
    "live:\u00b2",
    "\u0663",
    "\ud7ff\ufffd\U0010ffff",
    "0001-01-01T00:00:00+23:59",
    "9999-12-31T23:59:59-23:59",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "0888-10",
    "9999-12",
    cursor_of(f"p:{2**63}"),
    cursor_of("p:-1"),
]
# A value as it goes on the wire: quoted text, or raw bytes (invalid UTF-8 included).
values = st.one_of(
    st.one_of(
        st.text(max_size=40),
        st.text(alphabet=st.characters(codec="utf-8"), min_size=200, max_size=3000),
        numbers,
        times,
        months,
        cursors,
        pushes,
        st.sampled_from(["", "cus_1", "api_calls", "unpushed", "2026-03", "csv", "hour"]),
        st.sampled_from(TRICKY),
    ).map(lambda text: quote(text, safe="")),
    st.binary(max_size=40).map(lambda raw: quote_from_bytes(raw, safe="")),
)


QUERY_VALUES: dict[str, st.SearchStrategy[str]] = {
    "since": times,
    "until": times,
    "period": st.one_of(months, times.map(lambda t: t[:19] + "Z")),
    "cursor": cursors,
    "push": pushes,
    "limit": numbers,
}


def query_strings(names: list[str]) -> st.SearchStrategy[dict[str, str]]:
    """Mostly the names the route reads, each with values of its own kind; sometimes anything."""

    def value_for(name: str) -> st.SearchStrategy[str]:
        own = QUERY_VALUES.get(name, st.text(max_size=40)).map(lambda v: quote(v, safe=""))
        return st.one_of(own, own, st.sampled_from(TRICKY).map(lambda v: quote(v, safe="")), values)

    named = (
        st.sampled_from(names).flatmap(lambda n: st.tuples(st.just(n), value_for(n)))
        if names
        else st.nothing()
    )
    anything = st.tuples(st.text(max_size=12).map(lambda k: quote(k, safe="")), values)
    pair = st.one_of(named, named, named, anything)
    # Each name once: a name given twice is refused before anything else is read.
    return st.lists(pair, max_size=4, unique_by=lambda p: p[0]).map(dict)


def refuses_politely(response: Any) -> str | None:
    """None when the answer is no 5xx and a 422 names its fields; else what is wrong."""
    if response.status_code >= 500:
        return f"{response.status_code}: {response.text[:300]}"
    if response.status_code == 422:
        errors = response.json().get("errors")
        if not errors or not all(e.get("field") and e.get("reason") for e in errors):
            return f"422 without field and reason: {response.text[:300]}"
    return None


@pytest.mark.parametrize("route", [*GET_ROUTES, *PATH_ROUTES])
def test_arbitrary_query_strings_never_reach_a_5xx(
    stripe_api: Api, emulator: RunningEmulator, route: str
) -> None:
    """Random keys and values (unicode, huge numbers, bad UTF-8, empty) with an admin key."""
    api = stripe_api
    map_customers(api, emulator)  # an anchored customer, so both period rules are tried
    base, names = GET_ROUTES.get(route, ("", []))

    @hypothesis_settings(max_examples=150, derandomize=True, deadline=None, database=None)
    @given(
        fuzzed=query_strings(names),
        keep_base=st.booleans(),
        customer=st.sampled_from(["cus_1", "cus_cal", "cus_new"]),
        segment=values,
    )
    def check(fuzzed: dict[str, str], keep_base: bool, customer: str, segment: str) -> None:
        path = route.format(segment) if "{}" in route else route
        given = dict(pair.split("=") for pair in base.split("&") if pair) if keep_base else {}
        given = {k: customer if v == "cus_1" else v for k, v in given.items()} | fuzzed
        query = "&".join(f"{k}={v}" for k, v in given.items())
        response = api.call("GET", f"{path}?{query}" if query else path)
        problem = refuses_politely(response)
        assert problem is None, f"GET {path}?{query}: {problem}"

    check()


# -- arbitrary bodies on the POST routes this file covers ---------------------------

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(min_value=2**63).map(lambda n: n**3),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=20),
        st.sampled_from(TRICKY),
        times,
        months,
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
# Each route with a body it accepts, so that one or two fuzzed fields reach past the others.
POST_FIELDS: dict[str, tuple[dict[str, Any], list[str]]] = {
    "/v1/replay": (SPAN, ["since", "until", "mode", "metrics", "customers", "cursor", "limit"]),
    "/v1/reconciliation/run": ({}, ["period", "repair", "actor"]),
    "/v1/adjustments/{}/{}": ({"reason": "r"}, ["reason", "actor"]),
}


# What a field's value is drawn from, beside any JSON: its own kind of value at the edges.
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "since": times,
    "until": times,
    "period": st.one_of(months, times.map(lambda t: t[:19] + "Z")),
    "cursor": cursors,
    "limit": st.one_of(st.integers(), st.integers(min_value=2**63)),
}


def bodies(base: dict[str, Any], names: list[str]) -> st.SearchStrategy[bytes]:
    """The route's good body with fields replaced by any values, any JSON, or any bytes."""

    def value_for(name: str) -> st.SearchStrategy[Any]:
        own = FIELD_VALUES.get(name, st.text(max_size=40))
        return st.one_of(own, own, st.sampled_from(TRICKY), json_values)

    named = st.sampled_from(names).flatmap(lambda n: st.tuples(st.just(n), value_for(n)))
    anything = st.tuples(st.text(max_size=8), json_values)
    changes = st.lists(st.one_of(named, named, named, anything), min_size=1, max_size=3)
    objects = changes.map(lambda change: {**base, **dict(change)})
    as_json = st.one_of(objects, objects, objects, json_values).map(
        lambda v: json.dumps(v).encode()
    )
    return st.one_of(as_json, as_json, as_json, st.binary(max_size=200))


@pytest.mark.parametrize("route", list(POST_FIELDS))
def test_arbitrary_bodies_never_reach_a_5xx_and_a_refusal_writes_nothing(
    stripe_api: Api, emulator: RunningEmulator, route: str
) -> None:
    api = stripe_api
    map_customers(api, emulator)
    proposed = api.call(
        "POST",
        "/v1/adjustments",
        json={"customerRef": "cus_1", "metric": "api_calls", "quantity": 1, "reason": "test"},
    )
    assert proposed.status_code == 201, proposed.text
    recorder = api.client.app.state.services.stores.app.recorder

    @hypothesis_settings(max_examples=200, derandomize=True, deadline=None, database=None)
    @given(
        body=bodies(*POST_FIELDS[route]),
        target=st.sampled_from([proposed.json()["id"], UUID0, "x", "%00"]),
        decision=st.sampled_from(["approve", "reject", "revert", "bogus", "%F0%9F%92%A5"]),
    )
    def check(body: bytes, target: str, decision: str) -> None:
        path = route.format(target, decision)
        head = recorder.max_notification_id()
        response = api.call(
            "POST", path, content=body, headers={"content-type": "application/json"}
        )
        problem = refuses_politely(response)
        assert problem is None, f"POST {path} {body[:200]!r}: {problem}"
        if response.status_code >= 400:
            assert recorder.max_notification_id() == head, f"a refused {path} wrote events"

    check()
