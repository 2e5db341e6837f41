"""Replay: counters derived again from the event log, compared, and fixed on request.

Each test breaks the counters view by hand (as a bug or a bad restore
would), then replays: a dry run must report the damage and write nothing;
apply must leave the views exactly as a rebuild from the log would, and a
second apply must find nothing to do.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from adapters.event_log import RecorderEventLog
from adapters.persistence import Stores
from api import cli
from domain.adjusting import AdjustmentService
from domain.meters import Aggregation, MetricDefinition
from domain.usage import usage_period_id
from projections.base import Positioned
from projections.counters import TALLY_COLUMNS
from projections.replay import CounterReplayer, ReplayPage, ReplayQuery
from tests.conftest import FakeClock
from tests.helpers import submission

MARCH = (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
CUSTOMERS = [f"cus_{n}" for n in range(5)]


def setup_tenant(stores: Stores, slug: str = "acme") -> UUID:
    tenant = stores.app.register_tenant(slug, slug.title()).id
    # 35 days: February's usage still counts in February on March 15.
    stores.app.declare_metric(
        tenant, MetricDefinition("api_calls", Aggregation.SUM, lateness_seconds=35 * 86400)
    )
    stores.app.declare_metric(tenant, MetricDefinition("seats", Aggregation.MAX))
    return tenant


def ingest(stores: Stores, tenant: UUID, clock: FakeClock, prefix: str = "k") -> None:
    """Usage of five customers in March (both metrics) and of two of them in February."""
    batch = []
    for n, customer in enumerate(CUSTOMERS):
        for i in range(4):
            at = clock.now - timedelta(hours=3 * i + n)
            batch.append(
                submission(tenant, Decimal("1.5"), at, f"{prefix}{n}-{i}", customer=customer)
            )
            batch.append(
                submission(
                    tenant, i + n, at, f"{prefix}s{n}-{i}", metric="seats", customer=customer
                )
            )
    for customer in CUSTOMERS[:2]:
        at = datetime(2026, 2, 20, 9, 30, tzinfo=UTC)
        batch.append(submission(tenant, 7, at, f"{prefix}feb-{customer}", customer=customer))
    stores.app.usage.record_usage(batch)
    stores.views.runner.catch_up()


def replayer(stores: Stores) -> CounterReplayer:
    return CounterReplayer(
        stores.views.counters, RecorderEventLog(stores.app.recorder, stores.app.mapper)
    )


def march(tenant: UUID, **fields: Any) -> ReplayQuery:
    return ReplayQuery(tenant, *MARCH, **fields)


def dump(stores: Stores, *, with_write_time: bool = True) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the counters view (``updated_at`` says when a row was written, not what)."""
    counters = f"tenant_id, customer_ref, metric, period, aggregation, {TALLY_COLUMNS}"
    if with_write_time:
        counters += ", updated_at"
    hours = f"tenant_id, customer_ref, metric, hour, {TALLY_COLUMNS}"
    with stores.views.store.transaction() as tx:
        return {
            "sm_counters": tx.execute(f"SELECT {counters} FROM sm_counters ORDER BY 1, 2, 3, 4"),
            "sm_counter_hours": tx.execute(
                f"SELECT {hours} FROM sm_counter_hours ORDER BY 1, 2, 3, 4"
            ),
        }


def rebuilt(stores: Stores) -> dict[str, list[tuple[Any, ...]]]:
    """The counters view as a rebuild from the whole log makes it."""
    stores.views.runner.rebuild()
    return dump(stores, with_write_time=False)


def execute(stores: Stores, sql: str, *params: Any) -> None:
    with stores.views.store.transaction() as tx:
        tx.execute(sql, params)


def corrupt(stores: Stores, customer: str = "cus_1", metric: str = "api_calls") -> datetime:
    """Break one March counter, one of its hour rows, and add an hour row nothing counted."""
    store = stores.views.store
    execute(
        stores,
        "UPDATE sm_counters SET total = ?, event_count = ?"
        " WHERE customer_ref = ? AND metric = ? AND period = '2026-03'",
        store.encode_decimal(Decimal(99)),
        40,
        customer,
        metric,
    )
    with store.transaction() as tx:
        hour = store.decode_time(
            tx.execute(
                "SELECT MIN(hour) FROM sm_counter_hours WHERE customer_ref = ? AND metric = ?"
                " AND hour >= ?",
                (customer, metric, store.encode_time(MARCH[0])),
            )[0][0]
        )
    assert hour is not None
    execute(
        stores,
        "UPDATE sm_counter_hours SET total = ? WHERE customer_ref = ? AND metric = ? AND hour = ?",
        store.encode_decimal(Decimal(-3)),
        customer,
        metric,
        store.encode_time(hour),
    )
    stray = datetime(2026, 3, 2, 5, tzinfo=UTC)
    execute(
        stores,
        f"INSERT INTO sm_counter_hours (tenant_id, customer_ref, metric, hour, {TALLY_COLUMNS})"
        " SELECT tenant_id, customer_ref, metric, ?, event_count, total, maximum, last_value,"
        " last_at, watermark, late_events, last_position, version FROM sm_counter_hours"
        " WHERE customer_ref = ? AND metric = ? AND hour = ?",
        store.encode_time(stray),
        customer,
        metric,
        store.encode_time(hour),
    )
    return hour


