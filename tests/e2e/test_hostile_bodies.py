"""Whatever a client POSTs, the answer is never a 5xx, and a refused request writes nothing.

Bodies are composed as JSON *text*, so that they can hold what a JSON
library would never produce: duplicate keys, numbers past any float,
nesting thousands deep. Each route gets objects built from its own field
names (so the values reach its rules, not only the decoder) beside plain
arbitrary JSON and arbitrary bytes. Hypothesis runs derandomized, so a
failure is reproducible and the suite's length is fixed.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.conftest import Api, stripe_signature

FUZZ = settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

NUMBERS = [
    "1e999999999",
    "-1e999999999",
    "1e-999999999",
    "1E400",
    "123456789012345678901234567890",
    "-0",
    "0.0000000000001",
    "9223372036854775808",
    "-9223372036854775809",
]
TEXTS = [
    "",
    " ",
    " 5 ",
    "5_000",
    "١٢",
    "1e999999999",
    "1e-999999999",
    "NaN",
    "Infinity",
    "a\r\nb",
    "\u0000",
    "\u007f",
    "\u0085",
    "\u009b",
    "\u2028",
    "\u202e",
    "\x1b[31m",
    "x" * 5000,
    "0001-01-01T00:00:00+23:59",
    "9999-12-31T23:59:59-23:59",
    "1970-01-01T00:00:00Z",
    "0001-01-01T00:00:00Z",
    "2026-03-15T11:00:00Z",
    "2026-02",
    "0888-10",
    "live:²",
    "cus_123",
    "api_calls",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
any_json = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def deep(draw: st.DrawFn) -> str:
    depth = draw(st.integers(min_value=50, max_value=3000))
    if draw(st.booleans()):
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


fragments = st.one_of(
    any_json.map(json.dumps),
    st.sampled_from(NUMBERS),
    st.sampled_from(TEXTS).map(json.dumps),
    st.text(max_size=30).map(json.dumps),
    deep(),
)


def object_of(fields: list[str], base: dict[str, Any] | None = None) -> st.SearchStrategy[str]:
    """A JSON object of the route's own fields (and stray ones), as text.

    From a valid ``base``, some fields are replaced by hostile values (or
    repeated, the hostile value last), so that a value reaches the rule of
    its own field rather than failing on a missing neighbour.
    """
    names = st.sampled_from([*fields, "tenantId", "unknownField"])

    @st.composite
    def build(draw: st.DrawFn) -> str:
        hostile = draw(st.lists(st.tuples(names, fragments), max_size=len(fields) + 2))
        start = dict(base or {})
        if not draw(st.booleans()):  # replace rather than repeat the key
            for name, _ in hostile:
                start.pop(name, None)
        pairs = [(k, json.dumps(v)) for k, v in start.items()] + hostile
        return "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in pairs) + "}"

    return build()


VALID_EVENT = {
    "metric": "api_calls",
    "customerRef": "cus_fuzz",
    "quantity": 1,
    "ts": "2026-03-10T11:00:00Z",
}
EVENT_FIELDS = ["metric", "customerRef", "quantity", "ts", "idempotencyKey", "meta"]
ROUTES: dict[str, tuple[list[str], dict[str, Any]]] = {
    "/v1/meters": (
        [
            "name",
            "aggregation",
            "unit",
            "latenessWindowSeconds",
            "stripeEventName",
            "allowNegative",
        ],
        {"name": "fuzzed", "aggregation": "sum"},
    ),
    "/v1/mappings": (
        ["metric", "stripeMeterId", "stripeEventName", "createMeter", "shadowEventName"],
        {"metric": "api_calls", "createMeter": True},
    ),
    "/v1/customers": (
        ["customerRef", "stripeCustomerId", "billingCycleAnchor", "shadowStripeCustomerId"],
        {"customerRef": "cus_fuzz", "stripeCustomerId": "cus_unknown"},
    ),
    "/v1/adjustments": (
        ["customerRef", "metric", "quantity", "reason", "actor"],
        {"customerRef": "cus_fuzz", "metric": "api_calls", "quantity": 1, "reason": "fuzz"},
    ),
    "/v1/adjustments/00000000-0000-0000-0000-000000000000/approve": (
        ["reason", "actor"],
        {"reason": "fuzz"},
    ),
    "/v1/reconciliation/run": (["period", "repair", "actor"], {}),
    "/v1/replay": (
        ["since", "until", "mode", "metrics", "customers", "cursor", "limit"],
        {"since": "2026-03-01T00:00:00Z", "until": "2026-03-10T00:00:00Z"},
    ),
}


def bodies(fields: list[str], base: dict[str, Any] | None = None) -> st.SearchStrategy[bytes]:
    return st.one_of(
        object_of(fields, base).map(str.encode),
        fragments.map(str.encode),
        st.binary(max_size=200),
    )


def log_position(api: Api) -> int:
    position: int | None = api.client.app.state.services.stores.app.recorder.max_notification_id()
    return position or 0


def assert_refused_cleanly(response: Any, before: int, api: Api) -> None:
    """A 4xx is a problem document naming what was wrong, and nothing was written."""
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        problem = response.json()
        assert problem["status"] == response.status_code
        if response.status_code in (400, 422):
            assert problem["errors"], problem
            for error in problem["errors"]:
                assert isinstance(error["field"], str) and error["field"]
                assert isinstance(error["reason"], str) and error["reason"]
        assert log_position(api) == before, "a refused request wrote to the event log"


@FUZZ
@given(data=st.data())
def test_no_post_answers_a_5xx_or_writes_when_it_refuses(webhook_api: Api, data: Any) -> None:
    path = data.draw(st.sampled_from(sorted(ROUTES)), label="path")
    body = data.draw(bodies(*ROUTES[path]), label="body")
    before = log_position(webhook_api)
    response = webhook_api.call(
        "POST", path, content=body, headers={"content-type": "application/json"}
    )
    assert_refused_cleanly(response, before, webhook_api)


@FUZZ
@given(data=st.data())
def test_ingest_refuses_bad_events_one_by_one(webhook_api: Api, data: Any) -> None:
    """Bad events get their own error; the valid events beside them are accepted."""
    items = data.draw(
        st.lists(
            st.one_of(st.none(), object_of(EVENT_FIELDS, VALID_EVENT), fragments),
            min_size=1,
            max_size=6,
        ),
        label="events",
    )
    valid: set[int] = set()
    texts = []
    for index, item in enumerate(items):
        if item is None:  # a valid event, with a key never used before
            valid.add(index)
            key = f"fuzz-{log_position(webhook_api)}-{index}-{len(texts)}-{id(items)}"
            texts.append(json.dumps({**VALID_EVENT, "idempotencyKey": key}))
        else:
            texts.append(item)
    body = ('{"events":[' + ",".join(texts) + "]}").encode()
    before = log_position(webhook_api)
    response = webhook_api.call(
        "POST", "/v1/events/ingest", content=body, headers={"content-type": "application/json"}
    )
    if response.status_code != 200:
        # A deep or malformed event may make the whole body unreadable JSON: refused whole.
        assert_refused_cleanly(response, before, webhook_api)
        return
    results = response.json()["results"]
    assert [r["index"] for r in results] == list(range(len(items)))
    for index, result in enumerate(results):
        if index in valid:
            assert result["status"] == "accepted", result
        elif result["status"] == "error":
            assert result["field"] and result["reason"], result
    if not any(r["status"] == "accepted" for r in results):
        assert log_position(webhook_api) == before


@FUZZ
@given(data=st.data())
def test_ingest_bodies_that_are_not_a_batch_are_refused_whole(webhook_api: Api, data: Any) -> None:
    body = data.draw(bodies(["events"]), label="body")
    before = log_position(webhook_api)
    response = webhook_api.call(
        "POST", "/v1/events/ingest", content=body, headers={"content-type": "application/json"}
    )
    assert_refused_cleanly(response, before, webhook_api)


INVOICE_FIELDS = [
    "id",
    "customer",
    "period_start",
    "period_end",
    "status",
    "billing_reason",
    "automatically_finalizes_at",
    "lines",
    "subscription",
]


VALID_INVOICE = {
    "id": "in_fuzz",
    "object": "invoice",
    "customer": "cus_fuzz",
    "subscription": "sub_fuzz",
    "billing_reason": "subscription_cycle",
    "status": "draft",
    "period_start": 1772323200,
    "period_end": 1775001600,
    "automatically_finalizes_at": 1775005200,
}


@st.composite
def webhook_payloads(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["invoice.created", "invoice.finalized", "customer.created"]))
    invoice = draw(st.one_of(object_of(INVOICE_FIELDS, VALID_INVOICE), fragments))
    shape = draw(st.integers(min_value=0, max_value=3))
    if shape == 0:
        return draw(fragments)
    if shape == 1:
        return '{"id":"evt_1","object":"event","data":{"object":' + invoice + "}}"
    return (
        '{"id":"evt_1","object":"event","type":'
        + json.dumps(kind)
        + ',"data":{"object":'
        + invoice
        + "}}"
    )


@FUZZ
@given(payload=webhook_payloads())
def test_signed_webhooks_with_any_payload_never_answer_a_5xx(
    webhook_api: Api, payload: str
) -> None:
    body = payload.encode()
    header = stripe_signature(body)
    before = log_position(webhook_api)
    response = webhook_api.client.post(
        "/v1/stripe/webhooks",
        content=body,
        headers={"Stripe-Signature": header, "content-type": "application/json"},
    )
    assert_refused_cleanly(response, before, webhook_api)


def test_ingest_bodies_nested_too_deeply_outside_any_event_are_refused_whole(api: Api) -> None:
    """Unbalanced brackets nest deep where no event ends: refused whole, not decoded (a 500)."""
    for body in (b'{"events":' + b"[" * 3000, b'{"events":[1,' + b'{"a":' * 3000):
        before = log_position(api)
        response = api.call(
            "POST", "/v1/events/ingest", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422, response.text
        assert response.json()["errors"] == [
            {"field": "body", "reason": "must nest at most 64 levels deep"}
        ]
        assert log_position(api) == before


def test_ingest_bytes_that_are_not_utf8_refuse_their_event_or_the_body(api: Api) -> None:
    """A value that is no UTF-8 is that event's error (the others are written), or a 400."""
    good = b'{"metric":"api_calls","customerRef":"cus_1","quantity":1,"ts":"2026-03-15T11:00:00Z"'
    body = (
        b'{"events":['
        + good
        + b',"idempotencyKey":"utf8-ok"},'
        + good
        + b',"idempotencyKey":"utf8-\xff"},'
        + good
        + b',"meta":{"a":"\xc3"}}]}'
    )
    headers = {"content-type": "application/json"}
    response = api.call("POST", "/v1/events/ingest", content=body, headers=headers)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [(r["status"], r.get("field"), r.get("reason")) for r in results] == [
        ("accepted", None, None),
        ("error", "idempotencyKey", "is not valid UTF-8"),
        ("error", "meta", "is not valid UTF-8"),
    ]
    before = log_position(api)
    whole = b'{"tenantId":"\xff","events":[' + good + b"}]}"
    response = api.call("POST", "/v1/events/ingest", content=whole, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["errors"] == [{"field": "body", "reason": "is not valid UTF-8"}]
    assert log_position(api) == before
