"""`stripemeter projections rebuild`, on SQLite and PostgreSQL (the ``settings`` fixture).

Each test records usage through the application, lets the live views catch
up as the worker would, then rebuilds them into the shadow copy and checks
the views against what they were: table by table, row by row.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest
from eventsourcing.utils import get_topic

from adapters.persistence import Stores, build_views
from adapters.settings import Settings
from adapters.stripe_gateway import SdkStripeGateway
from api import cli
from domain.adjusting import AdjustmentService
from domain.alert_incidents import Reading, ResolvedBecause
from domain.alert_incidents import Target as AlertTarget
from domain.alerting import AlertService
from domain.ledger import StripeLedger
from domain.mappings import MeterMapping
from domain.meters import Aggregation, MetricDefinition
from domain.pushing import PushService, Target
from domain.tenancy import tenant_id_for
from domain.usage import usage_period_id
from projections.decoding import EventDecoder
from projections.log_rows import log_reader
from projections.rebuild import Rebuild, RebuildError, UnknownProjectionError
from projections.runner import TrackingConflictError
from projections.shadow_diff import WRITE_TIME_COLUMNS
from projections.store import StoreBusyError, ViewStore
from stripe_emulator.testing import TEST_API_KEY, RunningEmulator
from tests.conftest import FakeClock
from tests.helpers import submission

Tables = dict[str, list[tuple[Any, ...]]]


@pytest.fixture(autouse=True)
def no_shadow_left(request: pytest.FixtureRequest) -> None:
    """Every test starts without a partial rebuild (one PostgreSQL database serves them all)."""
    if "stores" in request.fixturenames:
        request.getfixturevalue("stores").views.store.drop_shadow()


def populate(stores: Stores, clock: FakeClock, events: int = 60, prefix: str = "e") -> UUID:
    """Usage of three customers and two metrics over many hours, a late event, a mapping."""
    app = stores.app
    tenant = tenant_id_for("acme")
    if prefix == "e":
        app.register_tenant("acme", "Acme")
        app.declare_metric(tenant, MetricDefinition("api_calls", Aggregation.SUM))
        app.declare_metric(tenant, MetricDefinition("storage_gb", Aggregation.MAX))
        app.map_customer(tenant, "cus_0", "cus_stripe_0", None)
        # Late events below reach back to last month's first days: past 35 days.
        app.set_ingest_horizon(tenant, 60)
    batch = [
        submission(
            tenant,
            Decimal(n % 7) + Decimal("0.25"),
            clock.now - timedelta(hours=n % 40),
            key=f"{prefix}{n}",
            customer=f"cus_{n % 3}",
            metric=("api_calls", "storage_gb")[n % 2],
        )
        for n in range(events)
    ]
    for start in range(0, len(batch), 25):
        app.usage.record_usage(batch[start : start + 25])
    # After last month's lateness window: recorded and listed, not counted.
    late = clock.now.replace(month=clock.now.month - 1, day=1)
    app.usage.record_usage([submission(tenant, 5, late, key=f"{prefix}-late", customer="cus_0")])
    # Imported history, older than the 60-day horizon: its own period, opened as history.
    old = clock.now - timedelta(days=120)
    history = submission(tenant, 3, old, key=f"{prefix}-history", customer="cus_1", history=True)
    assert app.usage.record_usage([history])[0].late == "history"
    if prefix == "e":
        alert_history(app, tenant, clock)
    return tenant


def alert_history(app: Any, tenant: UUID, clock: FakeClock) -> None:
    """Every alert event type, for the alerts view: a rule replaced (disabled, so that the
    live evaluator adds nothing), and an incident triggered, acknowledged, resolved."""
    service = AlertService(app)
    fields: dict[str, Any] = {
        "metric": "api_calls",
        "customer_ref": None,
        "kind": "spike",
        "threshold": Decimal("1.5"),
        "basis": None,
        "currency": None,
        "enabled": True,
        "cooldown_seconds": 60,
    }
    rule = service.create(tenant, service.spec(tenant, **fields))
    service.replace(tenant, rule.id, service.spec(tenant, **{**fields, "enabled": False}))
    gone = service.create(tenant, service.spec(tenant, **{**fields, "kind": "usage"}))
    service.delete(tenant, gone.id)
    period = app.period_for(tenant, "cus_1", clock.now)
    target = AlertTarget(
        rule.id, tenant, "cus_1", "api_calls", period.key, period.start, period.end, "spike"
    )
    reading = Reading(Decimal("9.25"), True, Decimal("0.5"))
    service.evaluate(target, Decimal("1.5"), 60, reading, clock.now)
    service.acknowledge(tenant, rule.id, target.incident_id, "api-key:x")
    service.resolve(
        target.incident_id, ResolvedBecause.ALERT_DISABLED, Decimal("1.5"), None, clock.now
    )


def rebuild_of(stores: Stores, **kwargs: Any) -> Rebuild:
    def build(store: ViewStore) -> list[Any]:
        return build_views(stores.app, store).runner.projections

    return Rebuild(
        stores.app.recorder,
        stores.app.mapper,
        stores.views.store,
        stores.views.runner.projections,
        build,
        **kwargs,
    )


def tables(stores: Stores) -> Tables:
    """Every row of every view, in a stable order, without the time-of-writing columns."""
    out: Tables = {}
    store = stores.views.store
    for projection in stores.views.runner.projections:
        for table in projection.tables:
            with store.transaction() as tx:
                names = store.live_columns(tx, table)
                kept = ", ".join(n for n in names if n not in WRITE_TIME_COLUMNS)
                rows = tx.execute(f"SELECT {kept} FROM {table}")
            out[table] = sorted(rows, key=repr)
    return out


def tracking(stores: Stores) -> dict[str, int]:
    with stores.views.store.transaction() as tx:
        return {name: int(position) for name, position in tx.execute("SELECT * FROM sm_tracking")}


def shadow_exists(stores: Stores, settings: Settings) -> bool:
    if settings.postgres is None:
        return (settings.data_dir / "views.rebuild.sqlite3").exists()
    with stores.views.store.transaction() as tx:
        return bool(tx.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'sm_rebuild'"))


def head(stores: Stores) -> int:
    return stores.app.recorder.max_notification_id() or 0


def exactly(event: Any) -> dict[str, tuple[type[Any], str]]:
    """An event's fields with their types and reprs: ``Decimal("1E+2") == 100``, not here."""
    return {name: (type(value), repr(value)) for name, value in vars(event).items()}


