"""Edges of moving usage between cycles: where a move could lose, double or misreport.

Found in review; each test states what the service must do, and each failed on
the first version of domain/cycle_moves.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from adapters.event_log import RecorderEventLog
from adapters.persistence import Stores, open_stores
from adapters.settings import Settings
from adapters.stripe_gateway import SdkStripeGateway
from domain.ingest import Outcome
from domain.meters import Aggregation, MetricDefinition
from domain.pushing import summary_window
from domain.usage import usage_period_id
from projections.replay import CounterReplayer, ReplayQuery
from stripe_emulator.testing import TEST_API_KEY, RunningEmulator
from tests.conftest import FakeClock
from tests.helpers import submission
from tests.integration.test_map_after_usage import (
    FEB_20,
    MAR_1,
    at,
    mapper,
    period,
)
from tests.integration.test_parity_cycles import Service, stripe_setup, ts
from tests.integration.test_replay import dump


@pytest.fixture
def service(settings: Settings, clock: FakeClock, emulator: RunningEmulator) -> Iterator[Service]:
    clock.now = FEB_20
    emulator.set_now(ts(FEB_20), frozen=True)
    svc = Service(settings, clock, emulator.url)
    yield svc
    svc.stores.close()


APR_1 = datetime(2026, 4, 1, tzinfo=UTC)


def test_a_replay_after_a_move_finds_nothing_to_change(stores: Stores, clock: FakeClock) -> None:
    """Counters and hours as the runner keeps them are right after a move: a dry-run replay
    over the month must find nothing to change, and applying it must change no row."""
    app = stores.app
    tenant = app.register_tenant("acme", "Acme").id
    app.declare_metric(tenant, MetricDefinition("api_calls", Aggregation.SUM))
    clock.now = at(12)
    app.usage.record_usage(
        [submission(tenant, 5, at(5), key="a"), submission(tenant, 6, at(10), key="b")]
    )
    app.map_customer(tenant, "cus_1", "cus_stripe_1", at(3))  # calendar March moves whole
    stores.views.runner.catch_up()

    replayer = CounterReplayer(
        stores.views.counters, RecorderEventLog(stores.app.recorder, stores.app.mapper)
    )
    before = dump(stores)
    page = replayer.run(ReplayQuery(tenant, MAR_1, APR_1), apply=True)

    assert [(c.info.period, c.hours) for c in page.changed] == []
    assert dump(stores) == before  # the hours of the moved usage are still there


def test_usage_written_by_a_writer_with_an_old_copy_into_a_new_calendar_period_is_billed(
    settings: Settings, clock: FakeClock, service: Service, emulator: RunningEmulator
) -> None:
    """The writer process cached the customer as unmapped (for up to five seconds) when it
    counted another metric's usage; the customer has no api_calls this month yet. Its next
    api_calls write, after the mapping committed, opens calendar March, which no invoice
    covers and no later move visits. That usage must still reach Stripe."""
    s = stripe_setup(service, emulator)
    service.stores.app.declare_metric(s.tenant, MetricDefinition("seats", Aggregation.MAX))
    stripe_customer = emulator.client().v1.customers.create({"name": "late writer"}).id
    clock.now = at(5)
    emulator.set_now(int(clock.now.timestamp()), frozen=True)
    other: Stores = open_stores(settings, clock)
    try:
        seats = submission(s.tenant, 3, at(5), key="s", metric="seats")
        assert other.app.usage.record_usage([seats])[0].outcome is Outcome.ACCEPTED
        service.stores.app.map_customer(s.tenant, "cus_1", stripe_customer, at(3))
        written = other.app.usage.record_usage([submission(s.tenant, 5, at(5), key="a")])
    finally:
        other.close()
    assert written[0].outcome is Outcome.ACCEPTED
    service.work()

    app = service.stores.app
    billed = app.period_for(s.tenant, "cus_1", at(5))
    assert billed.key == "2026-03-03T12:00:00Z"
    gateway = SdkStripeGateway(TEST_API_KEY, emulator.url, max_network_retries=0)
    window = summary_window(billed.start, billed.end)
    # The 5 units sit in calendar period 2026-03, which no invoice covers: never pushed.
    counted = {
        key: period(service, s.tenant, "cus_1", key).value
        for key in ("2026-03", "2026-03-03T12:00:00Z")
        if app.recorded_period(usage_period_id(s.tenant, "cus_1", "api_calls", key))
    }
    assert counted.get("2026-03-03T12:00:00Z", Decimal(0)) == 5, counted
    assert gateway.meter_total(s.meter_id, stripe_customer, *window) == 5


def test_usage_pushed_ahead_into_the_next_period_is_not_pushed_again_after_an_anchor_change(
    service: Service, clock: FakeClock, emulator: RunningEmulator
) -> None:
    """Usage stamped a few minutes ahead (allowed: five) lands in the old cycle's next period
    and is pushed, stamped at that period's start. The anchor then changes: that period is
    none of the customer's any more and its usage moves to the new cycle's first period,
    whose window holds the earlier push. Stripe must hold each unit once."""
    s = stripe_setup(service, emulator)
    app = service.stores.app
    stripe_customer = emulator.client().v1.customers.create({"name": "ahead"}).id
    clock.now = at(2)
    app.map_customer(s.tenant, "cus_1", stripe_customer, MAR_1)
    apr_1 = datetime(2026, 4, 1, tzinfo=UTC)
    clock.now = apr_1 - timedelta(minutes=3)
    emulator.set_now(int(clock.now.timestamp()), frozen=True)
    written = app.usage.record_usage(
        [submission(s.tenant, 5, apr_1 + timedelta(minutes=1), key="ahead")]
    )
    assert written[0].outcome is Outcome.ACCEPTED
    clock.now = apr_1 - timedelta(minutes=2)
    service.work()  # pushed in period 2026-04-01T00:00:00Z, stamped at its start
    gateway = SdkStripeGateway(TEST_API_KEY, emulator.url, max_network_retries=0)
    next_period = period(service, s.tenant, "cus_1", "2026-04-01T00:00:00Z")
    assert next_period.value == 5

    clock.now = apr_1 - timedelta(minutes=1)
    new_anchor = clock.now
    app.map_customer(s.tenant, "cus_1", stripe_customer, new_anchor)
    clock.now = apr_1 + timedelta(minutes=3)
    emulator.set_now(int(clock.now.timestamp()), frozen=True)
    service.work()

    first = app.period_for(s.tenant, "cus_1", apr_1 + timedelta(minutes=1))
    assert first.start == new_anchor
    local = period(service, s.tenant, "cus_1", first.key)
    assert local.value == 5
    window = summary_window(first.start, first.end)
    assert gateway.meter_total(s.meter_id, stripe_customer, *window) == 5


def test_pushes_made_in_the_minute_before_an_anchor_change_stay_in_the_cut_periods_window(
    service: Service, clock: FakeClock, emulator: RunningEmulator
) -> None:
    """The new cycle starts at the mapping call, to the second. A push made earlier in that
    same minute is stamped inside the old period, but the cut period's summary window ends
    at the minute's start: Stripe's total over it must still equal the counter, and its
    closing must find parity."""
    s = stripe_setup(service, emulator)
    app = service.stores.app
    stripe_customer = emulator.client().v1.customers.create({"name": "busy"}).id
    clock.now = at(2)
    app.map_customer(s.tenant, "cus_1", stripe_customer, MAR_1)
    clock.now = at(20) + timedelta(seconds=10)
    emulator.set_now(int(clock.now.timestamp()), frozen=True)
    app.usage.record_usage([submission(s.tenant, 5, at(20) + timedelta(seconds=5), key="busy")])
    service.work()  # pushed, stamped 12:00:05
    clock.now = at(20) + timedelta(seconds=40)
    app.map_customer(s.tenant, "cus_1", stripe_customer, clock.now)

    first = period(service, s.tenant, "cus_1", "2026-03-01T00:00:00Z")
    # The new cycle starts on the next whole minute: the push stays inside the cut period.
    assert (first.period_end, first.value) == (at(20) + timedelta(minutes=1), Decimal(5))
    gateway = SdkStripeGateway(TEST_API_KEY, emulator.url, max_network_retries=0)
    window = summary_window(first.period_start, first.period_end)
    assert gateway.meter_total(s.meter_id, stripe_customer, *window) == 5


def test_usage_moved_into_a_period_whose_invoice_is_already_final_is_billed_somewhere(
    service: Service, clock: FakeClock, emulator: RunningEmulator
) -> None:
    """The subscription started on Feb 20 (anchor Mar 1) and its first cycle's invoice was
    final on Mar 1; the customer is mapped on Mar 5 with Feb 25 usage counted in calendar
    February. Moved into Feb 20 - Mar 1, it reaches no invoice: a final invoice cannot
    change, so the usage must become a visible correction, never a period that claims
    parity with an invoice that billed none of it."""
    s = stripe_setup(service, emulator)  # clock and emulator at Feb 20
    stripe = emulator.client()
    customer = stripe.v1.customers.create({"name": "late mapping"})
    subscription = stripe.v1.subscriptions.create(
        {
            "customer": customer.id,
            "items": [{"price": s.price_id}],
            "billing_cycle_anchor": int(MAR_1.timestamp()),
        }
    )
    clock.now = at(25, 2)
    service.stores.app.usage.record_usage([submission(s.tenant, 4, at(25, 2), key="feb")])
    clock.now = at(5)
    emulator.set_now(int(clock.now.timestamp()), frozen=True)  # Feb 20 - Mar 1 is invoiced
    [invoice] = [
        i
        for i in stripe.v1.invoices.list({"subscription": subscription.id}).data
        if i.billing_reason == "subscription_cycle"
    ]
    assert invoice.status != "draft"
    [line] = [x for x in invoice.lines.data if x.quantity is not None]
    assert line.quantity == 0

    mapper(service, emulator).map_customer(s.tenant, "cus_1", customer.id)
    for _ in range(3):
        service.work()

    app = service.stores.app
    natural = app.period_for(s.tenant, "cus_1", at(25, 2))
    assert natural.end == MAR_1
    moved = app.recorded_period(usage_period_id(s.tenant, "cus_1", "api_calls", natural.key))
    # That period must not count what its final invoice never billed, or must not claim
    # parity with it (the units then owe a visible correction).
    assert moved is None or moved.value == line.quantity or moved.verdict != "parity"
    # Its lateness window had passed: it counts in the period open at the mapping, billed.
    march = period(service, s.tenant, "cus_1", app.period_for(s.tenant, "cus_1", at(5)).key)
    assert march.value == 4


def test_a_cycle_starting_in_the_first_second_of_a_period_names_a_period_of_its_own(
    stores: Stores, clock: FakeClock
) -> None:
    """A new cycle starts at the mapping call, with the clock's microseconds; its first
    period is named to the second. When the call falls in the first second of a period of
    the old cycle, both periods get the same key, hence the same aggregate."""
    app = stores.app
    tenant = app.register_tenant("acme", "Acme").id
    app.declare_metric(tenant, MetricDefinition("api_calls", Aggregation.SUM))
    clock.now = at(2)
    app.map_customer(tenant, "cus_1", "cus_stripe_1", MAR_1)
    clock.now = APR_1 + timedelta(microseconds=300_000)
    app.usage.record_usage([submission(tenant, 2, APR_1 + timedelta(milliseconds=100), key="a")])
    app.map_customer(tenant, "cus_1", "cus_stripe_1", at(15))  # the new cycle starts now
    clock.now = at(2, 4)
    written = app.usage.record_usage([submission(tenant, 3, at(2, 4), key="b")])
    assert written[0].outcome is Outcome.ACCEPTED

    new = app.period_for(tenant, "cus_1", at(2, 4))
    counted = app.usage_period(tenant, "cus_1", "api_calls", new.key)
    # "b" must count in a period that holds Apr 2, apart from "a" (Apr 1, 00:00:00.1).
    expected = (new.start, new.end, Decimal(3))
    assert (counted.period_start, counted.period_end, counted.value) == expected
    old = app.period_for(tenant, "cus_1", APR_1)
    assert old.key != new.key
