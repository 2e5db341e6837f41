"""Every field rule of issue 9 over HTTP: the exact answer, and the rest of a batch unharmed."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.tenancy import tenant_id_for
from stripe_emulator.testing import RunningEmulator
from tests.e2e.conftest import Api, event

NOT_A_NUMBER = "must be a number written as in JSON, e.g. 12 or 0.5"
TOO_BIG = "must be smaller than 10^15 in magnitude"
TOO_FINE = "must have at most 12 decimal places"
CONTROLS = "must not contain control, separator or bidi characters"
OUT_OF_YEARS = "is outside years 0001 to 9999 once in UTC"
PAST_HORIZON = (
    "is older than the ingest horizon of 35 days before now"
    " (the tenant's setting: stripemeter tenants horizon)"
)
META_DEPTH = "must nest at most 32 levels deep"
REPEATED = "appears more than once in one object"
GOOD = json.dumps(event(idempotencyKey="good"))


def post(api: Api, path: str, body: bytes | str, **kwargs: Any) -> Any:
    content = body.encode() if isinstance(body, str) else body
    headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
    return api.call("POST", path, content=content, headers=headers, **kwargs)


def event_text(**fields: Any) -> str:
    """An event as JSON text, ``fields`` spliced in as raw JSON (numbers no float can hold)."""
    base = {k: json.dumps(v) for k, v in event().items()}
    base.update(fields)
    return "{" + ",".join(f'"{k}":{v}' for k, v in base.items()) + "}"


def deep_meta(levels: int) -> str:
    return '{"a":' + "[" * (levels - 1) + "]" * (levels - 1) + "}"


@pytest.mark.parametrize(
    ("bad", "field", "reason"),
    [
        (event_text(quantity='"1e999999999"'), "quantity", TOO_BIG),
        (event_text(quantity="1e999999999"), "quantity", TOO_BIG),
        (event_text(quantity='"1e-999999999"'), "quantity", TOO_FINE),
        (event_text(quantity="1e-999999999"), "quantity", TOO_FINE),
        (event_text(quantity='"5_000"'), "quantity", NOT_A_NUMBER),
        (event_text(quantity='" 5 "'), "quantity", NOT_A_NUMBER),
        (event_text(quantity='"١٢"'), "quantity", NOT_A_NUMBER),
        (event_text(quantity="true"), "quantity", "must be a number or a string holding one"),
        (event_text(ts='"0001-01-01T00:00:00+23:59"'), "ts", OUT_OF_YEARS),
        (event_text(ts='"9999-12-31T23:59:59-23:59"'), "ts", OUT_OF_YEARS),
        (event_text(ts='"1970-01-01T00:00:00Z"'), "ts", PAST_HORIZON),
        (event_text(ts='"0001-01-01T00:00:00Z"'), "ts", PAST_HORIZON),
        (event_text(ts='"2026-02-08T11:59:59Z"'), "ts", PAST_HORIZON),  # 35 days and 1 s ago
        (event_text(meta=deep_meta(1000)), "meta", META_DEPTH),  # ~2 KB, past any decoder
        (event_text(meta=deep_meta(100)), "meta", META_DEPTH),
        (event_text(meta=deep_meta(33)), "meta", META_DEPTH),
        (event_text(customerRef='"a\\u007fb"'), "customerRef", CONTROLS),
        (event_text(customerRef='"a\\u0085b"'), "customerRef", CONTROLS),
        (event_text(customerRef='"a\\u009bb"'), "customerRef", CONTROLS),
        (event_text(customerRef='"a\\u2028b"'), "customerRef", CONTROLS),
        (event_text(customerRef='"a\\u2029b"'), "customerRef", CONTROLS),
        (event_text(customerRef='"a\\u202eb"'), "customerRef", CONTROLS),
        (event_text(customerRef='"a\\u2066b"'), "customerRef", CONTROLS),
        (event_text(metric='"api\\u202ecalls"'), "metric", CONTROLS),
        (event_text(idempotencyKey='"k\\u0000"'), "idempotencyKey", CONTROLS),
        ('{"quantity":1,' + event_text(quantity="1000")[1:], "quantity", REPEATED),
        ('{"qu\\u0061ntity":1,' + event_text()[1:], "quantity", REPEATED),
        (event_text(meta='{"a":1,"a":2}'), "meta", "key 'a' appears more than once in one object"),
    ],
)
def test_a_bad_field_is_one_events_error_and_the_batch_goes_on(
    api: Api, bad: str, field: str, reason: str
) -> None:
    response = post(api, "/v1/events/ingest", f'{{"events":[{GOOD},{bad}]}}')
    assert response.status_code == 200, response.text
    good, refused = response.json()["results"]
    assert good["status"] == "accepted"
    assert (refused["status"], refused["field"], refused["reason"]) == ("error", field, reason)
    api.settle()
    assert len(api.call("GET", "/v1/events").json()["data"]) == 1


def test_the_edges_of_the_rules_are_accepted(api: Api) -> None:
    response = post(
        api,
        "/v1/events/ingest",
        '{"events":['
        + ",".join(
            [
                event_text(quantity='"999999999999999"', idempotencyKey='"a"'),
                event_text(quantity="0.000000000001", idempotencyKey='"b"'),
                event_text(ts='"2026-02-08T12:00:00Z"', idempotencyKey='"c"'),  # 35 days ago
                event_text(meta=deep_meta(32), idempotencyKey='"d"'),
                event_text(customerRef='"客户 ١٢"', idempotencyKey='"e"'),
            ]
        )
        + "]}",
    )
    assert [r["status"] for r in response.json()["results"]] == ["accepted"] * 5


def test_an_event_nested_past_any_decoder_is_its_own_error(api: Api) -> None:
    deep = "[" * 5000 + "]" * 5000
    deep_in_meta = event_text(meta='{"x":' + deep + "}")
    deep_quantity = event_text(quantity=deep)
    body = f'{{"events":[{GOOD},{deep},{deep_in_meta},{deep_quantity}]}}'
    response = post(api, "/v1/events/ingest", body)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["accepted", "error", "error", "error"]
    assert [(r.get("field"), r.get("reason")) for r in results[1:]] == [
        ("body", "must nest at most 64 levels deep"),
        ("meta", META_DEPTH),
        ("quantity", "is nested too deeply"),
    ]


@pytest.mark.parametrize(
    ("body", "status", "field", "reason"),
    [
        ('{"events":[' + GOOD + '],"colour":"red"}', 422, "colour", "is not a known field"),
        ('{"events":[],"events":[' + GOOD + "]}", 422, "events", REPEATED),
        (
            '{"events":[' + GOOD + '],"x":' + "[" * 3000 + "]" * 3000 + "}",
            422,
            "x",
            "must nest at most 64 levels deep",
        ),
        ("[" * 3000 + "]" * 3000, 422, "body", "must nest at most 64 levels deep"),
    ],
)
def test_a_bad_top_level_is_one_4xx_and_nothing_is_written(
    api: Api, body: str, status: int, field: str, reason: str
) -> None:
    response = post(api, "/v1/events/ingest", body)
    assert response.status_code == status
    assert response.json()["errors"] == [{"field": field, "reason": reason}]
    api.settle()
    assert api.call("GET", "/v1/events").json()["data"] == []


def test_a_top_level_tenant_id_must_be_the_keys_tenant(api: Api) -> None:
    own = api.call("POST", "/v1/events/ingest", json={"tenantId": "acme", "events": [event()]})
    assert [r["status"] for r in own.json()["results"]] == ["accepted"]
    other = api.call(
        "POST",
        "/v1/events/ingest",
        json={"tenantId": "globex", "events": [event(idempotencyKey="x")]},
    )
    assert other.status_code == 403
    assert other.json()["detail"] == "tenantId does not match the API key's tenant"
    api.settle()
    assert len(api.call("GET", "/v1/events").json()["data"]) == 1


def test_a_longer_horizon_takes_older_history(api: Api) -> None:
    old = event(ts="2025-03-15T11:00:00Z", idempotencyKey="history")
    assert api.ingest(old).json()["results"][0]["field"] == "ts"
    app = api.client.app.state.services.stores.app
    assert app.set_ingest_horizon(tenant_id_for("acme"), 400) is True
    assert app.set_ingest_horizon(tenant_id_for("acme"), 400) is False
    result = api.ingest(old).json()["results"][0]
    assert (result["status"], result["late"]) == ("accepted", "carried")
    assert api.ingest(event(ts="2025-01-01T00:00:00Z"), key="acme-all").json()["results"][0][
        "reason"
    ] == PAST_HORIZON.replace("35 days", "400 days")
    # The other tenant keeps the default.
    refused = api.ingest(old, key="globex-all").json()["results"][0]
    assert (refused["field"], refused["reason"]) == ("ts", PAST_HORIZON)


def test_explicit_keys_never_collide_with_derived_ones(api: Api) -> None:
    by_header = api.ingest(event(quantity=1), headers={"Idempotency-Key": "req"})
    explicit = api.ingest(event(quantity=2, idempotencyKey="req#0"))
    assert [r["status"] for r in by_header.json()["results"]] == ["accepted"]
    assert explicit.json()["results"][0] == {
        "index": 0,
        "status": "accepted",
        "idempotencyKey": "req#0",
    }
    by_content = api.ingest(event(quantity=3)).json()["results"][0]
    content_key = by_content["idempotencyKey"]
    assert content_key.startswith("content:")
    chosen = api.ingest(event(quantity=4, idempotencyKey=content_key)).json()["results"][0]
    assert chosen["status"] == "accepted"
    # Each is still a duplicate of itself.
    assert api.ingest(event(quantity=3)).json()["results"][0]["status"] == "duplicate"
    retry = api.ingest(event(quantity=1), headers={"Idempotency-Key": "req"}).json()
    assert retry["results"][0]["status"] == "duplicate"


# -- the other routes: 422 with errors: [{field, reason}] ------------------------------


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        (
            '{"customerRef":"cus_1","metric":"api_calls","quantity":1e999999999,"reason":"x"}',
            "quantity",
            TOO_BIG,
        ),
        (
            '{"customerRef":"cus_1","metric":"api_calls","quantity":"1e-999999999","reason":"x"}',
            "quantity",
            TOO_FINE,
        ),
        (
            '{"customerRef":"cus_1","metric":"api_calls","quantity":"5_000","reason":"x"}',
            "quantity",
            NOT_A_NUMBER,
        ),
        (
            '{"customerRef":"cus_1","metric":"api_calls","quantity":1,"reason":"a\\u0000b"}',
            "reason",
            CONTROLS,
        ),
        (
            '{"customerRef":"cus_1","metric":"api_calls","quantity":1,"reason":"\\u001b[31mred"}',
            "reason",
            CONTROLS,
        ),
        (
            '{"customerRef":"' + "x" * 256 + '","metric":"api_calls","quantity":1,"reason":"x"}',
            "customerRef",
            "must be at most 255 characters",
        ),
        (
            '{"customerRef":"a\\u202eb","metric":"api_calls","quantity":1,"reason":"x"}',
            "customerRef",
            CONTROLS,
        ),
        (
            '{"customerRef":"cus_1","metric":"api_calls","quantity":1,"reason":"x","actor":"a\\u0085"}',
            "actor",
            CONTROLS,
        ),
        (
            '{"customerRef":"cus_1","metric":"api_calls","quantity":1,"quantity":9,"reason":"x"}',
            "quantity",
            REPEATED,
        ),
    ],
)
def test_an_adjustment_follows_the_same_field_rules(
    api: Api, body: str, field: str, reason: str
) -> None:
    response = post(api, "/v1/adjustments", body)
    assert response.status_code == 422, response.text
    assert response.json()["errors"] == [{"field": field, "reason": reason}]
    assert api.call("GET", "/v1/adjustments").json()["data"] == []


def test_the_idempotency_key_header_has_one_rule(api: Api) -> None:
    for path, body in (
        ("/v1/events/ingest", json.dumps({"events": [event()]})),
        (
            "/v1/adjustments",
            '{"customerRef":"cus_1","metric":"api_calls","quantity":1,"reason":"x"}',
        ),
    ):
        response = post(api, path, body, headers={"Idempotency-Key": "k" * 201})
        assert response.json()["errors"] == [
            {"field": "Idempotency-Key", "reason": "must be at most 200 characters"}
        ]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("since=0001-01-01T00:00:00%2B23:59", "since"),
        ("until=9999-12-31T23:59:59-23:59", "until"),
    ],
)
def test_a_time_query_with_an_extreme_offset_is_a_422(api: Api, query: str, field: str) -> None:
    response = api.call("GET", f"/v1/events?{query}")
    assert response.status_code == 422
    assert response.json()["errors"] == [{"field": field, "reason": OUT_OF_YEARS}]


def test_a_replay_range_with_an_extreme_offset_is_a_422(api: Api) -> None:
    response = api.call(
        "POST",
        "/v1/replay",
        json={"since": "0001-01-01T00:00:00+23:59", "until": "2026-03-01T00:00:00Z"},
    )
    assert response.status_code == 422
    assert response.json()["errors"] == [{"field": "since", "reason": OUT_OF_YEARS}]


def test_a_meter_body_refuses_repeated_keys(api: Api) -> None:
    response = post(api, "/v1/meters", '{"name":"a","aggregation":"sum","name":"b"}')
    assert response.status_code == 422
    assert response.json()["errors"] == [{"field": "name", "reason": REPEATED}]


@pytest.mark.parametrize("field", ["stripeEventName", "shadowEventName"])
def test_a_mapping_takes_stripe_event_names_by_the_meters_rule(
    stripe_api: Api, emulator: RunningEmulator, field: str
) -> None:
    response = stripe_api.call(
        "POST", "/v1/mappings", json={"metric": "api_calls", "createMeter": True, field: "a\r\nb"}
    )
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {
            "field": field,
            "reason": "must be 1 to 100 characters of A-Z, a-z, 0-9, '_', '.', ':', '-'",
        }
    ]
    meters = emulator.client().v1.billing.meters.list().data
    assert [m.event_name for m in meters] == []  # no meter was created


@pytest.mark.parametrize("anchor", ["0001-01-01T00:00:00Z", "9999-12-31T00:00:00Z"])
def test_a_billing_cycle_anchor_outside_2000_to_2099_is_refused(
    stripe_api: Api, emulator: RunningEmulator, anchor: str
) -> None:
    live = emulator.client().v1.customers.create({"name": "c"}).id
    response = stripe_api.call(
        "POST",
        "/v1/customers",
        json={"customerRef": "cus_1", "stripeCustomerId": live, "billingCycleAnchor": anchor},
    )
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"field": "billingCycleAnchor", "reason": "must be in the years 2000 to 2099"}
    ]


# -- hostile input: never a 5xx, and the good event of the batch is always taken ------------

ANY_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3)
    ),
    max_leaves=12,
)
FIELDS = st.sampled_from(["metric", "customerRef", "quantity", "ts", "idempotencyKey", "meta", "x"])


@given(st.dictionaries(FIELDS, ANY_JSON, max_size=4), st.binary(max_size=40))
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_arbitrary_events_never_cost_the_good_one_or_a_500(
    api: Api, changes: dict[str, Any], noise: bytes
) -> None:
    bad = json.dumps({**event(), **changes})
    good = json.dumps(event(idempotencyKey="always-good"))
    response = post(api, "/v1/events/ingest", f'{{"events":[{good},{bad}]}}')
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["status"] in ("accepted", "duplicate")
    garbage = post(api, "/v1/events/ingest", b'{"events":[' + noise)
    assert garbage.status_code < 500
