"""Reconciliation against the emulator over HTTP, on SQLite and PostgreSQL.

Each test makes Stripe and StripeMeter disagree in one known way and checks
that a run names the right status and cause, and that a repair — through
the normal push path, recorded with actor and reason — restores parity.
"""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from adapters.metrics import DRIFT_CAUSES, Metrics
from adapters.reconciler import Reconciler, Scope, drift_cause
from adapters.reconciliation_reports import Report, ReportLine
from domain.ledger import StripeLedger
from domain.meters import Aggregation
from domain.reconciliation import Cause, Tolerance
from stripe_emulator.testing import RunningEmulator
from tests.integration.world import Crash, CrashingGateway, World

NO_LAG = Tolerance(summary_lag=timedelta(0))


def reconcile(
    world: World, *, repair: bool = False, tolerance: Tolerance = NO_LAG
) -> list[ReportLine]:
    world.stores.views.runner.catch_up()
    reconciler = Reconciler(
        world.stores, world.gateway, world.pusher, Metrics(), tolerance, world.clock
    )
    reports: list[Report] = reconciler.run(
        Scope(world.tenant), repair=repair, actor="ops@acme", trigger="test"
    )
    world.stores.views.runner.catch_up()
    return [line for report in reports for line in report.lines]


def only(lines: list[ReportLine]) -> tuple[str, str, int, int | None]:
    [line] = lines
    return line.status, line.cause, line.local, line.stripe


def test_a_pushed_period_is_ok(world: World) -> None:
    world.ingest(7, "a")
    world.push()
    assert only(reconcile(world)) == ("ok", "", 7, 7)


def test_usage_not_pushed_yet_is_pending_and_repair_pushes_it(world: World) -> None:
    world.ingest(7, "a")
    world.push()
    world.ingest(5, "b")
    assert only(reconcile(world)) == ("pending", "events after the last push", 12, 7)
    [repaired] = reconcile(world, repair=True)
    assert (repaired.status, repaired.stripe) == ("repaired", 7)  # as read before the repair
    assert only(reconcile(world)) == ("ok", "", 12, 12)


def test_usage_sent_to_stripe_behind_our_back_is_drift_and_repair_takes_it_back(
    world: World, emulator: RunningEmulator
) -> None:
    world.ingest(10, "a")
    world.push()
    stripe_id = world.stores.app.customer(world.tenant, "cus_a").stripe_customer_id  # type: ignore[union-attr]
    emulator.client().v1.billing.meter_events.create(
        {"event_name": "sm_api_calls", "payload": {"stripe_customer_id": stripe_id, "value": "4"}}
    )
    assert only(reconcile(world)) == (
        "drift",
        "events sent to Stripe outside StripeMeter",
        10,
        14,
    )
    reconcile(world, repair=True)
    assert only(reconcile(world)) == ("ok", "", 10, 10)
    # The repair is on the record: who, why, and what Stripe held.
    [repair] = world.stores.views.ledger.repairs(world.period_id())
    assert (repair.stripe_total, repair.expected_total, repair.actor) == (14, 10, "ops@acme")
    assert "outside StripeMeter" in repair.reason
    pushes = world.stores.views.ledger.pushes(world.period_id())
    assert [(p.value, p.status) for p in pushes] == [(10, "confirmed"), (-4, "confirmed")]
    # New usage after the repair is pushed as usual, exactly once.
    world.ingest(1, "b")
    world.push()
    assert only(reconcile(world)) == ("ok", "", 11, 11)


def test_a_push_stripe_lost_is_drift_and_repair_sends_it_again(
    world: World, emulator: RunningEmulator
) -> None:
    world.ingest(6, "a")
    world.push()
    [event] = emulator.meter_events()
    emulator.client().v1.billing.meter_event_adjustments.create(
        {
            "event_name": "sm_api_calls",
            "type": "cancel",
            "cancel": {"identifier": event["identifier"]},
        }
    )
    assert only(reconcile(world)) == (
        "drift",
        "Stripe lacks confirmed pushes (lost, or cancelled in Stripe)",
        6,
        0,
    )
    reconcile(world, repair=True)
    assert only(reconcile(world)) == ("ok", "", 6, 6)