def decodes_like_the_mapper(stores: Stores) -> set[str]:
    """Read the whole log as the rebuild does and decode every entry a projection reads
    both ways: the msgspec decoder's events must be the mapper's, field for field.
    Returns the topics decoded by msgspec."""
    projections = stores.views.runner.projections
    classes = {cls for p in projections for cls in p.handles}
    topics = sorted({get_topic(cls) for cls in classes})
    decoder = EventDecoder(stores.app.mapper, classes)
    reader = log_reader(stores.app.recorder)
    assert reader is not None
    rows = reader.page(0, head(stores), topics, 1_000_000)
    assert rows and [r[0] for r in rows] == sorted(r[0] for r in rows)
    by_mapper = {
        n.id: n for n in stores.app.recorder.select_notifications(1, 1_000_000, topics=topics)
    }
    assert sorted(by_mapper) == [r[0] for r in rows]
    fast: set[str] = set()
    for position, originator_id, version, topic, state in rows:
        expected = stores.app.mapper.to_domain_event(by_mapper[position])
        fallbacks = decoder.fallbacks
        got = decoder.decode(topic, originator_id, version, state)
        assert type(got) is type(expected)
        assert exactly(got) == exactly(expected), topic
        if decoder.fallbacks == fallbacks:
            fast.add(topic)
    return fast


def test_a_rebuild_gives_the_views_it_replaces(
    stores: Stores, settings: Settings, clock: FakeClock
) -> None:
    populate(stores, clock)
    stores.views.runner.catch_up()
    before = tables(stores)
    assert before["sm_usage_events"] and before["sm_customers"] and before["sm_counter_hours"]

    report = rebuild_of(stores, batch_size=16).run()

    assert report.complete and report.swapped
    assert report.positions == dict.fromkeys(report.projections, head(stores))
    assert tables(stores) == before
    assert tracking(stores) == dict.fromkeys(report.projections, head(stores))
    assert not shadow_exists(stores, settings)


