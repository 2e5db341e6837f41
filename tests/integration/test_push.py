"""Pushing to Stripe, against the emulator over HTTP, on SQLite and PostgreSQL.

"Crashes" are a process dying between two steps: the test raises an
exception no code catches (``Crash``) at that step, drops every object of
that "process", and restarts from the stores alone.
"""

from __future__ import annotations

import pytest

from domain.errors import InvalidInputError
from domain.ledger import ledger_id_for
from domain.mappings import MeterMapping
from domain.meters import Aggregation, MetricDefinition
from domain.pushing import PushOutcome
from domain.usage import usage_period_id
from stripe_emulator.testing import RunningEmulator
from tests.integration.world import Crash, CrashingGateway, World


def identifiers(emulator: RunningEmulator) -> list[str]:
    return [e["identifier"] for e in emulator.meter_events()]


def test_only_whole_units_are_pushed_and_only_the_missing_delta(world: World) -> None:
    world.ingest("3.6", "e1")
    assert world.push() is PushOutcome.CONFIRMED
    assert world.stripe_total() == 3
    assert world.push() is PushOutcome.UP_TO_DATE
    world.ingest("0.5", "e2")  # 4.1: one more whole unit
    assert world.push() is PushOutcome.CONFIRMED
    assert (world.stripe_total(), world.ledger().confirmed_total) == (4, 4)
    world.ingest("0.3", "e3")  # 4.4: still 4 whole units; nothing to send
    assert world.push() is PushOutcome.UP_TO_DATE
    assert len(identifiers(world.emulator)) == 2


def test_negative_corrections_push_negative_meter_events(world: World) -> None:
    world.ingest(10, "e1")
    world.push()
    world.ingest(-3, "correction-1")
    assert world.push() is PushOutcome.CONFIRMED
    values = [e["value"] for e in world.emulator.meter_events()]
    assert values in ([10, -3], ["10", "-3"], [10.0, -3.0])
    assert world.stripe_total() == 7 == world.counter()


def test_crash_before_the_stripe_call_resends_the_same_intent(world: World) -> None:
    world.ingest(5, "e1")
    world.restart(CrashingGateway(world.emulator.url, "before"))
    with pytest.raises(Crash):
        world.push()
    pending = world.ledger().pending
    assert pending is not None and identifiers(world.emulator) == []
    world.ingest(2, "e2")  # new usage arrives while the intent is pending
    world.restart()
    assert world.push() is PushOutcome.CONFIRMED
    # The pending intent went first, unchanged; then the new delta.
    assert identifiers(world.emulator)[0] == pending.identifier
    assert [e["value"] for e in world.emulator.meter_events()] in ([5, 2], ["5", "2"], [5.0, 2.0])
    assert world.stripe_total() == 7 == world.counter()


def test_crash_after_stripe_applied_it_is_confirmed_as_a_duplicate_not_counted_twice(
    world: World,
) -> None:
    world.ingest(5, "e1")
    world.restart(CrashingGateway(world.emulator.url, "after"))
    with pytest.raises(Crash):
        world.push()
    assert world.stripe_total() == 5 and world.ledger().pending is not None
    world.restart()
    assert world.push() is PushOutcome.CONFIRMED
    assert world.stripe_total() == 5 == world.counter()
    assert len(identifiers(world.emulator)) == 1


def test_timeout_after_the_write_is_retried_safely(world: World) -> None:
    world.ingest(4, "e1")
    world.emulator.fail_next("timeout_after_write", path="/v1/billing/meter_events")
    assert world.push() is PushOutcome.RETRY
    assert world.stripe_total() == 4  # Stripe kept it although the client saw an error
    assert world.push() is PushOutcome.CONFIRMED
    assert world.stripe_total() == 4
    assert len(identifiers(world.emulator)) == 1


def test_crash_between_two_pushes(world: World) -> None:
    world.ingest(1, "e1")
    assert world.push() is PushOutcome.CONFIRMED
    world.ingest(2, "e2")
    world.restart(CrashingGateway(world.emulator.url, "after"))
    with pytest.raises(Crash):
        world.push()
    world.ingest(3, "e3")
    world.restart()
    world.push()
    world.push()
    assert world.stripe_total() == 6 == world.counter()


def test_an_intent_older_than_the_dedup_window_is_settled_from_the_summary(world: World) -> None:
    world.ingest(5, "e1")
    world.emulator.fail_next("timeout_after_write", path="/v1/billing/meter_events")
    assert world.push() is PushOutcome.RETRY  # Stripe has it; we do not know
    world.clock.advance(hours=25)
    world.emulator.set_now(int(world.clock.now.timestamp()), frozen=True)
    assert world.push() is PushOutcome.SETTLED
    assert world.ledger().pending is None and world.ledger().confirmed_total == 5
    assert len(identifiers(world.emulator)) == 1  # settled by reading, not by resending