def by_key(page: ReplayPage) -> dict[tuple[str, str, str], Any]:
    return {(c.info.customer_ref, c.info.metric, c.info.period): c for c in page.counters}


def test_a_dry_run_reports_the_difference_and_writes_nothing(
    stores: Stores, clock: FakeClock
) -> None:
    tenant = setup_tenant(stores)
    ingest(stores, tenant, clock)
    truth = dump(stores, with_write_time=False)
    corrupt(stores)
    broken = dump(stores)

    page = replayer(stores).run(march(tenant), apply=False)

    assert dump(stores) == broken  # not a row written, not even a write time
    assert not page.applied
    assert page.next_after is None
    assert len(page.counters) == 10  # 5 customers x 2 metrics in March; February is not asked
    [changed] = page.changed
    assert (changed.info.customer_ref, changed.info.metric) == ("cus_1", "api_calls")
    assert changed.before is not None and changed.after is not None
    assert (changed.before.total, changed.before.event_count) == (Decimal(99), 40)
    assert (changed.after.total, changed.after.event_count) == (Decimal(6), 4)
    assert changed.difference == Decimal(-93)
    assert len(changed.hours) == 2  # the broken hour and the stray one
    stray = [h for h in changed.hours if h.after is None]
    assert [h.hour for h in stray] == [datetime(2026, 3, 2, 5, tzinfo=UTC)]
    assert all(c.pending_events == 0 for c in page.counters)
    assert page.position == stores.app.recorder.max_notification_id()

    # What a dry run reports is exactly what the log says.
    assert rebuilt(stores) == truth


def test_apply_fixes_counters_and_hours_and_a_second_apply_changes_nothing(
    stores: Stores, clock: FakeClock
) -> None:
    tenant = setup_tenant(stores)
    ingest(stores, tenant, clock)
    corrupt(stores)
    corrupt(stores, customer="cus_3", metric="seats")
    execute(stores, "DELETE FROM sm_counters WHERE customer_ref = 'cus_4' AND metric = 'seats'")

    first = replayer(stores).run(march(tenant), apply=True)

    assert first.applied
    fixed = by_key(first)
    assert {k for k, c in fixed.items() if c.changed} == {
        ("cus_1", "api_calls", "2026-03"),
        ("cus_3", "seats", "2026-03"),
        ("cus_4", "seats", "2026-03"),
    }
    seats = fixed[("cus_3", "seats", "2026-03")]
    assert seats.after is not None and seats.info.aggregation is Aggregation.MAX
    assert seats.value(seats.after) == Decimal(6)  # the largest quantity: 3 + 3
    missing = fixed[("cus_4", "seats", "2026-03")]
    assert missing.before is None and missing.difference == Decimal(7)
    after_apply = dump(stores)

    second = replayer(stores).run(march(tenant), apply=True)

    assert second.changed == [] and not second.applied
    assert dump(stores) == after_apply  # nothing written the second time
    assert dump(stores, with_write_time=False) == rebuilt(stores)


def test_filters_and_the_cursor_page_through_every_period(stores: Stores, clock: FakeClock) -> None:
    tenant = setup_tenant(stores)
    ingest(stores, tenant, clock)
    everything = ReplayQuery(tenant, datetime(2026, 1, 1, tzinfo=UTC), MARCH[1], limit=1000)
    assert len(replayer(stores).run(everything, apply=False).counters) == 12

    seen: list[tuple[str, str, str]] = []
    pages = 0
    query = march(tenant, metrics=("api_calls",), limit=2)
    while True:
        page = replayer(stores).run(query, apply=False)
        pages += 1
        seen += by_key(page)
        if page.next_after is None:
            break
        query = march(tenant, metrics=("api_calls",), limit=2, after=page.next_after)
    assert pages == 3
    assert seen == [(c, "api_calls", "2026-03") for c in CUSTOMERS]  # in order, each once

    some = march(tenant, customers=("cus_0", "cus_2"))
    assert sorted(by_key(replayer(stores).run(some, apply=False))) == [
        ("cus_0", "api_calls", "2026-03"),
        ("cus_0", "seats", "2026-03"),
        ("cus_2", "api_calls", "2026-03"),
        ("cus_2", "seats", "2026-03"),
    ]
    # [since, until) overlaps a period's interval: one second of February is enough.
    edge = ReplayQuery(
        tenant, datetime(2026, 2, 28, 23, 59, 59, tzinfo=UTC), MARCH[0], metrics=("api_calls",)
    )
    assert sorted(by_key(replayer(stores).run(edge, apply=False))) == [
        ("cus_0", "api_calls", "2026-02"),
        ("cus_1", "api_calls", "2026-02"),
    ]


