"""CloudEvents 1.0 on POST /v1/events/ingest (docs/cloudevents.md), over HTTP, on both backends.

Each CloudEvent is the JSON event its attributes map to: the same rules,
results and exactly-once, with errors naming the attribute the client sent.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.settings import Settings
from tests.conftest import FakeClock
from tests.e2e.conftest import Api, _api, event
from tests.e2e.test_fast_ingest import bearer, counted, through_fast_path
from tests.e2e.test_hostile_bodies import (
    FUZZ,
    assert_refused_cleanly,
    fragments,
    log_position,
    object_of,
)

SINGLE = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
PATH = "/v1/events/ingest"
VALID_CLOUD_EVENT: dict[str, Any] = {
    "specversion": "1.0",
    "id": "ce-1",
    "source": "https://app.example.com/billing",
    "type": "api_calls",
    "subject": "cus_1",
    "time": "2026-03-15T11:00:00Z",
    "datacontenttype": "application/json",
    "data": {"quantity": 1},
}
# Every field a CloudEvent's error may name ("body": an element of a batch that is no object).
ATTRIBUTE_FIELDS = {*VALID_CLOUD_EVENT, "data.quantity", "data.meta", "data_base64", "body"}


def cloud_event(**attributes: Any) -> dict[str, Any]:
    """A valid usage CloudEvent (cus_1, api_calls), ``attributes`` changed (None: left out)."""
    base = {**VALID_CLOUD_EVENT, **attributes}
    return {name: value for name, value in base.items() if value is not None}


def send(api: Api, body: Any, content_type: str = SINGLE, **headers: str) -> Any:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return api.call(
        "POST", PATH, content=content, headers={"content-type": content_type, **headers}
    )


def results_of(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


def test_one_cloudevent_counts_once_and_its_id_is_the_idempotency_key(api: Api) -> None:
    first = send(api, cloud_event(id="ce-once", data={"quantity": "2.5"}))
    assert first.json() == {
        "accepted": 1,
        "duplicates": 0,
        "conflicts": 0,
        "errors": 0,
        "results": [{"index": 0, "status": "accepted", "idempotencyKey": "ce-once"}],
    }
    # The producer's retry (a charset parameter now) is the same event.
    again = send(api, cloud_event(id="ce-once", data={"quantity": 2.5}), f"{SINGLE}; charset=utf-8")
    assert results_of(again) == [{"index": 0, "status": "duplicate", "idempotencyKey": "ce-once"}]
    # The same id for other usage is a conflict, named by the attribute that carries the key.
    other = send(api, cloud_event(id="ce-once", data={"quantity": 3}))
    assert results_of(other) == [
        {
            "index": 0,
            "status": "conflict",
            "idempotencyKey": "ce-once",
            "field": "id",
            "reason": "this key was already used for an event with different content",
        }
    ]
    api.settle()
    assert counted(api) == ["2.5"]
    (stored,) = api.call("GET", "/v1/events", params={"customerRef": "cus_1"}).json()["data"]
    assert (stored["metric"], stored["idempotencyKey"], stored["ts"]) == (
        "api_calls",
        "ce-once",
        "2026-03-15T11:00:00Z",
    )


def test_a_cloudevent_and_a_json_event_with_the_same_key_are_one_event(api: Api) -> None:
    meta = {"endpoint": "/v1/search", "region": "eu"}
    assert results_of(send(api, cloud_event(id="shared", data={"quantity": 4, "meta": meta})))[0][
        "status"
    ] == ("accepted")
    same = api.ingest(event(idempotencyKey="shared", quantity="4.0", meta=meta))
    assert same.json()["results"][0]["status"] == "duplicate"
    other = api.ingest(event(idempotencyKey="shared", quantity=4))  # no meta: other content
    assert other.json()["results"][0]["status"] == "conflict"
    # And the other way round: a JSON event first, the CloudEvent after.
    assert api.ingest(event(idempotencyKey="json-first")).json()["accepted"] == 1
    assert results_of(send(api, cloud_event(id="json-first")))[0]["status"] == "duplicate"
    api.settle()
    assert counted(api) == ["5"]


def test_a_batch_gets_one_result_per_event_in_order_and_bad_ones_refuse_only_themselves(
    api: Api,
) -> None:
    batch = [
        cloud_event(id="b-0", data={"quantity": 1, "meta": {"plan": "pro"}}),
        cloud_event(id="b-1", time="yesterday"),
        cloud_event(id="b-2", type="storage_gb"),  # not declared: the writer's refusal
        cloud_event(id="b-3", data={"quantity": -1}),  # api_calls takes no corrections
        cloud_event(id="b-4", time="2026-03-15T12:10:00Z"),  # too far in the future
        cloud_event(id="b-0", data={"quantity": 1, "meta": {"plan": "pro"}}),  # b-0 again
        "not an event",
        cloud_event(id="b-7", data={"quantity": 10}, extension="ignored", traceparent="00-x"),
    ]
    response = send(api, batch, BATCH)
    body = response.json()
    assert (body["accepted"], body["duplicates"], body["errors"]) == (2, 1, 5)
    assert [
        (r["index"], r["status"], r.get("idempotencyKey"), r.get("field")) for r in body["results"]
    ] == [
        (0, "accepted", "b-0", None),
        (1, "error", "b-1", "time"),
        (2, "error", "b-2", "type"),
        (3, "error", "b-3", "data.quantity"),
        (4, "error", "b-4", "time"),
        (5, "duplicate", "b-0", None),
        (6, "error", None, "body"),
        (7, "accepted", "b-7", None),
    ]
    reasons = [r.get("reason") for r in body["results"]]
    assert reasons[2] == "metric 'storage_gb' is not declared"
    assert reasons[4] == "is more than 5 minutes in the future"
    api.settle()
    assert counted(api) == ["11"]


# Each broken attribute, the field its error names and the reason given.
BROKEN: list[tuple[dict[str, Any], str, str]] = [
    ({"specversion": None}, "specversion", "is required"),
    ({"specversion": "0.3"}, "specversion", "must be 1.0"),
    ({"specversion": 1.0}, "specversion", "expected `str`, got `float`"),
    ({"id": None}, "id", "is required: the event's idempotency key"),
    ({"id": ""}, "id", "must not be empty"),
    ({"id": "k" * 256}, "id", "must be at most 255 characters"),
    ({"id": 7}, "id", "expected `str`, got `int`"),
    ({"source": None}, "source", "is required: by the CloudEvents spec"),
    ({"source": ""}, "source", "must not be empty"),
    ({"type": None}, "type", "is required: it names the metric"),
    ({"type": "a\u202eb"}, "type", "must not contain control, separator or bidi characters"),
    ({"subject": None}, "subject", "is required: it names the customer (customerRef)"),
    ({"subject": " "}, "subject", "must not be empty"),
    ({"time": None}, "time", "is required: usage counts at the time it happened"),
    (
        {"time": "2026-03-15 11:00"},
        "time",
        "must be an RFC 3339 timestamp with a time zone, e.g. 2026-01-16T14:30:00Z",
    ),
    (
        {"datacontenttype": "text/plain"},
        "datacontenttype",
        "must be application/json (or left out)",
    ),
    (
        {"datacontenttype": "application/json; charset=latin-1"},
        "datacontenttype",
        "must have charset utf-8, or none: CloudEvents JSON is UTF-8",
    ),
    ({"data": None}, "data", "is required: a JSON object {quantity, meta}"),
    ({"data": 5}, "data", "must be a JSON object {quantity, meta}"),
    (
        {"data": {"quantity": 1, "unit": "x"}},
        "data",
        "holds 'unit': only quantity and meta are read",
    ),
    ({"data": {"meta": {}}}, "data.quantity", "is required"),
    (
        {"data": {"quantity": "1,5"}},
        "data.quantity",
        "must be a number written as in JSON, e.g. 12 or 0.5",
    ),
    ({"data": {"quantity": True}}, "data.quantity", "must be a number or a string holding one"),
    ({"data": {"quantity": 1e15}}, "data.quantity", "must be smaller than 10^15 in magnitude"),
    ({"data": {"quantity": 1, "meta": [1]}}, "data.meta", "expected `object | null`, got `array`"),
    (
        {"data": {"quantity": 1, "meta": {"x": "y" * 5000}}},
        "data.meta",
        "must encode to at most 4096 bytes of JSON",
    ),
    (
        {"data_base64": "eyJxdWFudGl0eSI6MX0=", "data": None},
        "data_base64",
        "is not read: send data as a JSON object {quantity, meta}",
    ),
]


def test_each_broken_attribute_is_named_in_its_events_error(api: Api) -> None:
    batch = [
        cloud_event(**{"id": f"broken-{i}", **change}) for i, (change, _, _) in enumerate(BROKEN)
    ]
    results = results_of(send(api, batch, BATCH))
    assert [(r["status"], r["field"], r["reason"]) for r in results] == [
        ("error", field, reason) for _, field, reason in BROKEN
    ]
    # One event alone (application/cloudevents+json) is judged the same way.
    alone = results_of(send(api, cloud_event(time="2026-02-30T00:00:00Z")))
    assert (alone[0]["field"], alone[0]["reason"]) == ("time", "is not a real date and time")
    api.settle()
    assert counted(api) == []


def test_repeated_attributes_and_keys_refuse_their_event(api: Api) -> None:
    valid = json.dumps(cloud_event(id="rep-ok"))
    texts = [
        valid,
        '{"specversion":"1.0","id":"a","id":"b","source":"s","type":"api_calls",'
        '"subject":"cus_1","time":"2026-03-15T11:00:00Z","data":{"quantity":1}}',
        '{"specversion":"1.0","id":"c","source":"s","type":"api_calls","subject":"cus_1",'
        '"time":"2026-03-15T11:00:00Z","data":{"quantity":1,"quantity":1000}}',
        '{"specversion":"1.0","id":"d","source":"s","type":"api_calls","subject":"cus_1",'
        '"time":"2026-03-15T11:00:00Z","data":{"quantity":1,"meta":{"k":{"x":1,"x":2}}}}',
        # A repeated extension attribute is ignored, like the extension.
        '{"specversion":"1.0","id":"e","source":"s","type":"api_calls","subject":"cus_1",'
        '"time":"2026-03-15T11:00:00Z","data":{"quantity":1},"ext":1,"ext":2}',
    ]
    results = results_of(send(api, ("[" + ",".join(texts) + "]").encode(), BATCH))
    assert [(r["status"], r.get("field"), r.get("reason")) for r in results] == [
        ("accepted", None, None),
        ("error", "id", "appears more than once in one object"),
        ("error", "data.quantity", "appears more than once in one object"),
        ("error", "data.meta", "key 'x' appears more than once in one object"),
        ("accepted", None, None),
    ]


@pytest.fixture
def prefixed_api(settings: Settings, clock: FakeClock) -> Iterator[Api]:
    """The API with STRIPEMETER_CLOUDEVENTS_TYPE_PREFIXES=com.acme.usage.,com.acme."""
    prefixes = Settings.from_env(
        {"STRIPEMETER_CLOUDEVENTS_TYPE_PREFIXES": " com.acme.usage., com.acme.,"}
    ).cloudevents_type_prefixes
    assert prefixes == ("com.acme.usage.", "com.acme.")
    yield from _api(dataclasses.replace(settings, cloudevents_type_prefixes=prefixes), clock)


def test_the_first_matching_type_prefix_is_removed_to_name_the_metric(prefixed_api: Api) -> None:
    batch = [
        cloud_event(id="p-0", type="com.acme.usage.api_calls"),
        cloud_event(id="p-1", type="com.acme.api_calls"),
        cloud_event(id="p-2", type="api_calls"),  # no prefix: the type is the metric
        cloud_event(id="p-3", type="com.acme.usage."),
        cloud_event(id="p-4", type="com.acme.usage.com.acme.api_calls"),  # only the first
        cloud_event(id="p-5", type="org.other.api_calls"),
    ]
    results = results_of(send(prefixed_api, batch, BATCH))
    assert [(r["status"], r.get("field"), r.get("reason")) for r in results] == [
        ("accepted", None, None),
        ("accepted", None, None),
        ("accepted", None, None),
        ("error", "type", "names no metric after the prefix 'com.acme.usage.'"),
        ("error", "type", "metric 'com.acme.api_calls' is not declared"),
        ("error", "type", "metric 'org.other.api_calls' is not declared"),
    ]
    prefixed_api.settle()
    assert counted(prefixed_api) == ["3"]


def test_bodies_that_are_no_cloudevents_are_refused_whole_and_write_nothing(api: Api) -> None:
    deep_meta = '{"quantity":1,"meta":' + '{"a":' * 70 + "1" + "}" * 70 + "}"
    cases: list[tuple[bytes, str, int, str, str]] = [
        (b"", SINGLE, 400, "body", "is not valid JSON"),
        (b"{", SINGLE, 400, "body", "is not valid JSON"),
        (b'{"id": "x"} trailing', SINGLE, 400, "body", "is not valid JSON"),
        (b"[]", SINGLE, 422, "body", "must be one CloudEvent, a JSON object"),
        (b"5", SINGLE, 422, "body", "must be one CloudEvent, a JSON object"),
        (b"nope", SINGLE, 400, "body", "is not valid JSON"),
        (b"{}", BATCH, 422, "body", "must be a JSON array of CloudEvents"),
        (b"[", BATCH, 400, "body", "is not valid JSON"),
        (b"[]", BATCH, 422, "body", "must hold at least one event"),
        (json.dumps([cloud_event()] * 1001).encode(), BATCH, 422, "body", "must hold at most"),
        (b'{"a":' * 3000, BATCH, 422, "body", "must nest at most 64 levels deep"),
        (b"[" * 3000, BATCH, 422, "body", "must nest at most 64 levels deep"),
        (b'{"id":' + b"[" * 3000, SINGLE, 422, "body", "must nest at most 64 levels deep"),
        (b'{"id":' + b"[" * 3000 + b"]" * 3000 + b",}", SINGLE, 400, "body", "is not valid JSON"),
        (
            json.dumps(cloud_event()).encode(),
            f"{SINGLE}; charset=iso-8859-1",
            422,
            "Content-Type",
            "must have charset utf-8",
        ),
        (
            json.dumps(cloud_event()).encode(),
            "application/cloudevents+xml",
            422,
            "Content-Type",
            f"must be {SINGLE} or {BATCH}",
        ),
        # The JSON route is unchanged: a CloudEvent sent as application/json is no batch.
        (json.dumps(cloud_event()).encode(), "application/json", 422, "specversion", "is not a"),
        (deep_meta.encode(), BATCH, 422, "body", "must be a JSON array of CloudEvents"),
    ]
    for body, content_type, status, field, reason in cases:
        response = send(api, body, content_type)
        assert response.status_code == status, (body[:40], response.text)
        problem = response.json()
        assert problem["errors"][0]["field"] == field, problem
        assert problem["errors"][0]["reason"].startswith(reason), problem
    api.settle()
    assert counted(api) == []


def test_an_event_nested_too_deeply_refuses_only_itself(api: Api) -> None:
    deep = {"a": 1}
    for _ in range(70):
        deep = {"a": deep}
    batch = [
        cloud_event(id="deep-0", data={"quantity": 1, "meta": deep}),
        cloud_event(id="deep-1"),
        cloud_event(id="deep-2", data={"quantity": 1, "meta": {"ok": [[[1]]]}}),
        cloud_event(id="deep-3", ext=deep),
        cloud_event(id="deep-4", data={"quantity": deep}),
    ]
    text = json.dumps(batch)[:-1] + "," + "[" * 5000 + "]" * 5000 + "]"
    results = results_of(send(api, text.encode(), BATCH))
    assert [(r["status"], r.get("field"), r.get("reason")) for r in results] == [
        ("error", "data.meta", "must nest at most 32 levels deep"),
        ("accepted", None, None),
        ("accepted", None, None),
        ("error", "ext", "is nested too deeply"),
        ("error", "data", "is nested too deeply"),
        ("error", "body", "must nest at most 64 levels deep"),
    ]
    # Alone, too: meta deeper than its own limit though within the body's.
    shallower: dict[str, Any] = {"a": 1}
    for _ in range(40):
        shallower = {"a": shallower}
    alone = results_of(send(api, cloud_event(data={"quantity": 1, "meta": shallower})))
    assert (alone[0]["field"], alone[0]["reason"]) == (
        "data.meta",
        "must nest at most 32 levels deep",
    )
    one = results_of(send(api, cloud_event(id="deep-alone", data={"quantity": 1, "meta": deep})))
    assert (one[0]["field"], one[0]["reason"]) == ("data.meta", "must nest at most 32 levels deep")


def test_a_body_over_the_size_limit_is_refused(api: Api) -> None:
    limit = api.client.app.request_max_body_size
    assert isinstance(limit, int)
    padded = cloud_event(id="huge", padding="x" * limit)
    response = send(api, padded)
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("application/problem+json")
    # The document says so, for this answer the route gives to any format.
    document = api.call("GET", "/schema/openapi.json", key="").json()
    assert "413" in document["paths"][PATH]["post"]["responses"]
    api.settle()
    assert counted(api) == []


def test_the_fast_path_and_the_route_give_the_same_answer(api: Api) -> None:
    """Cold (the key not yet cached: Litestar's route) and warm (answered below Litestar)."""
    batch = [
        cloud_event(id="same-A", data={"quantity": 2}),
        cloud_event(id="same-A-bad", time="noon"),
        cloud_event(id="same-A-late", type="storage_gb"),
    ]
    cold = send(api, batch, BATCH)
    assert cold.status_code == 200
    again = json.dumps(batch).replace("same-A", "same-B").encode()
    headers = [*bearer(api), (b"content-type", f"{BATCH}; charset=utf-8".encode())]
    warm = through_fast_path(api, again, headers)
    assert warm.handed_on == []  # answered here, by the same code
    assert warm.status == 200
    assert warm.sent[1]["body"] == cold.content.replace(b"same-A", b"same-B")
    # A single event, and a resend that is a duplicate, through the fast path too.
    single = json.dumps(cloud_event(id="same-C")).encode()
    for expected in ("accepted", "duplicate"):
        exchange = through_fast_path(
            api, single, [*bearer(api), (b"content-type", SINGLE.encode())]
        )
        assert exchange.body["results"][0]["status"] == expected
    # What the route refuses whole, the fast path hands on with the body intact.
    for body in (b"[]", b"{", b"5"):
        exchange = through_fast_path(api, body, [*bearer(api), (b"content-type", BATCH.encode())])
        assert (exchange.handed_on, exchange.sent) == ([body], [])
    api.settle()
    assert counted(api) == ["5"]


def test_the_openapi_document_shows_the_cloudevents_bodies(api: Api) -> None:
    document = api.call("GET", "/schema/openapi.json", key="").json()
    content = document["paths"][PATH]["post"]["requestBody"]["content"]
    assert set(content) == {"application/json", SINGLE, BATCH}
    single = content[SINGLE]["schema"]
    assert set(single["required"]) == {
        "specversion",
        "id",
        "source",
        "type",
        "subject",
        "time",
        "data",
    }
    assert set(single["properties"]["data"]["required"]) == {"quantity"}
    assert content[BATCH]["schema"]["type"] == "array"
    assert content[BATCH]["schema"]["items"] == single


CE_FIELDS = [*VALID_CLOUD_EVENT, "data_base64", "ext"]
DATA_FIELDS = ["quantity", "meta"]


@st.composite
def hostile_cloud_events(draw: st.DrawFn) -> str:
    """A CloudEvent as JSON text, some attributes and data members hostile or repeated."""
    data = draw(object_of(DATA_FIELDS, {"quantity": 1}))
    text = draw(object_of(CE_FIELDS, {**VALID_CLOUD_EVENT, "data": "<data>"}))
    return text.replace('"<data>"', data)


@FUZZ
@given(data=st.data())
def test_hostile_cloudevents_refuse_only_themselves_or_the_request_cleanly(
    api: Api, data: Any
) -> None:
    items = data.draw(
        st.lists(st.one_of(st.none(), hostile_cloud_events(), fragments), min_size=1, max_size=5),
        label="events",
    )
    valid: set[int] = set()
    texts = []
    for index, item in enumerate(items):
        if item is None:  # a valid event, with an id never used before
            valid.add(index)
            key = f"fuzz-{log_position(api)}-{index}-{id(items)}"
            texts.append(json.dumps({**VALID_CLOUD_EVENT, "id": key}))
        else:
            texts.append(item)
    single = len(texts) == 1 and data.draw(st.booleans(), label="single")
    body = texts[0] if single else "[" + ",".join(texts) + "]"
    before = log_position(api)
    response = send(api, body.encode(), SINGLE if single else BATCH)
    if response.status_code != 200:
        assert_refused_cleanly(response, before, api)
        return
    results = response.json()["results"]
    assert [r["index"] for r in results] == list(range(len(items)))
    for index, result in enumerate(results):
        if index in valid:
            assert result["status"] == "accepted", result
        elif result["status"] == "error":
            # Any other key (an extension's) is named only when it nests too deeply to read past.
            assert (
                result["field"] in ATTRIBUTE_FIELDS or result["reason"] == "is nested too deeply"
            ), result
            assert result["reason"], result
    if not any(r["status"] == "accepted" for r in results):
        assert log_position(api) == before


def test_an_event_that_is_not_utf8_refuses_only_itself(api: Api) -> None:
    """Bytes that are no UTF-8 inside a value: that event's error, naming its attribute."""
    good = json.dumps(cloud_event(id="utf8-ok")).encode()
    bad_id = good.replace(b'"utf8-ok"', b'"utf8-\xff"')
    bad_meta = json.dumps(cloud_event(id="utf8-meta", data={"quantity": 1, "meta": {"a": "?"}}))
    bad_meta_bytes = bad_meta.encode().replace(b'"?"', b'"\xc3"')
    bad_quantity = json.dumps(cloud_event(id="utf8-q", data={"quantity": "?"}))
    bad_quantity_bytes = bad_quantity.encode().replace(b'"?"', b'"\xff"')
    batch = [good, bad_id, bad_meta_bytes, bad_quantity_bytes]
    results = results_of(send(api, b"[" + b",".join(batch) + b"]", BATCH))
    assert [(r["status"], r.get("field"), r.get("reason")) for r in results] == [
        ("accepted", None, None),
        ("error", "id", "is not valid UTF-8"),
        ("error", "data.meta", "is not valid UTF-8"),
        ("error", "data.quantity", "is not valid UTF-8"),
    ]
    alone = results_of(send(api, bad_id, SINGLE))
    assert (alone[0]["field"], alone[0]["reason"]) == ("id", "is not valid UTF-8")
    # An extension is read past, bytes and all: the error names the attribute read.
    with_extension = results_of(send(api, b'{"ext":"\xff",' + bad_id[1:], SINGLE))
    assert (with_extension[0]["field"], with_extension[0]["reason"]) == ("id", "is not valid UTF-8")