def test_dropping_every_view_and_rebuilding_gives_the_same_views(
    stores: Stores, clock: FakeClock
) -> None:
    populate(stores, clock)
    stores.views.runner.catch_up()
    before = tables(stores)
    with stores.views.store.transaction() as tx:
        for projection in stores.views.runner.projections:
            projection.clear(tx)
        tx.execute("DELETE FROM sm_tracking")

    rebuild_of(stores).run()

    assert tables(stores) == before


def test_every_kind_of_event_rebuilds_to_the_same_views(stores: Stores, clock: FakeClock) -> None:
    """Corrections carried and held, adjustments decided, a drift on a ledger, a closed period
    with its parity: dropping every view and rebuilding gives them back row for row."""
    tenant = populate(stores, clock)
    app = stores.app
    app.set_late_policy(tenant, "hold")
    held = clock.now.replace(month=clock.now.month - 1, day=2)
    app.usage.record_usage([submission(tenant, 4, held, key="held", customer="cus_1")])
    service = AdjustmentService(app)
    credit, _ = service.propose(tenant, "cus_2", "api_calls", Decimal(-2), actor="ops", reason="x")
    service.approve(tenant, credit.id, "ops", "ok")
    service.revert(tenant, credit.id, "ops", "undo")
    period_id = usage_period_id(tenant, "cus_0", "api_calls", clock.now.strftime("%Y-%m"))
    ledger = StripeLedger.open(tenant, period_id, "live")
    ledger.record_drift(5, 0, "delta", "ops", "events sent to Stripe outside StripeMeter")
    app.save(ledger)
    last_month = usage_period_id(
        tenant, "cus_0", "api_calls", clock.now.replace(month=clock.now.month - 1).strftime("%Y-%m")
    )

    def close(load: Any) -> list[Any]:
        period = load.get(last_month)
        period.schedule_closing("in_1", clock.now)
        period.close("test")
        period.record_parity(0, 0, 0)
        return [period]

    app.usage.change_periods(close)
    # Customers unmapped (waiting aside), and unmapped then mapped again (listed).
    for ref in ("cus_7", "cus_8"):
        customer, _ = app.map_customer(tenant, ref, f"cus_stripe_{ref}", None)
        customer.unmap("test")
        app.save(customer)
    customer, _ = app.map_customer(tenant, "cus_8", "cus_stripe_again", None)
    # Usage counted in calendar months, then a Stripe anchor mid-month, then another:
    # the usage moves by recorded events (domain/cycle_moves.py).
    app.usage.record_usage(
        [
            submission(tenant, 2, clock.now - timedelta(days=3), key="mv1", customer="cus_mv"),
            submission(tenant, 3, clock.now, key="mv2", customer="cus_mv"),
        ]
    )
    app.map_customer(tenant, "cus_mv", "cus_stripe_mv", clock.now - timedelta(days=1))
    app.usage.record_usage(
        [submission(tenant, 4, clock.now + timedelta(minutes=2), key="mv3", customer="cus_mv")]
    )
    app.map_customer(tenant, "cus_mv", "cus_stripe_mv", clock.now)
    stores.views.runner.catch_up()
    before = tables(stores)
    moved = [r for r in before["sm_usage_events"] if "moved" in repr(r)]
    assert len(moved) >= 4, moved  # each moved event: its row marked, and a row where it went
    assert before["sm_adjustments"] and before["sm_ledger_repairs"]
    assert [r[2] for r in before["sm_customers_unmapped"]] == ["cus_7"]
    assert sorted((r[2], r[3]) for r in before["sm_customers"]) == [
        ("cus_0", "cus_stripe_0"),
        ("cus_8", "cus_stripe_again"),
        ("cus_mv", "cus_stripe_mv"),
    ]
    assert any(row[-1] is not None for row in before["sm_usage_periods"])  # a verdict
    with stores.views.store.transaction() as tx:
        for projection in stores.views.runner.projections:
            projection.clear(tx)
        tx.execute("DELETE FROM sm_tracking")

    rebuild_of(stores).run()

    assert tables(stores) == before
    # Every event type of this log but the three with an upcaster or a list field
    # (decoded by the mapper: UsageMovedOut, PushConfirmed, Customer.Mapped) by msgspec.
    fast = decodes_like_the_mapper(stores)
    usage = "domain.usage:UsagePeriod."
    assert {
        f"{usage}{name}"
        for name in (
            "Opened",
            "UsageRecorded",
            "LateUsageRecorded",
            "CorrectionApplied",
            "UsageMovedIn",
            "ClosingScheduled",
            "PeriodClosed",
            "ParityRecorded",
            "HistoryOpened",
        )
    } | {
        "domain.adjustments:Adjustment.Proposed",
        "domain.adjustments:Adjustment.Approved",
        "domain.adjustments:Adjustment.Reverted",
        "domain.customers:Customer.Unmapped",
        "domain.customers:Customer.Remapped",
        "domain.ledger:StripeLedger.Opened",
        "domain.ledger:StripeLedger.DriftRecorded",
    } <= fast
    assert not {f"{usage}UsageMovedOut", "domain.customers:Customer.Mapped"} & fast


