"""History import at its edges: repeats of a refused row, keys claimed live, on SQLite and PG.

The world of tests/integration/test_history_import.py: the clock at
2026-03-10 12:00, a 15-day ingest horizon, February reachable only as history.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from domain.ingest import Lateness, Outcome
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