def test_an_old_intent_stripe_never_got_is_planned_again(world: World) -> None:
    world.ingest(5, "e1")
    world.restart(CrashingGateway(world.emulator.url, "before"))
    with pytest.raises(Crash):
        world.push()
    world.restart()
    world.clock.advance(hours=25)
    world.emulator.set_now(int(world.clock.now.timestamp()), frozen=True)
    assert world.push() is PushOutcome.CONFIRMED
    assert world.stripe_total() == 5
    ledger = world.ledger()
    assert (ledger.pushes, ledger.confirmed_total) == (2, 5)


def test_max_and_last_push_the_current_value_to_a_last_meter(world: World) -> None:
    world.map_metric("seats", Aggregation.MAX, "last")
    world.ingest(3, "s1", metric="seats")
    assert world.push(metric="seats") is PushOutcome.CONFIRMED
    world.clock.advance(minutes=5)
    world.emulator.set_now(int(world.clock.now.timestamp()), frozen=True)
    world.ingest(7, "s2", metric="seats")
    world.ingest(5, "s3", metric="seats")
    assert world.push(metric="seats") is PushOutcome.CONFIRMED
    assert world.push(metric="seats") is PushOutcome.UP_TO_DATE
    assert world.stripe_total(meter="seats") == 7


def test_a_stripe_count_meter_is_refused_with_the_reason(world: World) -> None:
    app = world.stores.app
    app.declare_metric(world.tenant, MetricDefinition("requests", Aggregation.COUNT))
    meter = world.gateway.create_meter("requests", "sm_requests", "count")
    with pytest.raises(InvalidInputError) as refused:
        app.map_meter(world.tenant, MeterMapping("requests", meter.id, meter.event_name, "count"))
    assert "counts events, not values" in refused.value.reason


def test_a_refused_push_is_abandoned_visibly_and_counts_nothing(world: World) -> None:
    world.ingest(5, "e1")
    # The customer disappears from Stripe: the push is refused for good.
    world.emulator.client().v1.customers.delete(
        world.stores.app.customer(world.tenant, "cus_a").stripe_customer_id
    )  # type: ignore[union-attr]
    assert world.push() is PushOutcome.ABANDONED
    ledger = world.ledger()
    assert ledger.pending is None and ledger.confirmed_total == 0
    assert ledger.blocked_reason is not None and "Stripe refused it" in ledger.blocked_reason


def test_unmapped_customers_are_not_pushed(world: World) -> None:
    world.ingest(5, "e1", customer="cus_unmapped")
    assert world.push(customer="cus_unmapped") is PushOutcome.UNMAPPED
    assert identifiers(world.emulator) == []


def test_billing_periods_follow_the_stripe_anchor_once_mapped(world: World) -> None:
    anchor = world.clock.now.replace(month=1, day=3, hour=7)
    world.stores.app.map_customer(world.tenant, "cus_b", "cus_b_stripe", anchor)
    period = world.stores.app.period_for(world.tenant, "cus_b", world.clock.now)
    assert period.start == world.clock.now.replace(day=3, hour=7, minute=0)
    assert period.key == period.start.strftime("%Y-%m-%dT%H:%M:%SZ")
    world.ingest(1, "b1", customer="cus_b")
    assert world.stores.app.repository.get(
        usage_period_id(world.tenant, "cus_b", "api_calls", period.key)
    )


def test_a_long_ledger_is_read_back_through_snapshots(world: World) -> None:
    """Thirty-five pushes make 71 ledger events: snapshots (one taken while an intent
    was pending) must give back the same ledger after a restart."""
    for n in range(35):
        world.ingest(1, f"e{n}")
        assert world.push() is PushOutcome.CONFIRMED
    app = world.stores.app
    assert app.snapshots is not None
    ledger_id = ledger_id_for(world.period_id(), "live")
    assert [s.originator_version for s in app.snapshots.get(ledger_id)] == [60]
    world.restart()
    ledger = world.ledger()
    assert (ledger.version, ledger.confirmed_total, ledger.pending) == (71, 35, None)
    world.ingest(1, "e35")
    assert world.push() is PushOutcome.CONFIRMED
    assert world.stripe_total() == 36 == world.counter()


def test_a_pending_push_is_never_resent_to_a_stripe_customer_the_mapping_left(
    world: World,
) -> None:
    """Remapped while a push was pending: the old customer may be another tenant's by now."""
    old = world.stores.app.customer(world.tenant, "cus_a").stripe_customer_id  # type: ignore[union-attr]
    world.ingest(4, "e1")
    world.emulator.fail_next("503", path="/v1/billing/meter_events")
    assert world.push() is PushOutcome.RETRY
    assert world.ledger().pending is not None
    new = world.emulator.client().v1.customers.create({"name": "moved"}).id
    world.stores.app.map_customer(world.tenant, "cus_a", new, None)

    assert world.push() is PushOutcome.CONFIRMED
    period = world.stores.app.period_for(world.tenant, "cus_a", world.clock.now)
    meter = world.stores.app.tenant(world.tenant).mappings["api_calls"].stripe_meter_id
    assert world.gateway.meter_total(meter, old, period.start, period.end) == 0
    assert world.stripe_total() == 4 == world.counter()
    ledger = world.ledger()
    assert (ledger.pushes, ledger.confirmed_total, ledger.pending) == (2, 4, None)
