"""Events are checked, normalised and keyed on the client, as the server keys them."""

from __future__ import annotations

import itertools
import json
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sdk_service import VECTORS

from stripemeter import RetryPolicy, UsageEvent, canonical_form, content_key, to_cloudevent

VECTOR_LIST: list[dict[str, Any]] = json.loads(VECTORS.read_text())["vectors"]


@pytest.mark.parametrize("vector", VECTOR_LIST, ids=[v["name"] for v in VECTOR_LIST])
def test_the_shared_vectors_give_the_servers_canonical_form_and_key(vector: dict[str, Any]) -> None:
    event = vector["event"]
    args = (
        event["metric"],
        event["customerRef"],
        event["quantity"],
        event["ts"],
        event.get("meta"),
    )
    assert canonical_form(*args) == vector["canonical"]
    assert content_key(*args) == vector["key"]
    built = UsageEvent.from_dict(event)
    assert built.canonical == vector["canonical"]
    assert built.idempotency_key == built.content_key == vector["key"]
    assert built.key_is_derived


def test_the_vectors_from_their_wire_text_key_the_same() -> None:
    for vector in VECTOR_LIST:
        assert UsageEvent.from_dict(json.loads(vector["wire"])).content_key == vector["key"]


def test_a_derived_key_is_shown_but_never_sent() -> None:
    event = UsageEvent.create("api_calls", "cus_1", 2, "2026-03-15T11:00:00Z")
    assert event.idempotency_key.startswith("content:")
    assert "idempotencyKey" not in event.to_wire()
    chosen = UsageEvent.create("api_calls", "cus_1", 2, idempotency_key="req-1")
    assert chosen.idempotency_key == "req-1"
    assert chosen.to_wire()["idempotencyKey"] == "req-1"
    assert not chosen.key_is_derived


def test_without_ts_or_key_an_event_gets_a_random_key_sent_with_it() -> None:
    """Two workers' identical events in one microsecond would share a content key: one lost."""
    first, second = (UsageEvent.create("api_calls", "cus_1", 2) for _ in range(2))
    assert first.idempotency_key.startswith("evt-")
    assert first.idempotency_key != second.idempotency_key
    assert first.to_wire()["idempotencyKey"] == first.idempotency_key
    assert not first.key_is_derived
    keyed = UsageEvent.create("api_calls", "cus_1", 2, idempotency_key="req-1")
    assert keyed.idempotency_key == "req-1"


def test_ts_is_fixed_when_the_event_is_created_not_when_sent() -> None:
    before = datetime.now(timezone.utc)
    event = UsageEvent.create("api_calls", "cus_1", 1)
    time.sleep(0.01)
    assert before <= event.ts <= datetime.now(timezone.utc)
    assert event.to_wire() == event.to_wire()
    assert event.to_wire()["ts"] == event.ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_events_without_ts_are_distinct_even_when_created_in_the_same_microsecond() -> None:
    events = [UsageEvent.create("api_calls", "cus_1", 1) for _ in range(10_000)]
    assert len({e.content_key for e in events}) == 10_000
    assert all(a.ts < b.ts for a, b in itertools.pairwise(events))


