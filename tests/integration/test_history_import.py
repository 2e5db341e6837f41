"""History older than the ingest horizon, imported into its own periods, on SQLite and PostgreSQL.

The world's clock stands at 2026-03-10 12:00 and the tenant's ingest horizon
is 15 days (back to 2026-02-23 12:00): usage of 2026-02-20 can only come in
as history, into February, which ended on 2026-03-01 — inside Stripe's 35
days, so that a push of it would be taken by the emulator and show in its
total. Each test pushes through the real push worker (its sweep and its
actors) to the emulator over HTTP, as a deployment does.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.message import Message

from adapters.metrics import Metrics
from adapters.push_worker import QUEUE, PushWorker
from adapters.reconciler import Reconciler, Scope
from api.queries.audit import build_audit
from api.queries.usage import not_billed
from domain.ingest import IngestResult, Lateness, Outcome, UsageSubmission
from domain.pushing import PushOutcome, Target
from domain.reconciliation import Tolerance
from domain.usage import usage_period_id
from tests.helpers import submission
from tests.integration.test_rebuild import rebuild_of, tables
from tests.integration.world import World

HORIZON_DAYS = 15
FEBRUARY = datetime(2026, 2, 20, 9, 30, tzinfo=UTC)  # older than the horizon
LIVE_LATE = datetime(2026, 2, 25, 8, 0, tzinfo=UTC)  # inside the horizon, in February too
FEB = (datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC))
MAR = (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))


@pytest.fixture
def history(world: World) -> World:
    world.stores.app.set_ingest_horizon(world.tenant, HORIZON_DAYS)
    return world


def events(
    world: World, *quantities: int, at: datetime = FEBRUARY, flag: bool = True
) -> list[UsageSubmission]:
    return [
        submission(world.tenant, q, at + timedelta(minutes=n), customer="cus_a", history=flag)
        for n, q in enumerate(quantities)
    ]


def record(world: World, batch: list[UsageSubmission]) -> list[IngestResult]:
    return world.stores.app.usage.record_usage(batch)


def period_of(world: World, key: str) -> object:
    return world.stores.app.repository.get(usage_period_id(world.tenant, "cus_a", "api_calls", key))


def push_everything(world: World) -> int:
    """One sweep of the push worker, every message it queued delivered; the messages sent."""
    world.stores.views.runner.catch_up()
    broker = StubBroker()
    worker = PushWorker(
        world.stores, {Target.LIVE: world.gateway}, Metrics(), broker, clock=world.clock
    )
    sent = worker.sweep().sent
    queue = broker.queues[QUEUE]
    while not queue.empty():
        message = Message.decode(queue.get_nowait())
        broker.get_actor(message.actor_name).fn(*message.args)
    return sent


def stripe_total(world: World, window: tuple[datetime, datetime]) -> int:
    stripe_id = world.stores.app.customer(world.tenant, "cus_a").stripe_customer_id  # type: ignore[union-attr]
    meter = world.stores.app.tenant(world.tenant).mappings["api_calls"].stripe_meter_id
    return world.gateway.meter_total(meter, stripe_id, *window)


def counter(world: World, key: str) -> tuple[int, Decimal]:
    world.stores.views.runner.catch_up()
    [row] = world.stores.views.counters.counters(
        world.tenant, customer_ref="cus_a", metric="api_calls", period=key
    )
    return row.tally.event_count, row.value


def test_history_counts_in_its_own_period_once_and_never_reaches_stripe(history: World) -> None:
    world = history
    # Without the flag, the horizon refuses it, as before.
    [refused] = record(world, events(world, 4, flag=False))
    assert (refused.outcome, refused.field) == (Outcome.ERROR, "ts")
    assert "older than the ingest horizon" in (refused.reason or "")

    imported = record(world, events(world, 4, 5, 6))
    assert [(r.outcome, r.late) for r in imported] == [(Outcome.ACCEPTED, Lateness.HISTORY)] * 3
    world.ingest(7, "live-now")  # March, live
    # The whole file again: every row a duplicate, nothing counted twice.
    again = record(world, events(world, 4, 5, 6))
    assert [r.outcome for r in again] == [Outcome.DUPLICATE] * 3

    assert counter(world, "2026-02") == (3, Decimal(15))
    assert counter(world, "2026-03") == (1, Decimal(7))
    february = period_of(world, "2026-02")
    assert february.history and february.closed  # type: ignore[attr-defined]

    assert push_everything(world) == 1  # March only: the sweep never looks at history
    assert stripe_total(world, MAR) == 7
    assert stripe_total(world, FEB) == 0
    # Asked for outright, the push service refuses it too.
    feb_id = usage_period_id(world.tenant, "cus_a", "api_calls", "2026-02")
    assert world.pusher.push(feb_id) is PushOutcome.HISTORY
    assert stripe_total(world, FEB) == 0

    # Reconciliation compares no invoice with history: no line for February.
    world.stores.views.runner.catch_up()
    reconciler = Reconciler(
        world.stores,
        world.gateway,
        world.pusher,
        Metrics(),
        Tolerance(summary_lag=timedelta(0)),
        world.clock,
    )
    reports = reconciler.run(Scope(world.tenant), actor="ops", trigger="test")
    lines = [(line.period, line.status) for report in reports for line in report.lines]
    assert lines == [("2026-03", "ok")]


def test_a_period_counted_live_or_not_ended_refuses_history(history: World) -> None:
    world = history
    # February counted live while it ran (the clock then), then the clock moves on.
    now = world.clock.now
    world.clock.now = datetime(2026, 2, 21, 12, 0, tzinfo=UTC)
    world.ingest(2, "live-feb")
    world.clock.now = now
    [refused] = record(world, events(world, 4))
    assert (refused.outcome, refused.field) == (Outcome.ERROR, "ts")
    assert "holds live usage" in (refused.reason or "")
    assert counter(world, "2026-02") == (1, Decimal(2))
    assert not period_of(world, "2026-02").history  # type: ignore[attr-defined]
    # That live event in a file imported as history, by a writer that never saw its key
    # (restarted): a duplicate, not an error.
    world.restart()
    counted = dataclasses.replace(
        submission(
            world.tenant,
            2,
            datetime(2026, 2, 21, 12, 0, tzinfo=UTC),
            key="live-feb",
            customer="cus_a",
        ),
        history=True,
    )
    assert [r.outcome for r in record(world, [counted])] == [Outcome.DUPLICATE]

    # A period that has not ended never takes history (a one-day horizon reaches into March).
    world.stores.app.set_ingest_horizon(world.tenant, 1)
    [open_now] = record(world, events(world, 3, at=datetime(2026, 3, 5, tzinfo=UTC)))
    assert (open_now.outcome, open_now.field) == (Outcome.ERROR, "ts")
    assert "has not ended" in (open_now.reason or "")
    # Flagged but inside the horizon: ordinary usage, no history mark.
    [ordinary] = record(world, events(world, 3, at=world.clock.now - timedelta(hours=1)))
    assert (ordinary.outcome, ordinary.late) == (Outcome.ACCEPTED, None)
    assert counter(world, "2026-03") == (1, Decimal(3))


def test_usage_arriving_live_for_a_history_period_is_late_and_leaves_it_alone(
    history: World,
) -> None:
    world = history
    record(world, events(world, 4, 5))
    late = submission(world.tenant, 9, LIVE_LATE, key="live-late", customer="cus_a")
    [result] = record(world, [late])
    # The tenant's policy (carry forward): counted as a correction in the open period.
    assert (result.outcome, result.late) == (Outcome.ACCEPTED, Lateness.CARRIED)
    assert counter(world, "2026-02") == (2, Decimal(9))
    assert counter(world, "2026-03") == (1, Decimal(9))
    assert push_everything(world) == 1
    assert (stripe_total(world, FEB), stripe_total(world, MAR)) == (0, 9)
    # More history still goes to February.
    [more] = record(world, events(world, 1, at=FEBRUARY + timedelta(hours=1)))
    assert more.late is Lateness.HISTORY
    assert counter(world, "2026-02") == (3, Decimal(10))


def test_the_audit_lists_history_as_imported_and_a_rebuild_gives_it_back(
    history: World,
) -> None:
    world = history
    record(world, events(world, 4, 5, 6))
    world.ingest(7, "live-now")
    push_everything(world)
    world.stores.views.runner.catch_up()

    audit = build_audit(world.stores, world.tenant, "cus_a", "api_calls", "2026-02")
    assert audit.history is True
    assert "imported history" in (audit.not_billed_reason or "")
    assert audit.closing is not None and audit.closing.verdict == "history"
    assert audit.pushes == [] and audit.stripe_units_confirmed == {}
    assert [e.quantity for e in audit.unpushed_events] == ["4", "5", "6"]
    live = build_audit(world.stores, world.tenant, "cus_a", "api_calls", "2026-03")
    assert live.history is False and len(live.pushes) == 1
    # The customer's usage no invoice covers: February, as history.
    [unbilled] = not_billed(world.stores, world.tenant, "cus_a")
    assert (unbilled.period, unbilled.value) == ("2026-02", "15")
    assert unbilled.reason.startswith("imported history")

    before = tables(world.stores)
    with world.stores.views.store.transaction() as tx:
        for projection in world.stores.views.runner.projections:
            projection.clear(tx)
        tx.execute("DELETE FROM sm_tracking")
    rebuild_of(world.stores).run()
    assert tables(world.stores) == before
    assert counter(world, "2026-02") == (3, Decimal(15))


def test_history_in_one_batch_with_live_usage_keeps_each_in_its_place(history: World) -> None:
    world = history
    live = submission(world.tenant, 7, world.clock.now, key="live", customer="cus_a")
    mixed = [*events(world, 4), live, *events(world, 5, at=FEBRUARY + timedelta(days=1))]
    results = record(world, mixed)
    assert [r.late for r in results] == [Lateness.HISTORY, None, Lateness.HISTORY]
    assert counter(world, "2026-02") == (2, Decimal(9))
    assert counter(world, "2026-03") == (1, Decimal(7))
    # A duplicate inside one batch counts once.
    twice = events(world, 8, at=FEBRUARY + timedelta(days=2))
    results = record(world, [*twice, dataclasses.replace(twice[0])])
    assert [r.outcome for r in results] == [Outcome.ACCEPTED, Outcome.DUPLICATE]
    assert counter(world, "2026-02") == (3, Decimal(17))
