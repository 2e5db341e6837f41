"""The same persistence tests on SQLite and PostgreSQL (the ``settings`` fixture)."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from uuid import UUID

from eventsourcing.domain import Snapshot

from adapters.persistence import Stores, open_stores
from adapters.settings import PostgresSettings, Settings
from domain.ingest import Outcome, UsageSubmission
from domain.ledger import StripeLedger
from domain.usage import usage_period_id
from tests.conftest import FakeClock, reset_postgres
from tests.helpers import race_writers, setup_tenant, submission


def test_keys_stay_claimed_across_a_restart(settings: Settings, clock: FakeClock) -> None:
    first = open_stores(settings, clock)
    tenant = setup_tenant(first)
    event = submission(tenant, 4, clock.now, key="evt-1")  # type: ignore[arg-type]
    assert first.app.usage.record_usage([event])[0].outcome is Outcome.ACCEPTED
    first.close()

    second = open_stores(settings, clock)  # a new process: empty caches
    try:
        assert second.app.usage.record_usage([event])[0].outcome is Outcome.DUPLICATE
        changed = submission(tenant, 5, clock.now, key="evt-1")  # type: ignore[arg-type]
        assert second.app.usage.record_usage([changed])[0].outcome is Outcome.CONFLICT
        assert second.app.usage_period(tenant, "cus_1", "api_calls", "2026-03").total == 4  # type: ignore[arg-type]
    finally:
        second.close()


def test_counters_follow_the_log_and_a_rebuild_gives_the_same_views(
    stores: Stores, clock: FakeClock
) -> None:
    tenant = setup_tenant(stores)
    batch = [
        submission(
            tenant,
            Decimal("1.25"),
            clock.now - timedelta(hours=h),
            key=f"e{h}",
            customer=f"c{h % 3}",
        )  # type: ignore[arg-type]
        for h in range(30)
    ]
    stores.app.usage.record_usage(batch)
    stores.views.runner.catch_up()
    counters = stores.views.counters.counters(tenant)  # type: ignore[arg-type]
    assert {c.customer_ref: c.value for c in counters} == {
        "c0": Decimal("12.5"),
        "c1": Decimal("12.5"),
        "c2": Decimal("12.5"),
    }
    hours_before = stores.views.counters.hours(
        tenant, "c0", "api_calls", clock.now - timedelta(days=2), clock.now + timedelta(hours=1)
    )  # type: ignore[arg-type]
    events_before = stores.views.events.page(tenant, _all(), None, 1000)  # type: ignore[arg-type]

    stores.views.runner.rebuild()
    assert stores.views.counters.counters(tenant) == counters  # type: ignore[arg-type]
    assert (
        stores.views.counters.hours(
            tenant, "c0", "api_calls", clock.now - timedelta(days=2), clock.now + timedelta(hours=1)
        )
        == hours_before
    )  # type: ignore[arg-type]
    assert stores.views.events.page(tenant, _all(), None, 1000) == events_before  # type: ignore[arg-type]
    assert len(events_before) == 30


def test_the_projection_resumes_after_a_restart_without_counting_twice(
    settings: Settings, clock: FakeClock
) -> None:
    first = open_stores(settings, clock)
    tenant = setup_tenant(first)
    first.app.usage.record_usage([submission(tenant, 1, clock.now, key=f"a{i}") for i in range(10)])  # type: ignore[arg-type]
    first.views.runner.catch_up()
    first.app.usage.record_usage([submission(tenant, 1, clock.now, key=f"b{i}") for i in range(5)])  # type: ignore[arg-type]
    first.close()  # stopped before projecting the second batch

    second = open_stores(settings, clock)
    try:
        assert second.views.runner.lag().events > 0
        second.views.runner.catch_up()
        second.views.runner.catch_up()
        [counter] = second.views.counters.counters(tenant)  # type: ignore[arg-type]
        assert (counter.value, counter.tally.event_count) == (Decimal(15), 15)
        assert second.views.runner.lag().events == 0
    finally:
        second.close()


def test_late_events_are_listed_and_counted_apart(stores: Stores, clock: FakeClock) -> None:
    tenant = setup_tenant(stores)
    clock.now = clock.now.replace(month=4, day=10)
    stores.app.usage.record_usage(
        [submission(tenant, 9, clock.now.replace(month=3, day=20), key="old")]
    )  # type: ignore[arg-type]
    stores.app.usage.record_usage([submission(tenant, 2, clock.now, key="new")])  # type: ignore[arg-type]
    stores.views.runner.catch_up()
    march = stores.views.counters.counters(tenant, period="2026-03")  # type: ignore[arg-type]
    assert [(c.value, c.tally.late_events) for c in march] == [(Decimal(0), 1)]
    april = stores.views.counters.counters(tenant, period="2026-04")  # type: ignore[arg-type]
    assert [c.value for c in april] == [Decimal(11)]  # carried in as a correction
    listed = stores.views.events.page(tenant, _all(), None, 10)  # type: ignore[arg-type]
    assert [(e.period, e.status) for e in listed] == [
        ("2026-04", "correction"),
        ("2026-03", "late"),
        ("2026-04", "counted"),
    ]
    assert "carried into period 2026-04" in (listed[1].note or "")


def test_racing_writers_on_overlapping_keys_count_each_key_once(
    settings: Settings, clock: FakeClock
) -> None:
    """Four app instances (as four processes would) send overlapping keys at once."""

    def batch_of(tenant: UUID, writer: int, round_: int) -> list[UsageSubmission]:
        # Each writer sends keys 0..29 of this round, in its own order: every
        # key is sent four times, by four writers, mostly at the same moment.
        keys = [(writer * 7 + i) % 30 for i in range(30)]
        return [submission(tenant, k + 1, clock.now, key=f"r{round_}-k{k}") for k in keys]

    tenant, outcomes, writers = race_writers(settings, clock, 4, 10, batch_of)
    try:
        assert outcomes.count(Outcome.ACCEPTED) == 300
        assert outcomes.count(Outcome.DUPLICATE) == 900
        writers[0].views.runner.catch_up()
        [counter] = writers[0].views.counters.counters(tenant)  # type: ignore[arg-type]
        assert counter.value == 10 * sum(range(1, 31))
    finally:
        for w in writers:
            w.close()


def _all():  # type: ignore[no-untyped-def]
    from projections.usage_events import EventFilter

    return EventFilter()


def test_processes_starting_together_create_the_schema_once(
    postgres_database: PostgresSettings, tmp_path: Path
) -> None:
    """API processes, the writer and workers start at once; their DDL must not collide."""
    reset_postgres(postgres_database)
    settings = Settings(data_dir=tmp_path, postgres=postgres_database)
    start = threading.Barrier(6)
    errors: list[BaseException] = []

    def open_and_close() -> None:
        start.wait()
        try:
            open_stores(settings).close()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=open_and_close) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_snapshots_taken_before_closing_existed_still_load(
    settings: Settings, stores: Stores, clock: FakeClock
) -> None:
    """A period and a ledger snapshotted by the previous release (fewer attributes) upcast."""
    tenant = setup_tenant(stores)
    app = stores.app
    app.usage.record_usage([submission(tenant, 1, clock.now, key="k0")])  # type: ignore[arg-type]
    period_id = usage_period_id(tenant, "cus_1", "api_calls", "2026-03")  # type: ignore[arg-type]
    period = app.repository.get(period_id)
    ledger = StripeLedger.open(tenant, period_id, "live")  # type: ignore[arg-type]
    app.save(ledger)
    old = []
    for aggregate, added in (
        (period, ("corrections", "invoice_id", "finalizes_at", "closed", "verdict")),
        (ledger, ("external_total", "repair_pending", "last_confirmed_at")),
    ):
        snapshot = Snapshot.take(aggregate)
        state = dict(snapshot.state)
        state.pop("class_version")
        for name in added:
            state.pop(name)
        old.append(Snapshot(**{**vars(snapshot), "state": state}))
    assert app.snapshots is not None
    app.snapshots.put(old)
    restarted = open_stores(settings, clock)
    try:
        [result] = restarted.app.usage.record_usage([submission(tenant, 2, clock.now, key="k1")])  # type: ignore[arg-type]
        assert result.outcome.value == "accepted"
        loaded = restarted.app.repository.get(period_id)
        assert (loaded.total, loaded.closed, loaded.verdict) == (Decimal(3), False, None)
        again = restarted.app.repository.get(ledger.id)
        assert (again.external_total, again.repair_pending) == (0, False)
    finally:
        restarted.close()
