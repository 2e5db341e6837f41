"""CloudEvents bodies read by the ingest route's own reader (``read_body``), without a server.

A CloudEvent must stand for exactly the JSON event its attributes map to
(same content, so the same id and the same idempotencyKey are one event),
and whatever it holds, it refuses only itself, naming an attribute.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any
from uuid import uuid4

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.settings import Settings
from api.routes.ingest import read_body
from api.schemas import FieldError
from domain.tenancy import Principal, Scope

VECTORS = Path(__file__).parents[2] / "sdk" / "vectors" / "content-keys.json"
PRINCIPAL = Principal(
    tenant_id=uuid4(), tenant_slug="acme", key_id=uuid4(), scopes=frozenset({Scope.INGEST})
)
SETTINGS = Settings(cloudevents_type_prefixes=("com.acme.usage.",))
BATCH = "application/cloudevents-batch+json"
# Every field a CloudEvent's error may name.
ATTRIBUTES = {
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "data",
    "data.quantity",
    "data.meta",
    "data_base64",
    "body",  # an element of the batch that is no object at all
}


def _vectors() -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = json.loads(VECTORS.read_text(encoding="utf-8"))["vectors"]
    return vectors


def as_cloud_event(event: dict[str, Any], key: str) -> dict[str, Any]:
    data: dict[str, Any] = {"quantity": event["quantity"]}
    if "meta" in event:
        data["meta"] = event["meta"]
    return {
        "specversion": "1.0",
        "id": key,
        "source": "/tests",
        "type": "com.acme.usage." + event["metric"],
        "subject": event["customerRef"],
        "time": event["ts"],
        "data": data,
    }


@pytest.mark.parametrize("vector", _vectors(), ids=lambda v: v["name"])
def test_a_cloudevent_has_the_content_of_the_json_event_it_maps_to(vector: dict[str, Any]) -> None:
    event = vector["event"]
    as_json = json.dumps({"events": [{**event, "idempotencyKey": "k-1"}]}).encode()
    as_cloud = json.dumps([as_cloud_event(event, "k-1")]).encode()
    (json_submission,) = read_body(None, as_json, PRINCIPAL, None, SETTINGS).submissions
    cloud = read_body(BATCH, as_cloud, PRINCIPAL, None, SETTINGS)
    assert cloud.results == [None]
    assert cloud.submissions == [json_submission]


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(["1.0", "", "2026-03-15T11:00:00Z", "application/json", "1e999999999"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)
names = st.sampled_from(
    [
        *("specversion", "id", "source", "type", "subject", "time", "datacontenttype"),
        *("data", "data_base64", "quantity", "meta", "ext"),
    ]
)


@st.composite
def cloud_events(draw: st.DrawFn) -> Any:
    """A valid usage CloudEvent with some attributes (or data's members) changed or dropped."""
    event: dict[str, Any] = as_cloud_event(_vectors()[0]["event"], draw(st.text(max_size=8)))
    for name, value in draw(st.lists(st.tuples(names, values), max_size=4)):
        target = event.get("data") if name in ("quantity", "meta") else event
        if not isinstance(target, dict):
            continue
        if draw(st.booleans()):
            target.pop(name, None)
        else:
            target[name] = value
    return event if draw(st.integers(0, 9)) else draw(values)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(batch=st.lists(cloud_events(), min_size=1, max_size=5))
def test_any_cloudevent_is_written_or_refused_alone_naming_an_attribute(batch: list[Any]) -> None:
    read = read_body(BATCH, json.dumps(batch).encode(), PRINCIPAL, None, SETTINGS)
    assert len(read.results) == len(batch)
    assert sum(r is None for r in read.results) == len(read.submissions)
    for result in read.results:
        if result is not None:
            assert result.field in ATTRIBUTES, result
            assert result.reason


@settings(max_examples=200, derandomize=True, deadline=None)
@given(body=st.one_of(st.binary(max_size=60), values.map(lambda v: json.dumps(v).encode())))
def test_a_body_is_read_or_refused_whole_with_a_client_error(body: bytes) -> None:
    for kind in (BATCH, "application/cloudevents+json"):
        with contextlib.suppress(FieldError, msgspec.DecodeError):  # the route: 422 and 400
            read_body(kind, body, PRINCIPAL, None, SETTINGS)


@pytest.mark.parametrize("key", ["", "a-b", "x y"])
def test_an_unknown_key_in_data_is_named_whatever_it_is(key: str) -> None:
    """A key that is no identifier is still reported as the unknown key of ``data``."""
    event = as_cloud_event(_vectors()[0]["event"], "k-1")
    event["data"][key] = 1
    read = read_body(BATCH, json.dumps([event]).encode(), PRINCIPAL, None, SETTINGS)
    (result,) = read.results
    assert result is not None
    assert (result.field, result.reason) == (
        "data",
        f"holds {key!r}: only quantity and meta are read",
    )