def test_other_tenants_are_never_read_nor_written(stores: Stores, clock: FakeClock) -> None:
    acme = setup_tenant(stores)
    globex = setup_tenant(stores, "globex")
    ingest(stores, acme, clock)
    ingest(stores, globex, clock, prefix="g")
    execute(
        stores,
        "UPDATE sm_counters SET total = ? WHERE tenant_id = ?",
        stores.views.store.encode_decimal(Decimal(0)),
        str(globex),
    )
    broken_globex = [r for r in dump(stores)["sm_counters"] if r[0] == str(globex)]

    page = replayer(stores).run(march(acme), apply=True)

    assert page.changed == []
    assert {c.info.tenant_id for c in page.counters} == {acme}
    assert [r for r in dump(stores)["sm_counters"] if r[0] == str(globex)] == broken_globex
    assert len(replayer(stores).run(march(globex), apply=True).changed) == 10


def test_a_view_behind_the_log_is_not_a_difference(stores: Stores, clock: FakeClock) -> None:
    tenant = setup_tenant(stores)
    ingest(stores, tenant, clock)
    later = [submission(tenant, 2, clock.now, f"late{i}", customer="cus_1") for i in range(3)]
    stores.app.usage.record_usage(later)  # the runner has not seen these yet
    behind = replayer(stores).run(march(tenant, customers=("cus_1",)), apply=False)
    assert behind.changed == []
    calls = by_key(behind)[("cus_1", "api_calls", "2026-03")]
    assert calls.pending_events == 3
    assert behind.position < (stores.app.recorder.max_notification_id() or 0)

    # Broken while behind: apply fixes the row as of the view's position ...
    corrupt(stores)
    fixed = by_key(replayer(stores).run(march(tenant, customers=("cus_1",)), apply=True))
    calls = fixed[("cus_1", "api_calls", "2026-03")]
    assert calls.after is not None and calls.after.total == Decimal(6)  # not 12: 6 are to come
    # ... and the runner adds what came after, as it would have.
    stores.views.runner.catch_up()
    [counter] = stores.views.counters.counters(tenant, "cus_1", "api_calls", "2026-03")
    assert counter.value == Decimal(12)
    assert replayer(stores).run(march(tenant), apply=False).changed == []
    assert dump(stores, with_write_time=False) == rebuilt(stores)


class LaggingLog(RecorderEventLog):
    """The log as a replay would see it had the runner moved on between its reads."""

    def __init__(self, stores: Stores, stale: list[Positioned], stale_head: int) -> None:
        super().__init__(stores.app.recorder, stores.app.mapper)
        self.stale = stale
        self.stale_head = stale_head
        self.calls = 0

    def head(self) -> int:
        self.calls += 1
        return self.stale_head if self.calls == 1 else super().head()

    def events(self, aggregate_ids: Any, topics: Any = ()) -> list[Positioned]:
        if self.calls == 1:
            return [p for p in self.stale if p[1].originator_id in set(aggregate_ids)]
        return super().events(aggregate_ids, topics)


def test_events_the_runner_counted_after_they_were_read_are_read_again(
    stores: Stores, clock: FakeClock
) -> None:
    tenant = setup_tenant(stores)
    ingest(stores, tenant, clock)
    period = usage_period_id(tenant, "cus_1", "api_calls", "2026-03")
    log = RecorderEventLog(stores.app.recorder, stores.app.mapper)
    stale_head = log.head()
    stale = log.events([period])
    stores.app.usage.record_usage([submission(tenant, 5, clock.now, "new", customer="cus_1")])
    stores.views.runner.catch_up()
    lagging = LaggingLog(stores, stale, stale_head)

    page = CounterReplayer(stores.views.counters, lagging).run(
        march(tenant, customers=("cus_1",), metrics=("api_calls",)), apply=True
    )

    assert lagging.calls == 2  # the view had passed the head first seen: read again
    assert page.changed == []  # the new event was not taken for a difference
    assert dump(stores, with_write_time=False) == rebuilt(stores)


