"""Customers mapped to Stripe after their usage was counted, and cycles that change.

Teams start metering before they connect Stripe, and customers move to a
metered plan mid-month: the usage already counted in calendar months moves,
by recorded events, into the periods of the customer's Stripe cycle, and
every invoice bills it. Usage from before the subscription started stays
where it is, counted and reported, never pushed.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from adapters.persistence import Stores, open_stores
from adapters.settings import Settings
from adapters.stripe_gateway import SdkStripeGateway
from domain.errors import ConflictError
from domain.ingest import Outcome
from domain.pushing import PushOutcome, PushService, Target, summary_window, whole_units
from domain.stripe_mapping import StripeMappingService
from domain.usage import UsagePeriod, usage_period_id
from stripe_emulator.testing import TEST_API_KEY, RunningEmulator
from tests.conftest import FakeClock
from tests.helpers import submission
from tests.integration.test_parity_cycles import Service, stripe_setup, ts

FEB_20 = datetime(2026, 2, 20, tzinfo=UTC)
MAR_1 = datetime(2026, 3, 1, tzinfo=UTC)
MAR_15 = datetime(2026, 3, 15, tzinfo=UTC)


def at(day: int, month: int = 3, hour: int = 12) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


def mapper(service: Service, emulator: RunningEmulator) -> StripeMappingService:
    gateway = SdkStripeGateway(TEST_API_KEY, emulator.url, max_network_retries=0)
    return StripeMappingService(
        service.stores.app, gateway, pushed_open=service.stores.views.ledger
    )


def period(service: Service, tenant: UUID, who: str, key: str) -> UsagePeriod:
    found: UsagePeriod = service.stores.app.repository.get(
        usage_period_id(tenant, who, "api_calls", key)
    )
    return found


def events_of(service: Service, period_id: UUID) -> list[Any]:
    return list(service.stores.app.repository.event_store.get(period_id))


@pytest.fixture
def service(settings: Settings, clock: FakeClock, emulator: RunningEmulator) -> Iterator[Service]:
    clock.now = FEB_20
    emulator.set_now(ts(FEB_20), frozen=True)
    svc = Service(settings, clock, emulator.url)
    yield svc
    svc.stores.close()


def test_usage_counted_before_mapping_reaches_every_invoice(
    service: Service, clock: FakeClock, emulator: RunningEmulator
) -> None:
    """The README's order: usage first, mapping second — for a customer billed in calendar
    months from the 1st and one whose subscription started on the 1st with its anchor on the
    15th (usage on both sides of the anchor, and some from before the subscription)."""
    s = stripe_setup(service, emulator)
    app, stripe = service.stores.app, emulator.client()
    usage: list[tuple[datetime, str, int]] = [
        (at(25, 2), "mid", 4),  # before its subscription started: stays, never billed
        (at(2), "cal", 5),
        (at(5), "cal", 6),
        (at(5), "mid", 7),  # the short first period, Mar 1 - Mar 15
        (at(10), "mid", 8),
        (at(13), "cal", 1),  # after the mapping
        (at(13), "mid", 2),
        (at(20), "cal", 3),
        (at(20), "mid", 9),  # Mar 15 - Apr 15
        (at(2, 4), "cal", 11),
        (at(16, 4), "mid", 12),
    ]
    moments = sorted(
        {moment for moment, _, _ in usage}
        | {FEB_20 + timedelta(hours=6 * i) for i in range(4 * 58)}
        | {MAR_1, at(12)}
    )
    subscriptions: dict[str, Any] = {}
    mapped = False
    for moment in moments:
        clock.now = moment
        emulator.set_now(ts(moment), frozen=True)
        if moment == MAR_1:
            for who, anchor in (("cal", MAR_1), ("mid", MAR_15)):
                customer = stripe.v1.customers.create({"name": who})
                subscriptions[who] = stripe.v1.subscriptions.create(
                    {
                        "customer": customer.id,
                        "items": [{"price": s.price_id}],
                        "billing_cycle_anchor": ts(anchor),
                    }
                )
        if moment == at(12):
            service.stores.views.runner.catch_up()
            for who, subscription in subscriptions.items():
                mapper(service, emulator).map_customer(s.tenant, who, subscription.customer)
            mapped = True
            check_moved(service, s.tenant)
            versions = [
                period(service, s.tenant, w, "2026-03-01T00:00:00Z").version for w in ("cal", "mid")
            ]
            for who, subscription in subscriptions.items():  # again: nothing left to move
                mapper(service, emulator).map_customer(s.tenant, who, subscription.customer)
            assert [
                period(service, s.tenant, w, "2026-03-01T00:00:00Z").version for w in ("cal", "mid")
            ] == versions
        batch = [
            submission(s.tenant, quantity, occurs, key=f"{who}{occurs:%m%d}", customer=who)
            for occurs, who, quantity in usage
            if occurs == moment
        ]
        if batch:
            results = app.usage.record_usage(batch)
            assert {r.outcome for r in results} == {Outcome.ACCEPTED}
        if mapped:
            service.work()
        else:
            service.stores.views.runner.catch_up()

    checked = []
    for who, subscription in subscriptions.items():
        invoices = stripe.v1.invoices.list({"subscription": subscription.id, "limit": 100})
        for invoice in invoices.data:
            if invoice.billing_reason != "subscription_cycle" or invoice.status == "draft":
                continue
            start = datetime.fromtimestamp(invoice.period_start, UTC)
            key = app.period_for(s.tenant, who, start).key
            local = period(service, s.tenant, who, key)
            [line] = [x for x in invoice.lines.data if x.quantity is not None]
            assert local.closed and local.verdict == "parity", (who, key)
            checked.append((who, key, line.quantity, whole_units(local.value)))
    assert sorted(checked) == [
        ("cal", "2026-03-01T00:00:00Z", 15, 15),
        ("mid", "2026-03-01T00:00:00Z", 17, 17),  # the short first period
        ("mid", "2026-03-15T00:00:00Z", 9, 9),
    ]
    # Before the subscription: counted in February, never pushed, and said so.
    february = period(service, s.tenant, "mid", "2026-02")
    assert february.value == 4 and not february.closed
    assert not app.bills(s.tenant, "mid", "2026-02", february.period_start, february.period_end)
    ledger = service.stores.views.ledger.pushes(february.id)
    assert ledger == []


def check_moved(service: Service, tenant: UUID) -> None:
    """Right after the mapping: the calendar periods gave their usage, event by event."""
    app = service.stores.app
    calendar = period(service, tenant, "mid", "2026-03")
    assert calendar.period_end == calendar.period_start and calendar.value == 0
    [moved_out] = [
        e for e in events_of(service, calendar.id) if type(e).__name__ == "UsageMovedOut"
    ]
    assert (moved_out.moved_events, moved_out.moved_quantity) == (2, Decimal(15))
    assert moved_out.moved_to == ["2026-03-01T00:00:00Z"]
    short = period(service, tenant, "mid", "2026-03-01T00:00:00Z")
    assert (short.period_start, short.period_end, short.value) == (MAR_1, MAR_15, 15)
    moved_in = [e for e in events_of(service, short.id) if type(e).__name__ == "UsageMovedIn"]
    assert [(e.idempotency_key, e.moved_from) for e in moved_in] == [
        ("mid0305", "2026-03"),
        ("mid0310", "2026-03"),
    ]
    assert period(service, tenant, "cal", "2026-03-01T00:00:00Z").value == 11
    # Nothing vanished from the customer's totals: 4 stay in February, 15 moved.
    assert period(service, tenant, "mid", "2026-02").value == 4
    assert not app.bills(tenant, "mid", "2026-03", calendar.period_start, calendar.period_end)


def test_a_writer_with_an_old_copy_of_the_customer_still_counts_in_the_new_period(
    settings: Settings, clock: FakeClock, service: Service, emulator: RunningEmulator
) -> None:
    """Another process cached the customer as unmapped (for up to five seconds): its next
    write collides with the move, reads the customer again and lands in the right period."""
    s = stripe_setup(service, emulator)
    clock.now = at(5)
    emulator.set_now(ts(clock.now), frozen=True)
    other: Stores = open_stores(settings, clock)
    try:
        first = other.app.usage.record_usage([submission(s.tenant, 2, at(4), key="a")])
        assert first[0].outcome is Outcome.ACCEPTED
        assert other.app.cached_customer(s.tenant, "cus_1") is None  # cached as unmapped
        service.stores.app.map_customer(s.tenant, "cus_1", "cus_stripe_1", at(3))

        later = other.app.usage.record_usage([submission(s.tenant, 5, at(5), key="b")])
    finally:
        other.close()
    assert later[0].outcome is Outcome.ACCEPTED
    app = service.stores.app
    calendar = period(service, s.tenant, "cus_1", "2026-03")
    assert calendar.value == 0 and calendar.event_count == 0
    assert period(service, s.tenant, "cus_1", "2026-03-03T12:00:00Z").value == 7  # a and b
    assert app.bills(s.tenant, "cus_1", "2026-03-03T12:00:00Z", at(3), at(3, 4))


def test_an_anchor_change_cuts_the_running_period_and_pushes_land_in_each(
    service: Service, clock: FakeClock, emulator: RunningEmulator
) -> None:
    """Stripe resets a cycle at the new anchor (``billing_cycle_anchor=now``): the running
    period ends there, usage stamped after it moves, and each period's pushes stay inside
    its own minutes."""
    s = stripe_setup(service, emulator)
    app = service.stores.app
    stripe_customer = emulator.client().v1.customers.create({"name": "anchored"}).id
    clock.now = at(2)
    app.map_customer(s.tenant, "cus_1", stripe_customer, MAR_1)
    clock.now = at(6)
    app.usage.record_usage([submission(s.tenant, 10, at(5), key="before")])
    new_anchor = at(20)
    clock.now = new_anchor - timedelta(minutes=4)
    emulator.set_now(ts(clock.now), frozen=True)
    # Stamped ahead of the clock (up to five minutes is allowed): after the new anchor.
    app.usage.record_usage(
        [submission(s.tenant, 3, new_anchor + timedelta(minutes=1), key="ahead")]
    )
    clock.now = new_anchor - timedelta(minutes=2)
    service.work()  # 13 pushed, stamped before the new anchor
    first = period(service, s.tenant, "cus_1", "2026-03-01T00:00:00Z")
    assert first.value == 13 and first.period_end == datetime(2026, 4, 1, tzinfo=UTC)

    clock.now = new_anchor
    mapper(service, emulator).map_customer(s.tenant, "cus_1", stripe_customer, new_anchor)
    clock.now = at(21, hour=13)
    emulator.set_now(ts(clock.now), frozen=True)
    app.usage.record_usage([submission(s.tenant, 4, at(21), key="after")])
    service.work()

    first = period(service, s.tenant, "cus_1", "2026-03-01T00:00:00Z")
    second = period(service, s.tenant, "cus_1", "2026-03-20T12:00:00Z")
    assert (first.period_end, first.value) == (new_anchor, 10)
    assert (second.period_start, second.period_end, second.value) == (
        new_anchor,
        datetime(2026, 4, 20, 12, tzinfo=UTC),
        7,
    )
    customer = app.customer(s.tenant, "cus_1")
    assert customer is not None and customer.billing_cycle_anchor == new_anchor
    # The cut period's invoice came due at the new anchor: closed, in parity, a day later.
    assert first.closed and first.verdict == "parity"
    gateway = SdkStripeGateway(TEST_API_KEY, emulator.url, max_network_retries=0)
    pusher = PushService(app, {Target.LIVE: gateway}, clock)
    assert pusher.push(second.id) is PushOutcome.UP_TO_DATE
    for local in (first, second):
        window = summary_window(local.period_start, local.period_end)
        assert gateway.meter_total(s.meter_id, stripe_customer, *window) == local.value


def test_a_customer_moves_to_another_stripe_customer_only_without_pushed_open_periods(
    service: Service, clock: FakeClock, emulator: RunningEmulator
) -> None:
    s = stripe_setup(service, emulator)
    stripe = emulator.client()
    first, second = (stripe.v1.customers.create({"name": n}).id for n in ("one", "two"))
    clock.now = at(5)
    emulator.set_now(ts(clock.now), frozen=True)
    mapping = mapper(service, emulator)
    mapping.map_customer(s.tenant, "cus_1", first)
    mapping.map_customer(s.tenant, "cus_1", second)  # nothing pushed yet: allowed
    mapping.map_customer(s.tenant, "cus_1", first)
    service.stores.app.usage.record_usage([submission(s.tenant, 6, at(4), key="x")])
    service.work()

    with pytest.raises(ConflictError, match=f"pushed to the live Stripe customer {first}"):
        mapping.map_customer(s.tenant, "cus_1", second)
    customer = service.stores.app.customer(s.tenant, "cus_1")
    assert customer is not None and customer.stripe_customer_id == first


def test_a_closed_period_keeps_its_usage_and_corrections_follow_the_open_period(
    service: Service, clock: FakeClock, emulator: RunningEmulator
) -> None:
    s = stripe_setup(service, emulator)
    app = service.stores.app
    clock.now = at(21, 2)
    app.usage.record_usage([submission(s.tenant, 5, at(20, 2), key="closed")])
    february = usage_period_id(s.tenant, "cus_1", "api_calls", "2026-02")

    def close(load: Any) -> list[Any]:
        closing = load.get(february)
        closing.close("closed before the mapping")
        return [closing]

    app.usage.change_periods(close)
    clock.now = at(6)
    results = app.usage.record_usage(
        [
            submission(s.tenant, 2, at(5), key="open"),
            submission(s.tenant, 7, at(25, 2), key="late"),  # carried into March
        ]
    )
    assert [r.late.value if r.late else None for r in results] == [None, "carried"]
    assert period(service, s.tenant, "cus_1", "2026-03").value == 9

    app.map_customer(s.tenant, "cus_1", "cus_stripe_1", datetime(2026, 2, 15, tzinfo=UTC))

    kept = period(service, s.tenant, "cus_1", "2026-02")
    assert (kept.value, kept.closed, kept.period_end) == (5, True, MAR_1)
    march = period(service, s.tenant, "cus_1", "2026-03")
    assert (march.value, march.period_end) == (0, march.period_start)
    # The event by its time, the correction to the period open now: both that same one.
    assert period(service, s.tenant, "cus_1", "2026-02-15T00:00:00Z").value == 9
    service.stores.views.runner.catch_up()
    counters = service.stores.views.counters.counters(s.tenant, customer_ref="cus_1")
    assert {c.period: c.value for c in counters} == {
        "2026-02": 5,
        "2026-03": 0,
        "2026-02-15T00:00:00Z": 9,
    }


def test_a_new_anchor_already_past_starts_its_cycle_at_the_mapping_call(
    service: Service, clock: FakeClock, emulator: RunningEmulator
) -> None:
    """A push stamped after the anchor: a cycle reaching back would move usage that
    Stripe holds in another window, so the new cycle starts when it is recorded."""
    s = stripe_setup(service, emulator)
    app = service.stores.app
    stripe_customer = emulator.client().v1.customers.create({"name": "reset"}).id
    clock.now = at(2)
    app.map_customer(s.tenant, "cus_1", stripe_customer, MAR_1)
    clock.now = at(20)
    emulator.set_now(ts(clock.now), frozen=True)
    app.usage.record_usage([submission(s.tenant, 6, at(12), key="pushed-window")])
    service.work()  # pushed, stamped at the 12th: after the anchor below
    app.map_customer(s.tenant, "cus_1", stripe_customer, at(10))  # reset ten days ago

    customer = app.customer(s.tenant, "cus_1")
    assert customer is not None
    assert customer.cycles[-1] == (at(20), at(10))
    assert app.period_for(s.tenant, "cus_1", at(12)).key == "2026-03-01T00:00:00Z"
    assert app.period_for(s.tenant, "cus_1", at(21)).key == "2026-03-20T12:00:00Z"
    assert period(service, s.tenant, "cus_1", "2026-03-01T00:00:00Z").value == 6


def test_a_new_anchor_with_nothing_pushed_after_it_starts_its_cycle_at_the_anchor(
    service: Service, clock: FakeClock, emulator: RunningEmulator
) -> None:
    """Stripe's period ended at the anchor; as long as no push is stamped after it, ours
    does too, and the usage after the anchor moves where Stripe will bill it."""
    s = stripe_setup(service, emulator)
    app = service.stores.app
    stripe_customer = emulator.client().v1.customers.create({"name": "reset"}).id
    clock.now = at(2)
    app.map_customer(s.tenant, "cus_1", stripe_customer, MAR_1)
    clock.now = at(20)
    emulator.set_now(ts(clock.now), frozen=True)
    app.usage.record_usage([submission(s.tenant, 4, at(8), key="before-anchor")])
    service.work()  # pushed, stamped the 8th: before the anchor
    app.usage.record_usage([submission(s.tenant, 6, at(12), key="after-anchor")])
    app.map_customer(s.tenant, "cus_1", stripe_customer, at(10))  # reset ten days ago

    customer = app.customer(s.tenant, "cus_1")
    assert customer is not None
    assert customer.cycles[-1] == (at(10), at(10))
    cut = period(service, s.tenant, "cus_1", "2026-03-01T00:00:00Z")
    assert (cut.period_end, cut.value) == (at(10), 4)
    following = period(service, s.tenant, "cus_1", "2026-03-10T12:00:00Z")
    assert (following.period_start, following.value) == (at(10), 6)