def test_a_dry_run_writes_nothing_and_finds_a_corrupted_row(
    stores: Stores, settings: Settings, clock: FakeClock
) -> None:
    tenant = populate(stores, clock)
    stores.views.runner.catch_up()
    before, positions = tables(stores), tracking(stores)

    report = rebuild_of(stores, batch_size=16).run(dry_run=True)

    assert report.complete and not report.swapped
    assert report.differences == 0
    assert {t.table for t in report.tables} == set(before)
    counters = next(t for t in report.tables if t.table == "sm_counters")
    assert counters.ignored_columns == ["updated_at"]
    assert counters.live_rows == counters.shadow_rows > 0
    assert (tables(stores), tracking(stores)) == (before, positions)
    assert not shadow_exists(stores, settings)

    # Corrupt the live views: one counter's total, one usage event gone.
    with stores.views.store.transaction() as tx:
        tx.execute(
            "UPDATE sm_counters SET total = ?"
            " WHERE customer_ref = 'cus_1' AND metric = 'api_calls' AND period = '2026-03'",
            (stores.views.store.encode_decimal(Decimal(999)),),
        )
        tx.execute(
            "DELETE FROM sm_usage_events"
            " WHERE position = (SELECT MAX(position) FROM sm_usage_events)"
        )
    corrupted = tables(stores)

    report = rebuild_of(stores).run(dry_run=True)

    diffs = {t.table: t for t in report.tables if t.differences}
    assert set(diffs) == {"sm_counters", "sm_usage_events"}
    assert (diffs["sm_counters"].differing, diffs["sm_usage_events"].only_shadow) == (1, 1)
    [sample] = diffs["sm_counters"].samples
    assert sample["kind"] == "differs"
    assert sample["key"]["customer_ref"] == "cus_1" and sample["key"]["tenant_id"] == str(tenant)
    assert Decimal(sample["live"]["total"]) == 999
    assert "total" in sample["shadow"] and set(sample["live"]) == {"total"}
    assert (tables(stores), tracking(stores)) == (corrupted, positions)
    assert not shadow_exists(stores, settings)


def test_an_interrupted_rebuild_resumes_where_it_stopped_and_ends_identical(
    stores: Stores, settings: Settings, clock: FakeClock
) -> None:
    populate(stores, clock, events=120)
    stores.views.runner.catch_up()
    before, positions = tables(stores), tracking(stores)

    first = rebuild_of(stores, batch_size=10).run(max_batches=3)
    assert not first.complete and not first.swapped
    assert 0 < max(first.positions.values()) < head(stores)
    assert shadow_exists(stores, settings)
    assert (tables(stores), tracking(stores)) == (before, positions)  # live untouched

    # Ctrl-C between two batches: the batches done so far are kept too.
    def interrupt_after_two(progress: Any, calls: list[int] = []) -> None:  # noqa: B006
        calls.append(progress.done)
        if len(calls) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rebuild_of(stores, batch_size=10, progress=interrupt_after_two).run()

    notices: list[str] = []
    resumed = rebuild_of(stores, batch_size=10, notice=notices.append).run()
    assert resumed.resumed_from is not None
    assert resumed.resumed_from > max(first.positions.values())
    assert any("resuming a previous rebuild from log position" in n for n in notices)
    assert resumed.complete and resumed.swapped
    assert resumed.events == head(stores) - resumed.resumed_from
    assert tables(stores) == before
    assert not shadow_exists(stores, settings)


