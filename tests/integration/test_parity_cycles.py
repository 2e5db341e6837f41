"""Pre-invoice parity over several billing cycles, against the emulator, on both backends.

Three customers with their own Stripe billing anchors (one with seconds,
one on the 31st) are billed for three cycles while usage keeps arriving:
on time, late but inside the grace period (stamped before the period end),
after the period closed (carried into the open period as a correction),
stamped just after a period end, and sent twice. Stripe fails on purpose
(503s, and writes whose response never arrives) and the service restarts
now and then. The loop below is what the worker does: push what Stripe
lacks, close periods before their invoice finalises, record parity.

The promise checked at the end: every finalised invoice's quantity for the
meter equals the local total of that period, and every closed period
recorded parity.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from adapters.closing import PeriodCloser
from adapters.metrics import Metrics
from adapters.persistence import Stores, open_stores
from adapters.settings import Settings
from adapters.stripe_gateway import SdkStripeGateway
from domain.ingest import Outcome
from domain.mappings import MeterMapping
from domain.meters import Aggregation, MetricDefinition
from domain.pushing import STRIPE_MAX_AGE, PushService, Target, whole_units
from domain.usage import UsagePeriod, usage_period_id
from stripe_emulator.testing import TEST_API_KEY, RunningEmulator
from tests.conftest import FakeClock
from tests.helpers import submission

START = datetime(2026, 1, 20, 0, 0, tzinfo=UTC)
ANCHORS = {
    "alpha": datetime(2026, 2, 5, 10, 30, 15, tzinfo=UTC),  # seconds: not minute-aligned
    "bravo": datetime(2026, 1, 31, 0, 0, tzinfo=UTC),  # the 31st: Feb 28, then Mar 31
    "charlie": datetime(2026, 2, 15, 12, 0, tzinfo=UTC),
}
GRACE = timedelta(hours=1)
MARGIN = timedelta(minutes=10)


class Service:
    """One run of the service: stores, push service, closer; restarted at will."""

    def __init__(self, settings: Settings, clock: FakeClock, url: str) -> None:
        self.settings, self.clock, self.url = settings, clock, url
        self.open()

    def open(self) -> None:
        self.stores: Stores = open_stores(self.settings, self.clock)
        gateway = SdkStripeGateway(TEST_API_KEY, self.url, max_network_retries=0, timeout_seconds=3)
        self.pusher = PushService(self.stores.app, {Target.LIVE: gateway}, self.clock)
        self.closer = PeriodCloser(
            self.stores,
            gateway,
            self.pusher,
            Metrics(),
            self.clock,
            grace=GRACE,
            margin=MARGIN,
            summary_lag=timedelta(0),
        )

    def restart(self) -> None:
        self.stores.close()
        self.open()

    def work(self) -> None:
        """One turn of the worker: views, pushes, closing."""
        views = self.stores.views
        views.runner.catch_up()
        for candidate in views.ledger.candidates("live", self.clock.now - STRIPE_MAX_AGE):
            if candidate.needs_push():
                self.pusher.push(candidate.usage_period_id, Target.LIVE)
        views.runner.catch_up()
        self.closer.close_due()
        views.runner.catch_up()


@dataclass
class Catalog:
    """What a parity test bills with: a sum meter, its metered price, the tenant mapping it."""

    meter_id: str
    price_id: str
    tenant: UUID


def stripe_setup(
    service: Service, emulator: RunningEmulator, unit_amount_decimal: str = "1"
) -> Catalog:
    """A meter and a monthly metered price in Stripe, and tenant acme with api_calls on it."""
    stripe = emulator.client()
    meter = stripe.v1.billing.meters.create(
        {
            "display_name": "API calls",
            "event_name": "sm_api_calls",
            "default_aggregation": {"formula": "sum"},
            "customer_mapping": {"type": "by_id", "event_payload_key": "stripe_customer_id"},
            "value_settings": {"event_payload_key": "value"},
        }
    )
    price = stripe.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount_decimal": unit_amount_decimal,
            "product_data": {"name": "API calls"},
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    )
    app = service.stores.app
    tenant = app.register_tenant("acme", "Acme").id
    app.declare_metric(tenant, MetricDefinition("api_calls", Aggregation.SUM))
    app.map_meter(tenant, MeterMapping("api_calls", meter.id, "sm_api_calls", "sum"))
    return Catalog(meter.id, price.id, tenant)


@pytest.fixture
def service(settings: Settings, clock: FakeClock, emulator: RunningEmulator) -> Iterator[Service]:
    clock.now = START
    emulator.set_now(int(START.timestamp()), frozen=True)
    svc = Service(settings, clock, emulator.url)
    yield svc
    svc.stores.close()


def ts(moment: datetime) -> int:
    return int(moment.timestamp())


def test_every_invoice_equals_the_local_total_over_three_cycles(
    service: Service, clock: FakeClock, emulator: RunningEmulator
) -> None:
    rng = random.Random(7)
    stripe = emulator.client()
    catalog = stripe_setup(service, emulator, unit_amount_decimal="0.1")
    app, tenant = service.stores.app, catalog.tenant
    subscriptions: dict[str, Any] = {}
    for name, anchor in ANCHORS.items():
        customer = stripe.v1.customers.create({"name": name})
        subscriptions[name] = stripe.v1.subscriptions.create(
            {
                "customer": customer.id,
                "items": [{"price": catalog.price_id}],
                "billing_cycle_anchor": ts(anchor),
            }
        )
        app.map_customer(
            tenant,
            name,
            customer.id,
            datetime.fromtimestamp(subscriptions[name].billing_cycle_anchor, UTC),
        )

    # The usage: when each event happens and when it reaches StripeMeter.
    planned: list[tuple[datetime, datetime, str, int, str]] = []  # arrives, occurs, who, qty, key
    end = START + timedelta(days=92)
    for number in range(600):
        who = rng.choice(list(ANCHORS))
        occurs = START + timedelta(seconds=rng.randrange(int((end - START).total_seconds())))
        planned.append((occurs, occurs, who, rng.randint(1, 9), f"k{number}"))
    for who in ANCHORS:
        for cycle in range(3):
            period = app.period_for(tenant, who, START + timedelta(days=7 + 31 * cycle))
            boundary = period.end
            minute, second = timedelta(minutes=1), timedelta(seconds=1)
            planned += [
                # stamped before the end, arrives in the grace period: counted in the old period
                (boundary + 20 * minute, boundary - 5 * second, who, 5, f"g{who}{cycle}"),
                # stamped just after the end: the next period
                (boundary + minute, boundary + second, who, 3, f"n{who}{cycle}"),
                # arrives after the close, before finalisation: carried into the open period
                (boundary + 55 * minute, boundary - minute, who, 7, f"c{who}{cycle}"),
            ]
    duplicates = rng.sample(planned, 40)
    planned += [(arrives + timedelta(hours=2), *rest) for arrives, *rest in duplicates]  # type: ignore[misc]
    planned.sort()

    # Checkpoints: every 6 hours, and densely around each period end.
    moments = {START + timedelta(hours=6 * i) for i in range(4 * 92)}
    for who in ANCHORS:
        for cycle in range(4):
            boundary = app.period_for(tenant, who, START + timedelta(days=7 + 31 * cycle)).end
            for minutes in (0, 2, 21, 40, 50, 51, 52, 54, 56, 58, 61, 66, 80):
                moments.add(boundary + timedelta(minutes=minutes))
    emulator.set_fault_rates({"503": 0.1, "timeout_after_write": 0.03}, seed=11)

    index = 0
    outcomes: dict[str, int] = {}
    for step, moment in enumerate(sorted(m for m in moments if m <= end)):
        clock.now = moment
        emulator.set_now(ts(moment), frozen=True)  # bills (drafts, finalises) what came due
        batch = []
        while index < len(planned) and planned[index][0] <= moment:
            _, occurs, who, quantity, key = planned[index]
            batch.append(submission(tenant, Decimal(quantity), occurs, key=key, customer=who))
            index += 1
        if batch:
            for result in service.stores.app.usage.record_usage(batch):
                label = result.late.value if result.late else result.outcome.value
                outcomes[label] = outcomes.get(label, 0) + 1
        service.work()
        if step % 50 == 49:
            service.restart()
    emulator.set_fault_rates({})
    service.work()

    # The scenario really happened: late, carried and duplicate events, and faults.
    assert outcomes.get("in_window", 0) >= 9 and outcomes.get("carried", 0) >= 9, outcomes
    assert outcomes.get(Outcome.DUPLICATE.value, 0) >= 40, outcomes
    assert len(emulator.describe()["faults"]["injected"]) > 0

    app = service.stores.app
    checked = 0
    for who, subscription in subscriptions.items():
        invoices = stripe.v1.invoices.list({"subscription": subscription.id, "limit": 100})
        for invoice in invoices.data:
            if invoice.billing_reason != "subscription_cycle" or invoice.status == "draft":
                continue
            start = datetime.fromtimestamp(invoice.period_start, UTC)
            period = app.period_for(tenant, who, start)
            period_id = usage_period_id(tenant, who, "api_calls", period.key)
            local: UsagePeriod = app.repository.get(period_id)
            [line] = [x for x in invoice.lines.data if x.quantity is not None]
            assert (who, period.key, line.quantity) == (who, period.key, whole_units(local.value))
            assert local.closed and local.verdict == "parity", (who, period.key)
            checked += 1
    assert checked >= 8  # three customers, about three cycles each