def test_drift_lines_are_counted_by_cause(world: World, emulator: RunningEmulator) -> None:
    world.ingest(10, "a")
    world.push()
    outside(world, emulator, "4")
    world.stores.views.runner.catch_up()
    metrics = Metrics()
    reconciler = Reconciler(world.stores, world.gateway, world.pusher, metrics, NO_LAG, world.clock)

    def by_cause() -> dict[str, float | None]:
        return {
            cause: metrics.registry.get_sample_value(
                "stripemeter_reconciliation_drift_lines", {"target": "live", "cause": cause}
            )
            for cause in DRIFT_CAUSES
        }

    # Every cause is exported at 0 before the first run, so a panel has its series.
    assert set(by_cause().values()) == {0}
    reconciler.run(Scope(), actor="system:schedule", trigger="schedule")
    assert {c: n for c, n in by_cause().items() if n} == {"outside": 1}
    assert sum(n or 0 for n in by_cause().values()) == metrics.registry.get_sample_value(
        "stripemeter_reconciliation_lines", {"target": "live", "status": "drift"}
    )
    reconciler.run(Scope(), repair=True, actor="ops", trigger="cli")
    world.stores.views.runner.catch_up()
    # Stripe then loses our first push (cancelled): the same line drifts the other way.
    first = emulator.meter_events()[0]
    emulator.client().v1.billing.meter_event_adjustments.create(
        {
            "event_name": "sm_api_calls",
            "type": "cancel",
            "cancel": {"identifier": first["identifier"]},
        }
    )
    reconciler.run(Scope(), actor="system:schedule", trigger="schedule")
    assert {c: n for c, n in by_cause().items() if n} == {"missing": 1}


def test_a_drift_cause_label_is_bounded() -> None:
    assert drift_cause("events sent to Stripe outside StripeMeter") == "outside"
    assert drift_cause("meter remapped mid-period; repair deferred: a push is pending") == (
        "remapped"
    )
    assert drift_cause("Stripe could not be read: timeout") == "other"
    assert drift_cause("within the configured drift tolerance") == "other"
    assert {drift_cause(c.value) for c in Cause} <= set(DRIFT_CAUSES)


def test_a_push_lost_in_a_crash_is_pending_until_repaired(world: World) -> None:
    world.ingest(3, "a")
    world.restart(CrashingGateway(world.emulator.url, "before"))
    with pytest.raises(Crash):
        world.push()
    world.restart()
    assert only(reconcile(world)) == ("pending", "unconfirmed push", 3, 0)
    [line] = reconcile(world, repair=True)
    assert line.status == "repaired"
    assert only(reconcile(world)) == ("ok", "", 3, 3)
    ledger: StripeLedger = world.ledger()
    assert ledger.pushes == 1  # the pending intent was resent, not planned again


def test_stripe_summary_lag_is_pending_not_drift(world: World, emulator: RunningEmulator) -> None:
    world.ingest(9, "a")
    emulator.set_summary_lag(1.0)  # wall seconds before Stripe's summaries show an event
    world.push()
    lagging = Tolerance(summary_lag=timedelta(minutes=10))
    assert only(reconcile(world, tolerance=lagging)) == ("pending", "Stripe summary lag", 9, 0)
    time.sleep(1.2)
    assert only(reconcile(world, tolerance=lagging)) == ("ok", "", 9, 9)


def test_tolerance_and_closed_periods(world: World) -> None:
    world.ingest(100, "a")
    world.push()
    world.ingest(1, "b")
    loose = Tolerance(absolute=0, relative=Decimal("0.05"), summary_lag=timedelta(0))
    # Open: unpushed usage is pending whatever the tolerance.
    assert only(reconcile(world, tolerance=loose))[0] == "pending"
    # Closed: nothing is in flight any more; the same difference is drift unless tolerated.
    world.stores.app.usage.change_periods(
        lambda load: [p] if (p := load.get(world.period_id())).close("test") else []
    )
    assert only(reconcile(world)) == ("drift", "events after the last push", 101, 100)
    assert only(reconcile(world, tolerance=loose))[:2] == (
        "ok",
        "within the configured drift tolerance",
    )


def test_each_run_is_one_report_and_reading_a_month_gives_the_latest(world: World) -> None:
    world.ingest(2, "a")
    reconcile(world)
    world.push()
    reconcile(world)
    month = world.clock.now.strftime("%Y-%m")
    report = world.stores.views.reports.latest(world.tenant, month)
    assert report is not None
    assert [(line.status, line.local, line.stripe) for line in report.lines] == [("ok", 2, 2)]
    assert report.actor == "ops@acme"


# -- repairs that must not make things worse (found in review) ------------------------


def outside(
    world: World, emulator: RunningEmulator, value: str, event: str = "sm_api_calls"
) -> None:
    """A meter event sent to Stripe by someone else."""
    customer = world.stores.app.customer(world.tenant, "cus_a")
    assert customer is not None
    emulator.client().v1.billing.meter_events.create(
        {
            "event_name": event,
            "payload": {"stripe_customer_id": customer.stripe_customer_id, "value": value},
        }
    )


def test_a_push_confirmed_while_a_repair_runs_is_not_sent_twice(
    world: World, emulator: RunningEmulator
) -> None:
    world.ingest(10, "a")
    world.push()
    outside(world, emulator, "5")  # Stripe 15, local 10
    world.stores.views.runner.catch_up()
    reconciler = Reconciler(
        world.stores, world.gateway, world.pusher, Metrics(), NO_LAG, world.clock
    )
    read = reconciler._read_stripe

    def read_then_the_worker_pushes(line: Any) -> None:
        read(line)
        world.ingest(3, "b")
        world.push()  # Stripe 18, local 13: the run's Stripe total (15) is now stale

    reconciler._read_stripe = read_then_the_worker_pushes  # type: ignore[method-assign]
    reconciler.run(Scope(world.tenant), repair=True, actor="ops", trigger="test")
    assert (world.stripe_total(), int(world.counter())) == (13, 13)


