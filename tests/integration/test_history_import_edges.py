"""History import at its edges: repeats of a refused row, keys claimed live, on SQLite and PG.

The world of tests/integration/test_history_import.py: the clock at
2026-03-10 12:00, a 15-day ingest horizon, February reachable only as history.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from domain.ingest import IngestResult, Lateness, Outcome, UsageSubmission
from domain.meters import Aggregation, MetricDefinition
from domain.usage import UsagePeriod, usage_period_id
from tests.helpers import submission
from tests.integration.test_history_import import (
    FEB,
    LIVE_LATE,
    MAR,
    counter,
    events,
    history,
    push_everything,
    record,
    stripe_total,
)
from tests.integration.world import World

__all__ = ["history"]  # the fixture, shared

LIVE_FEB = datetime(2026, 2, 21, 12, 0, tzinfo=UTC)
FEBRUARY_10 = datetime(2026, 2, 10, tzinfo=UTC)  # older than the horizon
LATE_FEBRUARY = datetime(2026, 2, 28, 23, 0, tzinfo=UTC)  # inside it


def _february_counted_live(world: World) -> None:
    now = world.clock.now
    world.clock.now = LIVE_FEB
    world.ingest(2, "live-feb")
    world.clock.now = now


def test_a_refused_history_row_sent_twice_in_one_batch_is_refused_twice(history: World) -> None:
    world = history
    _february_counted_live(world)
    [row] = events(world, 4)
    results = record(world, [row, dataclasses.replace(row)])
    # Nothing was counted, so the repeat must not say "duplicate" (counted before).
    assert [(r.outcome, r.field) for r in results] == [(Outcome.ERROR, "ts")] * 2
    assert counter(world, "2026-02") == (1, 2)


def test_a_history_row_whose_key_was_counted_live_with_other_content_is_a_conflict(
    history: World,
) -> None:
    world = history
    _february_counted_live(world)
    other = dataclasses.replace(
        submission(world.tenant, 3, LIVE_FEB, key="live-feb", customer="cus_a"), history=True
    )
    assert [r.outcome for r in record(world, [other])] == [Outcome.CONFLICT]
    world.restart()  # a writer that never saw the key: the stored claim decides
    assert [r.outcome for r in record(world, [other])] == [Outcome.CONFLICT]
    assert counter(world, "2026-02") == (1, 2)


def test_a_history_file_across_the_horizon_keeps_its_recent_rows_of_a_history_period_there(
    history: World,
) -> None:
    world = history
    # A history file sorted by time: February 20 is older than the horizon, February 25
    # inside it; both fall in February, which the first row opens as history.
    rows = [*events(world, 4), *events(world, 6, at=LIVE_LATE)]
    results = record(world, rows)
    # Sent as history into a history period: counted there, not carried into March
    # (which the push worker would bill on the customer's next invoice).
    assert [(r.outcome, r.late) for r in results] == [(Outcome.ACCEPTED, Lateness.HISTORY)] * 2
    assert counter(world, "2026-02") == (2, 10)
    world.ingest(1, "live-now")
    assert counter(world, "2026-03") == (1, 1)
    assert push_everything(world) == 1
    assert (stripe_total(world, FEB), stripe_total(world, MAR)) == (0, 1)
    # The same row sent live (without the flag) is late usage, as before: carried.
    live = submission(world.tenant, 9, LIVE_LATE + timedelta(hours=1), customer="cus_a")
    assert [r.late for r in record(world, [live])] == [Lateness.CARRIED]


def _at_once(*sends: tuple[World, Sequence[UsageSubmission]]) -> list[list[IngestResult]]:
    """Each batch sent by its own writer process (its own stores), all at the same moment."""
    answers: list[list[IngestResult]] = [[] for _ in sends]
    start = threading.Barrier(len(sends))

    def send(n: int, world: World, batch: Sequence[UsageSubmission]) -> None:
        start.wait()
        answers[n] = world.stores.app.usage.record_usage(batch)

    threads = [threading.Thread(target=send, args=(n, *s)) for n, s in enumerate(sends)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def test_two_writers_importing_at_once_count_each_row_once_and_decide_a_period_once(
    history: World,
) -> None:
    world = history
    other = World(world.settings, world.clock, world.emulator)  # a second writer process
    # A metric whose lateness window still holds February: live usage could count there.
    world.stores.app.declare_metric(
        world.tenant, MetricDefinition("slow", Aggregation.SUM, lateness_seconds=20 * 86400)
    )
    try:
        for n in range(4):
            customer = f"cus_{n}"
            # The same 30 rows from both writers (one in reverse order): each counted once.
            rows = [
                submission(
                    world.tenant,
                    i + 1,
                    FEBRUARY_10 + timedelta(minutes=i),
                    customer=customer,
                    history=True,
                )
                for i in range(30)
            ]
            first, second = _at_once((world, rows), (other, rows[::-1]))
            outcomes = [r.outcome for r in first + second]
            assert (outcomes.count(Outcome.ACCEPTED), outcomes.count(Outcome.DUPLICATE)) == (30, 30)
            world.stores.views.runner.catch_up()
            [row] = world.stores.views.counters.counters(
                world.tenant, customer_ref=customer, metric="api_calls", period="2026-02"
            )
            assert row.value == 465
            # History and live usage for one fresh period at once: the period is one or
            # the other, never both.
            old = [
                submission(
                    world.tenant, 1, FEBRUARY_10, metric="slow", customer=customer, history=True
                )
            ]
            live = [submission(world.tenant, 10, LATE_FEBRUARY, metric="slow", customer=customer)]
            [imported], [counted] = _at_once((world, old), (other, live))
            period: UsagePeriod = world.stores.app.repository.get(
                usage_period_id(world.tenant, customer, "slow", "2026-02")
            )
            if period.history:
                assert imported.late is Lateness.HISTORY and counted.late is Lateness.CARRIED
            else:
                assert (imported.outcome, imported.field) == (Outcome.ERROR, "ts")
                assert counted.late is Lateness.IN_WINDOW
    finally:
        other.stores.close()
