"""Alerts on a Stripe test clock: the customer's own cycle, moved on by advancing the clock.

StripeMeter lives in the test clock's time (its clock reads the emulator's
test clock, as ``stripemeter demo parity`` does), and the customer's periods
follow their subscription's billing cycle anchor. Advancing the test clock
past the period's end resolves the incident, and the alert triggers again in
the next period: alerts recur per period, on test clocks too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from adapters.settings import Settings, StripeSettings
from stripe_emulator.testing import TEST_API_KEY, RunningEmulator
from tests.conftest import FakeClock
from tests.e2e.conftest import Api, _api, event

START = datetime(2026, 1, 15, tzinfo=UTC)  # the test clock's first moment, and the anchor


class StripeTestClockTime(FakeClock):
    """The application's clock: the time of one emulator test clock."""

    def __init__(self, emulator: RunningEmulator, clock_id: str) -> None:
        super().__init__(START)
        self.emulator, self.clock_id = emulator, clock_id

    def __call__(self) -> datetime:
        return datetime.fromtimestamp(self.emulator.state.now_on(self.clock_id), UTC)


@dataclasses.dataclass
class OnTestClock:
    api: Api
    stripe: Any
    clock_id: str

    def advance(self, moment: datetime) -> None:
        self.stripe.v1.test_helpers.test_clocks.advance(
            self.clock_id, {"frozen_time": int(moment.timestamp())}
        )

    def sweep(self) -> int:
        evaluator = self.api.client.app.state.services.stores.views.alert_evaluator
        return int(evaluator.sweep())


@pytest.fixture
def on_clock(settings: Settings, emulator: RunningEmulator) -> Iterator[OnTestClock]:
    stripe = emulator.client(max_network_retries=0)
    test_clock = stripe.v1.test_helpers.test_clocks.create(
        {"frozen_time": int(START.timestamp()), "name": "alerts"}
    )
    customer = stripe.v1.customers.create({"name": "Acme's customer", "test_clock": test_clock.id})
    meter = stripe.v1.billing.meters.create(
        {
            "display_name": "API calls",
            "event_name": "api_calls",
            "default_aggregation": {"formula": "sum"},
            "customer_mapping": {"type": "by_id", "event_payload_key": "stripe_customer_id"},
            "value_settings": {"event_payload_key": "value"},
        }
    )
    price = stripe.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount_decimal": "2",
            "product_data": {"name": "API calls"},
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    )
    stripe.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}]})
    live = StripeSettings(
        secret_key=TEST_API_KEY, api_base=emulator.url, max_network_retries=0, timeout_seconds=5
    )
    clock = StripeTestClockTime(emulator, test_clock.id)
    for api in _api(dataclasses.replace(settings, stripe=live), clock):
        mapped = api.call(
            "POST", "/v1/mappings", json={"metric": "api_calls", "stripeMeterId": meter.id}
        )
        assert mapped.status_code == 201, mapped.text
        body = {"customerRef": "cus_1", "stripeCustomerId": customer.id}
        mapped = api.call("POST", "/v1/customers", json=body)
        assert mapped.status_code == 201, mapped.text
        assert mapped.json()["billingCycleAnchor"] == "2026-01-15T00:00:00Z"
        yield OnTestClock(api, stripe, test_clock.id)


def test_the_period_moves_on_with_the_test_clock_and_the_alert_recurs(
    on_clock: OnTestClock,
) -> None:
    api = on_clock.api
    alert = api.call(
        "POST", "/v1/alerts", json={"metric": "api_calls", "kind": "usage", "threshold": 10}
    ).json()
    incidents = f"/v1/alerts/{alert['id']}/incidents"

    # Five days into the customer's cycle (not a calendar month): 12 calls.
    on_clock.advance(datetime(2026, 1, 20, tzinfo=UTC))
    assert api.ingest(event(quantity=12, ts="2026-01-20T00:00:00Z")).status_code == 200
    api.settle()
    [first] = api.call("GET", incidents).json()["data"]
    assert (first["period"], first["periodEnd"], first["status"]) == (
        "2026-01-15T00:00:00Z",
        "2026-02-15T00:00:00Z",
        "triggered",
    )
    assert first["triggeredAt"] == "2026-01-20T00:00:00Z"  # the test clock's time

    # The test clock moves past the cycle's end: the sweep resolves the incident.
    on_clock.advance(datetime(2026, 2, 16, tzinfo=UTC))
    assert on_clock.sweep() == 1
    api.settle()
    [ended] = api.call("GET", incidents).json()["data"]
    assert (ended["status"], ended["resolvedBecause"], ended["resolvedAt"]) == (
        "resolved",
        "period_ended",
        "2026-02-16T00:00:00Z",
    )

    # Usage in the new cycle: the alert triggers again, for that period.
    assert api.ingest(event(quantity=11, ts="2026-02-16T00:00:00Z")).status_code == 200
    api.settle()
    latest, earlier = api.call("GET", incidents).json()["data"]
    assert (latest["period"], latest["status"], latest["observed"]) == (
        "2026-02-15T00:00:00Z",
        "triggered",
        "11",
    )
    assert earlier["id"] == first["id"] and earlier["status"] == "resolved"
    assert on_clock.sweep() == 0  # nothing more to do: each breach triggered once