def test_restart_discards_a_partial_rebuild(stores: Stores, clock: FakeClock) -> None:
    populate(stores, clock)
    stores.views.runner.catch_up()
    before = tables(stores)
    rebuild_of(stores, batch_size=10).run(max_batches=2)

    report = rebuild_of(stores, batch_size=10).run(restart=True)

    assert report.resumed_from is None and report.events == head(stores)
    assert tables(stores) == before


def test_a_subset_rebuilds_the_directory_it_reads_into_the_shadow(
    stores: Stores, clock: FakeClock
) -> None:
    """The counters look periods up in the directory: the shadow's, rebuilt beside them."""
    populate(stores, clock)
    stores.views.runner.catch_up()
    before = tables(stores)
    # The live directory lost its rows: a rebuild that read it would fail.
    with stores.views.store.transaction() as tx:
        tx.execute("DELETE FROM sm_usage_periods")
        tx.execute("DELETE FROM sm_counters")

    dry = rebuild_of(stores, names=["counters"]).run(dry_run=True)
    assert [t.table for t in dry.tables] == ["sm_counters", "sm_counter_hours"]
    counters = len(before["sm_counters"])
    assert [(t.table, t.only_shadow) for t in dry.tables if t.differences] == [
        ("sm_counters", counters)
    ]

    report = rebuild_of(stores, names=["counters"]).run()

    after = tables(stores)
    assert report.projections == ["counters"]
    assert after["sm_counters"] == before["sm_counters"]
    assert after["sm_usage_periods"] == []  # not chosen: not swapped in


def test_a_dry_run_compares_at_the_live_views_position(stores: Stores, clock: FakeClock) -> None:
    """Views behind the log (no worker running) are compared where they stand."""
    populate(stores, clock)
    stores.views.runner.catch_up()
    behind = tracking(stores)
    populate(stores, clock, events=30, prefix="more")  # not projected yet

    notices: list[str] = []
    report = rebuild_of(stores, notice=notices.append).run(dry_run=True)

    assert report.differences == 0
    assert report.positions == behind
    assert any("comparing where they stand" in notice for notice in notices)
    assert head(stores) > max(behind.values())


def test_a_runner_working_meanwhile_fails_its_compare_and_set_then_carries_on(
    stores: Stores, clock: FakeClock
) -> None:
    """The worker's runner need not stop: after a swap its next batch conflicts, cleanly."""
    populate(stores, clock)
    worker = stores.views.runner
    worker.catch_up()  # it now holds the positions it expects in memory
    populate(stores, clock, events=30, prefix="more")

    rebuild_of(stores).run()  # swaps in and catches the live views up to the head

    populate(stores, clock, events=10, prefix="later")
    with pytest.raises(TrackingConflictError):
        worker.run_once()  # rolled back: nothing written, nothing counted twice
    worker.catch_up()  # re-reads the positions and carries on

    rebuilt = tables(stores)
    with stores.views.store.transaction() as tx:
        keys = [key for (key,) in tx.execute("SELECT idempotency_key FROM sm_usage_events")]
    worker.rebuild()  # in place, from scratch
    assert tables(stores) == rebuilt
    assert len(keys) == len(set(keys))  # nothing listed twice
    assert {
        f"{prefix}{n}"
        for prefix, count in (("e", 60), ("more", 30), ("later", 10))
        for n in range(count)
    } <= set(keys)


def test_a_rebuild_while_a_worker_runs_and_usage_arrives(stores: Stores, clock: FakeClock) -> None:
    tenant = populate(stores, clock)
    stores.views.runner.start()
    stop = threading.Event()

    def ingest() -> None:
        n = 0
        while not stop.is_set() and n < 400:
            batch = [submission(tenant, 1, clock.now, key=f"live{n + i}") for i in range(5)]
            stores.app.usage.record_usage(batch)
            stores.views.runner.wake()
            n += 5

    writer = threading.Thread(target=ingest)
    writer.start()
    try:
        rebuild_of(stores, batch_size=20).run()
        rebuild_of(stores, batch_size=20, names=["counters", "usage_events"]).run()
    finally:
        stop.set()
        writer.join()
        stores.views.runner.stop()
    stores.views.runner.catch_up()

    assert rebuild_of(stores).run(dry_run=True).differences == 0
    recorded = tables(stores)["sm_usage_events"]
    assert len({row[0] for row in recorded}) == len(recorded)  # no event listed twice