def test_a_repair_with_a_pending_push_settles_it_then_repairs(
    world: World, emulator: RunningEmulator
) -> None:
    world.ingest(10, "a")
    world.push()
    outside(world, emulator, "5")  # Stripe 15
    world.ingest(2, "b")
    world.restart(CrashingGateway(emulator.url, "before"))
    with pytest.raises(Crash):
        world.push()  # an intent of +2, recorded, never sent
    world.restart()
    [line] = reconcile(world, repair=True)
    assert line.status == "repaired"
    assert only(reconcile(world)) == ("ok", "", 12, 12)


def test_a_value_meter_repair_is_the_latest_event_so_it_counts(
    world: World, emulator: RunningEmulator
) -> None:
    world.map_metric("seats", Aggregation.LAST, "last")
    world.ingest(7, "s1", metric="seats")
    world.push(metric="seats")
    world.clock.advance(hours=1)
    emulator.set_now(int(world.clock.now.timestamp()), frozen=True)
    outside(world, emulator, "50", event="sm_seats")  # stamped an hour after our push
    [drift] = [x for x in reconcile(world) if x.metric == "seats"]
    assert (drift.status, drift.local, drift.stripe) == ("drift", 7, 50)
    [repaired] = [x for x in reconcile(world, repair=True) if x.metric == "seats"]
    assert repaired.status == "repaired"
    [after] = [x for x in reconcile(world) if x.metric == "seats"]
    assert (after.status, after.stripe) == ("ok", 7)


def test_lag_after_a_push_that_waited_long_is_lag_and_a_repair_does_not_double_it(
    world: World, emulator: RunningEmulator
) -> None:
    world.ingest(10, "a")
    world.restart(CrashingGateway(emulator.url, "before"))
    with pytest.raises(Crash):
        world.push()  # intended now; Stripe is down
    world.clock.advance(minutes=30)  # back half an hour later
    emulator.set_now(int(world.clock.now.timestamp()), frozen=True)
    world.restart()
    emulator.set_summary_lag(1.5)
    world.push()  # resent and confirmed just now: the summary does not show it yet
    lagging = Tolerance(summary_lag=timedelta(minutes=10))
    assert only(reconcile(world, tolerance=lagging))[:2] == ("pending", "Stripe summary lag")
    [line] = reconcile(world, repair=True, tolerance=lagging)
    assert line.status != "repaired"  # nothing was repaired: Stripe still lags
    time.sleep(1.7)
    assert world.stripe_total() == 10


def test_an_old_push_stripe_cannot_account_for_is_settled_by_the_operators_repair(
    world: World, emulator: RunningEmulator
) -> None:
    world.ingest(3, "a")
    world.restart(CrashingGateway(emulator.url, "after"))
    with pytest.raises(Crash):
        world.push()  # Stripe took +3; the confirmation was never recorded
    world.restart()
    outside(world, emulator, "5")  # and someone else sent 5
    world.clock.advance(hours=24)  # past the identifier window: no blind resend
    emulator.set_now(int(world.clock.now.timestamp()), frozen=True)
    assert world.push().value == "drift"  # 8 is neither 0 nor 3: the push loop cannot decide
    [line] = reconcile(world, repair=True)
    assert line.status == "repaired"
    assert only(reconcile(world)) == ("ok", "", 3, 3)
    ledger = world.ledger()
    # The intent is settled as not applied; what Stripe held (its 3 and the 5) is on record.
    assert (ledger.pending, ledger.confirmed_total, ledger.external_total) == (None, -5, 8)


def test_only_a_full_run_sets_the_drift_gauges(world: World, emulator: RunningEmulator) -> None:
    world.ingest(10, "a")
    world.push()
    outside(world, emulator, "4")
    world.stores.views.runner.catch_up()
    metrics = Metrics()
    reconciler = Reconciler(world.stores, world.gateway, world.pusher, metrics, NO_LAG, world.clock)

    def gauge(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, {"target": "live", **labels})

    reconciler.run(Scope(world.tenant), actor="ops", trigger="cli")
    assert gauge("stripemeter_reconciliation_max_drift_units") == 0  # untouched by a scoped run
    reconciler.run(Scope(), actor="system:schedule", trigger="schedule")
    assert gauge("stripemeter_reconciliation_max_drift_units") == 4
    assert gauge("stripemeter_reconciliation_lines", status="drift") == 1
    assert gauge("stripemeter_reconciliation_max_drift_ratio") == 0.4
    # Shadow mode is not mapped here: its series stay at 0, apart from the live ones.
    assert gauge("stripemeter_reconciliation_max_drift_units", target="shadow") == 0
    assert gauge("stripemeter_reconciliation_lines", target="shadow", status="drift") == 0
