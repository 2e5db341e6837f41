"""The field rules (domain/fields.py) and the JSON shape checks, value by value."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain import fields, json_shape
from domain.errors import InvalidInputError

NOT_A_NUMBER = "must be a number written as in JSON, e.g. 12 or 0.5"
TOO_BIG = "must be smaller than 10^15 in magnitude"
TOO_FINE = "must have at most 12 decimal places"
CONTROLS = "must not contain control, separator or bidi characters"


def refused(call: object, *args: object) -> tuple[str, str]:
    with pytest.raises(InvalidInputError) as caught:
        call(*args)  # type: ignore[operator]
    return caught.value.field, caught.value.reason


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("12", Decimal(12)),
        ("0.5", Decimal("0.5")),
        ("-3", Decimal(-3)),
        ("1.50", Decimal("1.5")),
        ("1e3", Decimal(1000)),
        ("1E-12", Decimal("1E-12")),
        ("0.000000000001", Decimal("1E-12")),
        ("1.0000000000000000000000000000000000", Decimal(1)),  # trailing zeros are no places
        ("999999999999999", Decimal("999999999999999")),
        ("0", Decimal(0)),
        ("-0.0", Decimal(0)),
        ("0e999999999", Decimal(0)),
        ("100000000000000000000e-20", Decimal(1)),
    ],
)
def test_a_quantity_in_json_number_grammar_is_read_exactly(text: str, value: Decimal) -> None:
    parsed = fields.quantity(text)
    assert parsed == value
    assert str(parsed) == str(value)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("1e999999999", TOO_BIG),
        ("1e99999999999999999999", TOO_BIG),
        ("1e15", TOO_BIG),
        ("-1000000000000000", TOO_BIG),
        ("1e-999999999", TOO_FINE),
        ("1e-99999999999999999999", TOO_FINE),
        ("0.0000000000001", TOO_FINE),
        ("5_000", NOT_A_NUMBER),
        (" 5 ", NOT_A_NUMBER),
        ("5 ", NOT_A_NUMBER),
        ("١٢", NOT_A_NUMBER),
        ("+5", NOT_A_NUMBER),
        (".5", NOT_A_NUMBER),
        ("5.", NOT_A_NUMBER),
        ("05", NOT_A_NUMBER),
        ("0x10", NOT_A_NUMBER),
        ("", NOT_A_NUMBER),
        ("NaN", "must be a finite number"),
        ("-Infinity", "must be a finite number"),
    ],
)
def test_a_quantity_outside_the_rule_is_refused_before_any_arithmetic(
    text: str, reason: str
) -> None:
    assert refused(fields.quantity, text) == ("quantity", reason)


def test_a_decimal_quantity_follows_the_same_rule() -> None:
    assert fields.decimal_quantity(Decimal("2.50")) == Decimal("2.5")
    assert refused(fields.decimal_quantity, Decimal("1e999999999")) == ("quantity", TOO_BIG)
    assert refused(fields.decimal_quantity, Decimal("1e-13")) == ("quantity", TOO_FINE)
    assert refused(fields.decimal_quantity, Decimal("NaN")) == ("quantity", NOT_A_NUMBER)


@pytest.mark.parametrize(
    "bad",
    [
        "a\x7fb",
        "a\x85b",
        "a\x9bb",
        "a\u2028b",
        "a\u2029b",
        "a\u202eb",
        "a\u202ab",
        "a\u2066b",
        "a\u2069b",
        "a\x00b",
        "a\x1b[31mb",
        "a\ud800b",
        "a\u200fb",
    ],
)
def test_identifier_text_refuses_controls_separators_and_bidi(bad: str) -> None:
    assert refused(fields.customer_ref, bad) == ("customerRef", CONTROLS)
    assert refused(fields.free_text, "reason", bad) == ("reason", CONTROLS)


def test_identifier_text_takes_any_visible_unicode_within_its_length() -> None:
    assert fields.customer_ref("客户-١٢ é") == "客户-١٢ é"
    assert fields.customer_ref("x" * 255) == "x" * 255
    assert refused(fields.customer_ref, "x" * 256) == (
        "customerRef",
        "must be at most 255 characters",
    )
    assert refused(fields.metric, "m" * 65) == ("metric", "must be at most 64 characters")
    assert refused(fields.customer_ref, "  ") == ("customerRef", "must not be empty")
    assert fields.free_text("reason", "  SLA credit  ") == "SLA credit"


@pytest.mark.parametrize(
    "value", ["0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+00:01"]
)
def test_a_time_whose_offset_leaves_years_1_to_9999_is_refused(value: str) -> None:
    assert refused(fields.timestamp, "ts", value) == (
        "ts",
        "is outside years 0001 to 9999 once in UTC",
    )


def test_a_time_is_read_as_utc() -> None:
    assert fields.timestamp("ts", "0001-01-01T00:00:00-23:59") == datetime(
        1, 1, 1, 23, 59, tzinfo=UTC
    )
    assert fields.timestamp("ts", "2026-03-15T11:00:00.123456789+01:00") == datetime(
        2026, 3, 15, 10, 0, 0, 123456, tzinfo=UTC
    )
    assert refused(fields.timestamp, "ts", "２０２６-03-15T11:00:00Z")[0] == "ts"  # ASCII only


def test_a_billing_cycle_anchor_lies_in_2000_to_2099() -> None:
    reason = "must be in the years 2000 to 2099"
    for moment in (datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC)):
        assert refused(fields.billing_cycle_anchor, moment) == ("billingCycleAnchor", reason)
    assert fields.billing_cycle_anchor(datetime(2000, 1, 1, tzinfo=UTC)).year == 2000


def test_a_stripe_event_name_has_one_rule() -> None:
    reason = "must be 1 to 100 characters of A-Z, a-z, 0-9, '_', '.', ':', '-'"
    assert refused(fields.stripe_event_name, "a\r\nb") == ("stripeEventName", reason)
    assert refused(fields.stripe_event_name, "a\r\nb", "shadowEventName")[0] == "shadowEventName"
    assert fields.stripe_event_name("api_calls.v2") == "api_calls.v2"


def test_meta_nests_at_most_32_levels() -> None:
    def nested(levels: int) -> dict[str, object]:
        meta: dict[str, object] = {}
        for _ in range(levels - 1):
            meta = {"a": meta}
        return meta

    def listed(levels: int) -> dict[str, object]:
        value: list[object] = []
        for _ in range(levels - 2):
            value = [value]
        return {"a": value}  # arrays count as levels too

    reason = ("meta", "must nest at most 32 levels deep")
    assert fields.meta_keys(nested(32)) == 31
    assert fields.meta_keys(listed(32)) == 1
    assert fields.meta_keys({"a": [{"b": 1, "c": {"d": 2}}], "e": None}) == 5
    assert refused(fields.meta_keys, nested(33)) == reason
    assert refused(fields.meta_keys, listed(33)) == reason


@pytest.mark.parametrize(
    ("data", "key", "top"),
    [
        (b'{"quantity":1,"quantity":1000}', "quantity", True),
        (b'{"quantity":1,"qu\\u0061ntity":1000}', "quantity", True),
        (b'{"meta":{"a":1,"b":{"a":2},"a":3}}', "a", False),
        (b'{"a":"x\\"y","a":2}', "a", True),
    ],
)
def test_a_repeated_key_in_one_object_is_found(data: bytes, key: str, top: bool) -> None:
    assert json_shape.duplicate_key(data) == json_shape.RepeatedKey(key, top)


@pytest.mark.parametrize(
    "data",
    [
        b'{"a":1,"b":2}',
        b'{"a":{"x":1},"b":{"x":2}}',  # equal keys in different objects
        b'{"a":["a:",":"],"b":"\\"a\\":"}',  # colons and quotes inside strings
        b'[{"a":1},{"a":1}]',
    ],
)
def test_equal_keys_in_different_objects_are_not_repeats(data: bytes) -> None:
    assert json_shape.duplicate_key(data) is None


@pytest.mark.parametrize(
    ("data", "bound"),
    [
        (b'{"a":1,"b":{"c":2}}', 3),
        (b'{"a" :1, "a"\n:2}', 2),  # whitespace before the colon still counts
        (b'{"a":": x"}', 2),  # a string that starts with a colon counts too: an upper bound
        (b'{"a"":1}', 1),
    ],
)
def test_the_cheap_key_count_never_counts_fewer_keys_than_were_sent(
    data: bytes, bound: int
) -> None:
    assert json_shape.keys_at_most(data) == bound


def test_nesting_is_judged_without_recursion() -> None:
    deep = b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert not json_shape.shallow(deep, 64)
    assert json_shape.depth(deep) == 100_001
    assert json_shape.shallow(b'{"a":[[["]]]]]]"]]]}', 64)  # few brackets: shallow
    confusing = b'{"a":"' + b"[" * 100 + b'"}'  # brackets in a string: the cheap check cannot tell
    assert not json_shape.shallow(confusing, 64)
    assert json_shape.depth(confusing) == 1
    assert json_shape.depth(b'{"a":"[[[[[["}') == 1
    members = json_shape.members(b'{"x": 1, "events": [{"a": [1]}, 2], "s": "}"}')
    assert [(m.key, m.depth) for m in members] == [("x", 0), ("events", 3), ("s", 0)]


# -- properties: whatever the input, the answer is a value or an InvalidInputError --------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def nesting(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max(map(nesting, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(nesting, value), default=0)
    return 0


@given(st.text())
@settings(max_examples=300)
def test_any_text_is_a_quantity_or_an_invalid_input(text: str) -> None:
    try:
        value = fields.quantity(text)
    except InvalidInputError as error:
        assert error.field == "quantity"
    else:
        assert abs(value) < Decimal(10) ** 15
        assert value == Decimal(text.strip())


@given(JSON, st.booleans())
@settings(max_examples=300)
def test_the_shape_of_any_json_text_is_read_right(value: object, pretty: bool) -> None:
    data = json.dumps(value, indent=1 if pretty else None).encode()
    assert json_shape.duplicate_key(data) is None  # Python dicts cannot repeat a key
    assert json_shape.depth(data) == nesting(value)
    assert json_shape.keys_at_most(data) >= data.count(b'":')
    if isinstance(value, dict | list):
        members = json_shape.members(data)
        assert [json.loads(data[m.start : m.end]) for m in members] == list(
            value.values() if isinstance(value, dict) else value
        )
        if isinstance(value, dict):
            assert [m.key for m in members] == list(value)
            text = data.decode()
            repeated = text[:1] + '"k":1,"k":2,' + text[1:] if value else '{"k":1,"k":2}'
            assert json_shape.duplicate_key(repeated.encode()) == json_shape.RepeatedKey("k", True)
