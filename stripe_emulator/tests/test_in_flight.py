"""Meter-event calls in flight at once, counted per customer × event name (v1, v2, stream)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import stripe

from stripe_emulator.server import parser
from stripe_emulator.testing import RunningEmulator
from stripe_emulator.tests.helpers import make_meter, send

LATENCY = 0.4


@pytest.fixture
def customers(client: Any, emu: RunningEmulator) -> tuple[str, str]:
    make_meter(client)
    make_meter(client, "storage")
    emu.configure(meter_event_latency_seconds=LATENCY)
    return str(client.v1.customers.create({}).id), str(client.v1.customers.create({}).id)


def at_once(emu: RunningEmulator, *calls: Callable[[Any], object]) -> None:
    """Start every call together, each on its own SDK client (a worker of its own)."""
    start = threading.Barrier(len(calls))
    errors: list[BaseException] = []

    def run(call: Callable[[Any], object]) -> None:
        start.wait()
        try:
            call(emu.client(max_network_retries=0))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors


def stream(emu: RunningEmulator, client: Any, *events: tuple[str, str]) -> None:
    token = client.v2.billing.meter_event_session.create().authentication_token
    stream_client = stripe.StripeClient(token, base_addresses=emu.base_addresses)  # type: ignore[arg-type]
    stream_client.v2.billing.meter_event_stream.create(
        {
            "events": [
                {"event_name": name, "payload": {"stripe_customer_id": customer, "value": "1"}}
                for customer, name in events
            ]
        }
    )


def test_calls_one_after_another_never_overlap(
    client: Any, emu: RunningEmulator, customers: tuple[str, str]
) -> None:
    a, _ = customers
    send(client, a, 1)
    send(client, a, 2)
    assert emu.in_flight.summary() == {"calls": 2, "keys": 1, "max_concurrent": 1, "overlaps": 0}


def test_two_calls_for_one_customer_and_meter_overlap(
    emu: RunningEmulator, customers: tuple[str, str]
) -> None:
    a, b = customers
    at_once(
        emu,
        lambda c: send(c, a, 1),
        lambda c: send(c, a, 2),
        lambda c: send(c, b, 3),  # another customer: its own key
        lambda c: send(c, a, 4, event_name="storage"),  # another meter: its own key
    )
    report = httpx.get(f"{emu.url}/_emulator/in_flight").json()
    assert (report["calls"], report["keys"]) == (4, 3)
    assert (report["max_concurrent"], report["overlaps"]) == (2, 1)
    assert report["overlapping"] == [
        {"customer": a, "event_name": "api_calls", "max_concurrent": 2, "overlaps": 1}
    ]
    # Counted, not refused: both calls were stored.
    assert sum(t["value"] for t in emu.totals() if t["customer"] == a) == 7


def test_a_stream_call_holds_every_key_among_its_events(
    emu: RunningEmulator, customers: tuple[str, str]
) -> None:
    a, b = customers
    at_once(
        emu,
        # Two events for one key in one call count once: a call does not overlap itself.
        lambda c: stream(emu, c, (a, "api_calls"), (a, "api_calls"), (b, "storage")),
        lambda c: c.v2.billing.meter_events.create(
            {"event_name": "storage", "payload": {"stripe_customer_id": b, "value": "1"}}
        ),
    )
    report = emu.meter_event_overlaps()
    assert (report["max_concurrent"], report["overlaps"]) == (2, 1)
    assert [(k["customer"], k["event_name"]) for k in report["overlapping"]] == [(b, "storage")]


def test_reset_forgets_the_counts(
    client: Any, emu: RunningEmulator, customers: tuple[str, str]
) -> None:
    a, _ = customers
    at_once(emu, lambda c: send(c, a, 1), lambda c: send(c, a, 1, identifier="other"))
    assert httpx.get(f"{emu.url}/_emulator").json()["meter_event_calls_in_flight"]["overlaps"] == 1
    httpx.post(f"{emu.url}/_emulator/reset")
    assert emu.in_flight.summary() == {"calls": 0, "keys": 0, "max_concurrent": 0, "overlaps": 0}


def test_latency_flag_parses() -> None:
    assert parser().parse_args(["--meter-event-latency", "0.2"]).meter_event_latency == 0.2