def test_the_wire_form_is_camel_case_with_exact_quantities() -> None:
    moment = datetime(2026, 1, 16, 15, 30, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    event = UsageEvent.create("gb_hours", "cus_1", 0.1, moment, {"b": 1, "a": [1.5]})
    assert event.to_wire() == {
        "metric": "gb_hours",
        "customerRef": "cus_1",
        "quantity": "0.1",
        "ts": "2026-01-16T14:30:00.123456Z",
        "meta": {"b": 1, "a": [1.5]},
    }
    assert UsageEvent.create("m", "c", Decimal("1.500E+3"), moment).to_wire()["quantity"] == 1500
    assert UsageEvent.create("m", "c", "-0.0", moment).to_wire()["quantity"] == 0


def test_meta_is_copied_so_later_changes_do_not_change_the_event() -> None:
    meta: dict[str, Any] = {"endpoint": "/a"}
    event = UsageEvent.create("api_calls", "cus_1", 1, meta=meta)
    key = event.content_key
    meta["endpoint"] = "/b"
    assert event.meta == {"endpoint": "/a"}
    assert event.to_wire()["meta"] == {"endpoint": "/a"}
    assert (
        UsageEvent.create("api_calls", "cus_1", 1, event.ts, {"endpoint": "/a"}).content_key == key
    )


@pytest.mark.parametrize(
    ("kwargs", "kind", "names"),
    [
        ({"ts": datetime(2026, 1, 1)}, ValueError, "ts"),
        ({"ts": "2026-01-16T14:30:00"}, ValueError, "ts"),
        ({"ts": "2026-02-30T14:30:00Z"}, ValueError, "ts"),
        ({"quantity": float("nan")}, ValueError, "quantity"),
        ({"quantity": float("inf")}, ValueError, "quantity"),
        ({"quantity": Decimal("Infinity")}, ValueError, "quantity"),
        ({"quantity": "5_000"}, ValueError, "quantity"),
        ({"quantity": " 5"}, ValueError, "quantity"),
        ({"quantity": "1e999999999"}, ValueError, "magnitude"),
        ({"quantity": "1e-999999999"}, ValueError, "decimal places"),
        ({"ts": "0001-01-01T00:00:00+23:59"}, ValueError, "years 0001 to 9999"),
        ({"quantity": "1e15"}, ValueError, "quantity"),
        ({"quantity": Decimal("1.0000000000001")}, ValueError, "quantity"),
        ({"quantity": True}, TypeError, "quantity"),
        ({"quantity": [1]}, TypeError, "quantity"),
        ({"meta": {"x": float("nan")}}, ValueError, "meta"),
        ({"meta": ["x"]}, TypeError, "meta"),
        ({"metric": ""}, ValueError, "metric"),
    ],
)
def test_what_the_server_would_refuse_or_cannot_be_keyed_is_refused_here(
    kwargs: dict[str, Any], kind: type[Exception], names: str
) -> None:
    values: dict[str, Any] = {"metric": "api_calls", "customer_ref": "cus_1", "quantity": 1}
    values.update(kwargs)
    with pytest.raises(kind, match=names):
        UsageEvent.create(**values)


def test_twelve_places_and_just_below_ten_to_the_fifteen_are_taken() -> None:
    assert str(UsageEvent.create("m", "c", "99.000000000001").quantity) == "99.000000000001"
    assert (
        UsageEvent.create("m", "c", 999_999_999_999_999).to_wire()["quantity"]
        == 999_999_999_999_999
    )


def test_from_dict_takes_snake_case_and_refuses_unknown_fields() -> None:
    event = UsageEvent.from_dict(
        {"metric": "m", "customer_ref": "c", "quantity": 1, "idempotency_key": "k"}
    )
    assert (event.customer_ref, event.explicit_key) == ("c", "k")
    with pytest.raises(ValueError, match="customerref"):
        UsageEvent.from_dict({"metric": "m", "customerref": "c", "quantity": 1})
    with pytest.raises(ValueError, match="quantity"):
        UsageEvent.from_dict({"metric": "m", "customerRef": "c"})


def test_a_usage_event_as_a_cloudevent() -> None:
    event = UsageEvent.create("api_calls", "cus_1", "2.50", "2026-01-16T14:30:00Z", {"a": 1})
    assert to_cloudevent(event, source="app") == {
        "specversion": "1.0",
        "id": event.content_key,
        "source": "app",
        "subject": "cus_1",
        "type": "api_calls",
        "time": "2026-01-16T14:30:00.000000Z",
        "data": {"quantity": "2.5", "meta": {"a": 1}},
    }


def test_backoff_is_full_jitter_under_a_growing_ceiling_and_honours_retry_after() -> None:
    policy = RetryPolicy(max_attempts=5, initial_delay=0.5, max_delay=3.0, max_retry_after=10)
    for attempt, ceiling in ((1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (9, 3.0)):
        waits = [policy.delay(attempt) for _ in range(200)]
        assert all(0 <= w <= ceiling for w in waits)
        assert max(waits) > ceiling / 2  # spread over the range, not a fixed step
    assert policy.delay(1, retry_after=4) == 4
    assert policy.delay(1, retry_after=100) == 10
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


def test_an_event_built_directly_is_normalised_and_keyed_the_same() -> None:
    moment = datetime(2026, 1, 16, 15, 30, tzinfo=timezone(timedelta(hours=1)))
    direct = UsageEvent("api_calls", "cus_123", Decimal("100.0"), moment)
    made = UsageEvent.create("api_calls", "cus_123", 100, "2026-01-16T14:30:00Z")
    assert direct == made
    assert direct.content_key == made.content_key == VECTOR_LIST[0]["key"]
    with pytest.raises(ValueError, match="ts"):
        UsageEvent("api_calls", "cus_123", Decimal(1), datetime(2026, 1, 16))
    with pytest.raises(ValueError, match="customer_ref"):
        UsageEvent("api_calls", "", Decimal(1), moment)


def test_the_wire_time_is_rfc_3339_even_where_the_key_follows_the_servers_strftime() -> None:
    early = UsageEvent.create("m", "c", 1, datetime(999, 5, 6, 7, 8, 9, 5, tzinfo=timezone.utc))
    assert early.to_wire()["ts"] == "0999-05-06T07:08:09.000005Z"
    assert early.canonical.splitlines()[3] == early.ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_a_long_retry_policy_keeps_its_ceiling_however_many_attempts() -> None:
    # Riding out an hours-long outage: thousands of attempts under an 8 s ceiling.
    policy = RetryPolicy(max_attempts=10_000)
    assert all(0 <= policy.delay(attempt) <= policy.max_delay for attempt in (1_025, 9_999))