def test_unknown_projection_names_are_refused_with_the_known_ones(stores: Stores) -> None:
    with pytest.raises(UnknownProjectionError) as refused:
        rebuild_of(stores, names=["counters", "nope"])
    assert "nope" in str(refused.value)
    for projection in stores.views.runner.projections:
        assert projection.name in str(refused.value)


def test_a_partial_rebuild_of_another_log_is_refused(stores: Stores, clock: FakeClock) -> None:
    populate(stores, clock)
    rebuild_of(stores, batch_size=10).run(max_batches=3)
    shadow = stores.views.store.shadow()
    try:
        with shadow.transaction() as tx:
            tx.execute("UPDATE sm_tracking SET position = position + 1000000")
    finally:
        shadow.close()

    with pytest.raises(RebuildError, match="not this log's"):
        rebuild_of(stores).run()
    rebuild_of(stores).run(restart=True)


def test_one_rebuild_at_a_time(stores: Stores) -> None:
    with stores.views.store.exclusive("projection-rebuild"), pytest.raises(StoreBusyError):
        rebuild_of(stores).run()


def test_a_dry_run_refuses_a_shadow_ahead_of_the_live_views(
    stores: Stores, clock: FakeClock
) -> None:
    populate(stores, clock)
    stores.views.runner.catch_up()
    live = max(tracking(stores).values())
    populate(stores, clock, events=30, prefix="more")  # not projected

    def interrupt_past_the_live_views(progress: Any) -> None:
        if progress.done > live:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # a partial rebuild, past the live views
        rebuild_of(stores, batch_size=10, progress=interrupt_past_the_live_views).run()

    with pytest.raises(RebuildError, match="went past the live views"):
        rebuild_of(stores).run(dry_run=True)


def test_the_ledger_rebuilds_too(
    stores: Stores, clock: FakeClock, emulator: RunningEmulator
) -> None:
    clock.now = clock.now.replace(day=10)
    emulator.set_now(int(clock.now.timestamp()), frozen=True)
    tenant = populate(stores, clock)
    gateway = SdkStripeGateway(TEST_API_KEY, emulator.url, max_network_retries=0)
    app = stores.app
    meter = gateway.create_meter("api_calls", "sm_api_calls", "sum")
    app.map_meter(tenant, MeterMapping("api_calls", meter.id, meter.event_name, meter.formula))
    customer = emulator.client().v1.customers.create({"name": "cus_pushed"})
    app.map_customer(tenant, "cus_pushed", customer.id, None)
    app.usage.record_usage([submission(tenant, 3, clock.now, key="pushed", customer="cus_pushed")])
    period = app.period_for(tenant, "cus_pushed", clock.now)
    PushService(app, {Target.LIVE: gateway}, clock).push(
        usage_period_id(tenant, "cus_pushed", "api_calls", period.key)
    )
    stores.views.runner.catch_up()
    before = tables(stores)
    assert before["sm_pushes"] and before["sm_ledgers"]

    assert rebuild_of(stores).run(dry_run=True).differences == 0
    rebuild_of(stores).run()
    assert tables(stores) == before
    assert "domain.ledger:StripeLedger.PushIntended" in decodes_like_the_mapper(stores)


# -- the command ----------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any, str]:
    code = cli.main(["projections", "rebuild", *args])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err


