"""Meter event summaries: formulas, grouping windows, alignment, pagination, lag."""

from __future__ import annotations

import time
from typing import Any

import pytest
import stripe

from stripe_emulator.testing import RunningEmulator
from stripe_emulator.tests.helpers import make_meter, send

HOUR = 3600
T0 = 21_991 * 86_400  # a UTC midnight (2030-04-07)


@pytest.fixture
def at_t0(emu: RunningEmulator) -> RunningEmulator:
    """Freeze the wall clock a few hours after T0 so event times are exact."""
    emu.set_now(T0 + 5 * HOUR, frozen=True)
    return emu


def summaries(client: Any, meter: str, customer: str, start: int, end: int, **extra: Any) -> Any:
    return client.v1.billing.meters.event_summaries.list(
        meter, {"customer": customer, "start_time": start, "end_time": end, **extra}
    )


@pytest.mark.parametrize(("formula", "expected"), [("sum", 7), ("count", 3), ("last", 4)])
def test_formulas(client: Any, at_t0: RunningEmulator, formula: str, expected: int) -> None:
    meter = make_meter(client, formula=formula)
    customer = client.v1.customers.create({}).id
    # Received out of order: "last" means the latest timestamp, not the latest arrival.
    send(client, customer, 4, timestamp=T0 + 300)
    send(client, customer, 5, timestamp=T0 + 120)
    send(client, customer, -2, timestamp=T0 + 60)
    [summary] = summaries(client, meter.id, customer, T0, T0 + HOUR).data
    assert summary.aggregated_value == expected
    assert (summary.start_time, summary.end_time) == (T0, T0 + HOUR)


def test_end_time_is_exclusive(client: Any, at_t0: RunningEmulator) -> None:
    meter = make_meter(client)
    customer = client.v1.customers.create({}).id
    send(client, customer, 1, timestamp=T0)
    send(client, customer, 10, timestamp=T0 + 60)
    assert summaries(client, meter.id, customer, T0, T0 + 60).data[0].aggregated_value == 1


def test_hourly_grouping_and_pagination(client: Any, at_t0: RunningEmulator) -> None:
    meter = make_meter(client)
    customer = client.v1.customers.create({}).id
    for hour in range(4):
        send(client, customer, hour + 1, timestamp=T0 + hour * HOUR + 30)
    first = summaries(
        client, meter.id, customer, T0, T0 + 5 * HOUR, value_grouping_window="hour", limit=3
    )
    assert [s.aggregated_value for s in first.data] == [4, 3, 2]  # newest window first
    assert first.has_more is True
    rest = summaries(
        client, meter.id, customer, T0, T0 + 5 * HOUR,
        value_grouping_window="hour", limit=3, starting_after=first.data[-1].id,
    )  # fmt: skip
    assert [s.aggregated_value for s in rest.data] == [1]
    assert rest.has_more is False
    [day] = summaries(
        client, meter.id, customer, T0, T0 + 24 * HOUR, value_grouping_window="day"
    ).data
    assert day.aggregated_value == 10


@pytest.mark.parametrize(
    ("start", "end", "window"),
    [
        (T0 + 1, T0 + HOUR, None),
        (T0, T0 + 90, None),
        (T0 + 60, T0 + HOUR, "hour"),
        (T0, T0 + HOUR, "day"),
    ],
)
def test_non_aligned_windows_are_rejected(
    client: Any, at_t0: RunningEmulator, start: int, end: int, window: str | None
) -> None:
    meter = make_meter(client)
    customer = client.v1.customers.create({}).id
    extra = {"value_grouping_window": window} if window else {}
    with pytest.raises(stripe.InvalidRequestError) as raised:
        summaries(client, meter.id, customer, start, end, **extra)
    assert raised.value.param in ("start_time", "end_time")


def test_cancelled_events_do_not_count(client: Any, at_t0: RunningEmulator) -> None:
    meter = make_meter(client)
    customer = client.v1.customers.create({}).id
    send(client, customer, 5, identifier="keep", timestamp=T0 + 60)
    send(client, customer, 7, identifier="drop", timestamp=T0 + 60)
    client.v1.billing.meter_event_adjustments.create(
        {"event_name": "api_calls", "cancel": {"identifier": "drop"}, "type": "cancel"}
    )
    assert summaries(client, meter.id, customer, T0, T0 + HOUR).data[0].aggregated_value == 5


def test_eventual_consistency_lag(client: Any, emu: RunningEmulator) -> None:
    emu.set_summary_lag(0.3)
    meter = make_meter(client)
    customer = client.v1.customers.create({}).id
    now = emu.now()
    start = now - now % 60 - 60
    send(client, customer, 3)
    assert summaries(client, meter.id, customer, start, start + 180).data[0].aggregated_value == 0
    assert emu.totals()[0]["value"] == 3  # stored at once, only not yet visible
    time.sleep(0.35)
    assert summaries(client, meter.id, customer, start, start + 180).data[0].aggregated_value == 3


def test_module_style_summaries(module_stripe: Any, at_t0: RunningEmulator) -> None:
    meter = stripe.billing.Meter.create(
        display_name="m", event_name="api_calls", default_aggregation={"formula": "sum"}
    )
    customer = stripe.Customer.create()
    stripe.billing.MeterEvent.create(
        event_name="api_calls",
        payload={"stripe_customer_id": customer.id, "value": "6"},
        timestamp=T0 + 10,
    )
    result = stripe.billing.Meter.list_event_summaries(
        meter.id, customer=customer.id, start_time=T0, end_time=T0 + HOUR
    )
    assert result.data[0].aggregated_value == 6