def test_corrections_share_hours_across_periods_and_stay_right(
    stores: Stores, clock: FakeClock
) -> None:
    tenant = setup_tenant(stores)
    ingest(stores, tenant, clock)
    adjustments = AdjustmentService(stores.app)
    for quantity in ("2", "3"):  # counted in March, then in April, in the hour they are applied
        proposed, _ = adjustments.propose(
            tenant, "cus_1", "api_calls", Decimal(quantity), actor="test", reason="credit"
        )
        adjustments.approve(tenant, proposed.id, "test", "ok")
        clock.advance(days=31)
    stores.views.runner.catch_up()
    truth = dump(stores, with_write_time=False)
    only_march = march(tenant, customers=("cus_1",), metrics=("api_calls",))
    assert replayer(stores).run(only_march, apply=False).changed == []

    # The correction hours (wall-clock time) hold April's correction too: a March-only
    # replay must keep it there when it rewrites them.
    execute(
        stores,
        "UPDATE sm_counter_hours SET total = ? WHERE customer_ref = 'cus_1' AND hour >= ?",
        stores.views.store.encode_decimal(Decimal(1000)),
        stores.views.store.encode_time(datetime(2026, 4, 1, tzinfo=UTC)),
    )
    fixed = replayer(stores).run(only_march, apply=True)
    [counter] = fixed.changed
    assert counter.before == counter.after  # the March counter itself was right
    assert counter.hours
    assert dump(stores, with_write_time=False) == truth


@pytest.mark.timeout(120)
def test_replays_beside_a_running_projection_leave_the_views_as_a_rebuild_would(
    stores: Stores, clock: FakeClock
) -> None:
    tenant = setup_tenant(stores)
    ingest(stores, tenant, clock)
    runner = stores.views.runner
    runner.poll_interval = 0.001
    stop = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        n = 0
        try:
            while not stop.is_set():
                n += 1
                customer = CUSTOMERS[n % len(CUSTOMERS)]
                stores.app.usage.record_usage(
                    [submission(tenant, 1, clock.now, f"w{n}", customer=customer)]
                )
                runner.wake()
        except BaseException as error:
            errors.append(error)

    writer = threading.Thread(target=write)
    runner.start()
    writer.start()
    try:
        for _ in range(15):
            corrupt(stores, customer=CUSTOMERS[_ % len(CUSTOMERS)])
            replayer(stores).run(march(tenant), apply=True)
    finally:
        stop.set()
        writer.join()
        runner.stop()
    assert not errors
    runner.catch_up()
    assert replayer(stores).run(march(tenant), apply=False).changed == []
    assert dump(stores, with_write_time=False) == rebuilt(stores)


# -- the command ----------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any, str]:
    code = cli.main(["replay", "--tenant", "acme", *args])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err


@pytest.mark.usefixtures("cli_env")
def test_the_command_pages_to_the_end_and_applies(
    stores: Stores, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    tenant = setup_tenant(stores)
    ingest(stores, tenant, clock)
    corrupt(stores)
    corrupt(stores, customer="cus_4")
    broken = dump(stores)
    span = ["--since", "2026-03-01T00:00:00Z", "--until", "2026-04-01T00:00:00Z"]

    code, out, err = run_cli(capsys, *span, "--metric", "api_calls", "--page-size", "2")
    assert code == 1  # a dry run that found differences
    assert dump(stores) == broken
    assert err.count("written nothing") == 3  # a line per page
    assert [c["customerRef"] for c in out["counters"]] == CUSTOMERS
    assert out["summary"] == {"examined": 5, "changed": 2, "applied": 0, "pendingEvents": 0}
    assert (out["mode"], out["pushes"], out["nextCursor"]) == ("dry-run", None, None)

    code, out, err = run_cli(capsys, *span, "--customer", "cus_4", "--apply")
    assert code == 0
    assert out["summary"]["applied"] == 1 and out["pushes"] == "sweep"
    code, out, _ = run_cli(capsys, *span, "--apply")
    assert code == 0 and out["summary"]["applied"] == 1  # cus_1 was left
    code, out, _ = run_cli(capsys, *span)
    assert code == 0 and out["summary"]["changed"] == 0

    code, out, err = run_cli(capsys, *span, "--metric", "nope")
    assert code == 1 and out is None
    assert "metrics: 'nope' is not a declared metric" in err