@pytest.mark.usefixtures("cli_env")
def test_the_command_end_to_end(
    stores: Stores, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    populate(stores, clock)
    stores.views.runner.catch_up()
    before = tables(stores)

    code, out, err = run_cli(capsys, "--dry-run")
    assert code == 0, err
    assert out["dryRun"] and out["differences"] == 0 and out["events"] == head(stores)
    assert {t["table"] for t in out["tables"]} == set(before)
    assert "events/s" in err and "the views are identical" in err

    with stores.views.store.transaction() as tx:
        tx.execute("UPDATE sm_usage_events SET quantity = quantity + 1")
    code, out, err = run_cli(capsys, "--dry-run", "--projection", "usage_events")
    assert code == 1
    [events] = out["tables"]
    rows = len(before["sm_usage_events"])
    assert events["differing"] == rows and len(events["samples"]) == 5
    assert f"{rows} rows differ" in err

    code, out, err = run_cli(capsys, "--projection", "usage_events", "--batch-size", "7")
    assert code == 0, err
    assert out["swapped"] and out["projections"] == ["usage_events"]
    assert tables(stores) == before

    code, out, err = run_cli(capsys, "--projection", "nope")
    assert (code, out) == (2, None)
    assert "unknown projection nope" in err and "counters" in err


@pytest.mark.usefixtures("cli_env")
def test_the_command_resumes_after_an_interruption(
    stores: Stores, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    populate(stores, clock)
    stores.views.runner.catch_up()
    rebuild_of(stores, batch_size=10).run(max_batches=2)  # as if killed after two batches

    code, out, err = run_cli(capsys)

    assert code == 0, err
    assert "resuming a previous rebuild from log position" in err
    assert out["resumedFrom"] > 0 and out["swapped"]


def test_progress_redraws_on_a_terminal_and_prints_lines_otherwise(tmp_path: Path) -> None:
    """rich's bar: redrawn in place on a terminal, one plain line per update elsewhere."""
    from api.progress import ProgressBar

    class Terminal:
        def __init__(self, tty: bool) -> None:
            self.tty, self.text = tty, ""

        def isatty(self) -> bool:
            return self.tty

        def write(self, text: str) -> int:
            self.text += text
            return len(text)

        def flush(self) -> None:
            pass

    for tty in (True, False):
        stream = Terminal(tty)
        now = [0.0]
        bar = ProgressBar("events", stream, every=0.0, clock=functools.partial(min, now))  # type: ignore[arg-type]
        for at, done in ((0.0, 0), (1.0, 500), (1.5, 750), (4.0, 2000)):
            now[0] = at
            bar.update(done, 2000)
            if tty:
                bar.progress.refresh()
        bar.finish()
        text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", stream.text)  # colours and cursor moves
        assert "500/2,000 events" in text and "500 events/s" in text, text
        assert "ETA 0:00:03" in text  # 1,250 left at the last 0.5 s's 500/s: 2.5 s
        assert "2,000/2,000 events" in text and "100%" in text
        if tty:
            assert "\x1b[" in stream.text  # redrawn in place
        else:
            assert "\x1b[" not in stream.text and text.count("\n") == 4, text


def test_the_shadow_lives_apart_from_the_live_views(settings: Settings, stores: Stores) -> None:
    shadow = stores.views.store.shadow()
    try:
        build_views(stores.app, shadow)
        if settings.postgres is None:
            assert (settings.data_dir / "views.rebuild.sqlite3").exists()
        else:
            with psycopg.connect(settings.postgres.conninfo) as conn:
                found = conn.execute(
                    "SELECT table_schema FROM information_schema.tables"
                    " WHERE table_name = 'sm_counters'"
                ).fetchall()
            assert sorted(schema for (schema,) in found) == ["public", "sm_rebuild"]
    finally:
        shadow.close()
        stores.views.store.drop_shadow()
    assert not shadow_exists(stores, settings)


def test_every_shadow_table_is_unlogged_and_the_live_ones_are_not(
    settings: Settings, stores: Stores, clock: FakeClock
) -> None:
    """PostgreSQL: the shadow writes no WAL, and a database crash (which empties unlogged
    tables) must empty its tracking positions with its rows, or a resumed rebuild would
    start past rows it no longer has. The live views stay crash-safe."""
    if settings.postgres is None:
        pytest.skip("SQLite has no unlogged tables: its shadow is a file of its own")
    populate(stores, clock)
    rebuild_of(stores, batch_size=10).run(max_batches=1)  # the shadow is kept, part-built
    with psycopg.connect(settings.postgres.conninfo) as conn:
        found = conn.execute(
            "SELECT n.nspname, c.relname, c.relpersistence FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname IN ('public', 'sm_rebuild') AND c.relkind = 'r'"
            " AND c.relname LIKE 'sm\\_%'"
        ).fetchall()
    shadow = {name: kind for schema, name, kind in found if schema == "sm_rebuild"}
    live = {name: kind for schema, name, kind in found if schema == "public"}
    assert {"sm_tracking", "sm_counters", "sm_usage_events"} <= set(shadow)
    assert set(shadow.values()) == {"u"}, shadow
    assert set(live.values()) == {"p"}, live
