"""Group-commit-sized batches on SQLite and PostgreSQL.

``adapters/pg_recorder.py`` switches from the pipelined insert to ``COPY``
from ``COPY_FROM_ROWS`` rows up, and ``adapters/sqlite_recorder.py`` inserts
with one ``executemany``; the other persistence tests mostly write small
batches, so these write batches well above it: racing writers, a conflict
inside a large batch, and the notification ids reported against the ones
the store gave the rows.
"""

from __future__ import annotations

from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import IntegrityError

from adapters.persistence import open_stores
from adapters.pg_recorder import COPY_FROM_ROWS
from adapters.settings import Settings
from domain.idempotency import IdempotencyKey
from domain.ingest import Outcome, UsageSubmission
from tests.conftest import FakeClock
from tests.helpers import race_writers, setup_tenant, submission

BATCH = 150  # events: 300 rows with their claims, well above COPY_FROM_ROWS


def test_batches_are_above_the_copy_threshold() -> None:
    assert 2 * BATCH >= 2 * COPY_FROM_ROWS


def test_racing_writers_with_large_batches_count_each_key_once(
    settings: Settings, clock: FakeClock
) -> None:
    """Three app instances (three processes) send the same large batches at once."""

    def batch_of(tenant: UUID, writer: int, round_: int) -> list[UsageSubmission]:
        keys = [(writer * 37 + i) % BATCH for i in range(BATCH)]
        return [
            submission(tenant, 1 + k % 5, clock.now, key=f"r{round_}-k{k}", customer=f"c{k % 7}")
            for k in keys
        ]

    tenant, outcomes, writers = race_writers(settings, clock, 3, 4, batch_of)
    try:
        assert outcomes.count(Outcome.ACCEPTED) == 4 * BATCH
        assert outcomes.count(Outcome.DUPLICATE) == 2 * 4 * BATCH
        writers[0].views.runner.catch_up()
        total = sum(c.value for c in writers[0].views.counters.counters(tenant))
        assert total == 4 * sum(1 + k % 5 for k in range(BATCH))
    finally:
        for w in writers:
            w.close()


def test_a_claimed_key_inside_a_large_batch_rejects_the_write_then_the_rest_lands(
    settings: Settings, clock: FakeClock
) -> None:
    """Another process claimed one key of the batch: the store refuses the whole COPY,
    the recorder learns the claim and writes the other events, each exactly once."""
    first = open_stores(settings, clock)
    second = open_stores(settings, clock)
    try:
        tenant = setup_tenant(first)
        first.app.usage.record_usage([submission(tenant, 1, clock.now, key="k-7")])
        batch = [submission(tenant, 1, clock.now, key=f"k-{i}") for i in range(BATCH)]

        results = second.app.usage.record_usage(batch)

        outcomes = [r.outcome for r in results]
        assert outcomes[7] is Outcome.DUPLICATE
        assert outcomes.count(Outcome.ACCEPTED) == BATCH - 1
        second.views.runner.catch_up()
        assert sum(c.value for c in second.views.counters.counters(tenant)) == BATCH
    finally:
        second.close()
        first.close()


def test_a_large_insert_reports_the_notification_ids_the_store_gave_its_rows(
    settings: Settings, clock: FakeClock
) -> None:
    """COPY (PostgreSQL) and executemany (SQLite) cannot return ids: they are derived."""
    stores = open_stores(settings, clock)
    try:
        tenant = setup_tenant(stores)
        app = stores.app
        claims = [
            IdempotencyKey.claimed(uuid4(), tenant, f"n-{i}", "f" * 64, uuid4(), i)
            for i in range(COPY_FROM_ROWS + 5)
        ]
        stored = [app.mapper.to_stored_event(c) for c in claims]

        ids = app.recorder.insert_events(stored)

        assert ids is not None
        assert len(ids) == len(stored)
        log = app.recorder.select_notifications(start=ids[0], limit=len(ids) + 10)
        assert [n.id for n in log] == list(ids)
        assert [(n.originator_id, n.originator_version, n.state) for n in log] == [
            (s.originator_id, s.originator_version, s.state) for s in stored
        ]
        with pytest.raises(IntegrityError):
            app.recorder.insert_events(stored)  # the same rows again: refused, all of them
        assert app.recorder.max_notification_id() == ids[-1]
    finally:
        stores.close()
