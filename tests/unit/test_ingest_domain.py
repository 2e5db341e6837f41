"""MeteringApp on the in-memory store: the ingest rules without any I/O."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import pytest

from domain.adjusting import AdjustmentService
from domain.adjustments import AdjustmentStatus, late_adjustment_id
from domain.application import MeteringApp
from domain.errors import ConflictError, MetricConflictError, NotFoundError, UnauthenticatedError
from domain.ingest import Lateness, Outcome
from domain.meters import Aggregation, MetricDefinition
from domain.tenancy import Scope
from domain.usage import UsagePeriod
from tests.conftest import FakeClock
from tests.helpers import submission


@pytest.fixture
def app(clock: FakeClock) -> Iterator[MeteringApp]:
    application = MeteringApp(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}, clock=clock)
    tenant = application.register_tenant("acme", "Acme")
    application.declare_metric(tenant.id, MetricDefinition("api_calls", Aggregation.SUM))
    yield application
    application.close()


def test_same_key_same_content_is_a_duplicate_and_counts_once(
    app: MeteringApp, clock: FakeClock
) -> None:
    tenant = app.tenant_by_slug("acme").id
    event = submission(tenant, 5, clock.now, key="evt-1")
    first = app.usage.record_usage([event])
    again = app.usage.record_usage([event, event])
    assert [r.outcome for r in first] == [Outcome.ACCEPTED]
    assert [r.outcome for r in again] == [Outcome.DUPLICATE, Outcome.DUPLICATE]
    assert app.usage_period(tenant, "cus_1", "api_calls", "2026-03").total == Decimal(5)


def test_same_key_other_content_is_a_conflict_not_a_duplicate(
    app: MeteringApp, clock: FakeClock
) -> None:
    tenant = app.tenant_by_slug("acme").id
    app.usage.record_usage([submission(tenant, 5, clock.now, key="evt-1")])
    [result] = app.usage.record_usage([submission(tenant, 6, clock.now, key="evt-1")])
    assert result.outcome is Outcome.CONFLICT
    assert result.field == "idempotencyKey"
    assert app.usage_period(tenant, "cus_1", "api_calls", "2026-03").total == Decimal(5)


def test_a_conflict_inside_one_batch_is_caught_too(app: MeteringApp, clock: FakeClock) -> None:
    tenant = app.tenant_by_slug("acme").id
    results = app.usage.record_usage(
        [submission(tenant, 1, clock.now, key="k"), submission(tenant, 2, clock.now, key="k")]
    )
    assert [r.outcome for r in results] == [Outcome.ACCEPTED, Outcome.CONFLICT]


def test_keys_are_scoped_per_tenant(app: MeteringApp, clock: FakeClock) -> None:
    other = app.register_tenant("globex", "Globex")
    app.declare_metric(other.id, MetricDefinition("api_calls", Aggregation.SUM))
    acme = app.tenant_by_slug("acme").id
    [a] = app.usage.record_usage([submission(acme, 1, clock.now, key="evt-1")])
    [b] = app.usage.record_usage([submission(other.id, 2, clock.now, key="evt-1")])
    assert (a.outcome, b.outcome) == (Outcome.ACCEPTED, Outcome.ACCEPTED)
    assert app.usage_period(other.id, "cus_1", "api_calls", "2026-03").total == Decimal(2)


def test_1_and_1_point_0_are_the_same_content(app: MeteringApp, clock: FakeClock) -> None:
    tenant = app.tenant_by_slug("acme").id
    app.usage.record_usage([submission(tenant, "1", clock.now, key="k")])
    [again] = app.usage.record_usage([submission(tenant, "1.000", clock.now, key="k")])
    assert again.outcome is Outcome.DUPLICATE


def test_undeclared_metric_negative_quantity_and_future_time_are_errors_per_event(
    app: MeteringApp, clock: FakeClock
) -> None:
    tenant = app.tenant_by_slug("acme").id
    results = app.usage.record_usage(
        [
            submission(tenant, 1, clock.now, metric="nope"),
            submission(tenant, -1, clock.now),
            submission(tenant, 1, clock.now + timedelta(minutes=6)),
            submission(tenant, 1, clock.now + timedelta(minutes=4)),
        ]
    )
    assert [(r.outcome, r.field) for r in results] == [
        (Outcome.ERROR, "metric"),
        (Outcome.ERROR, "quantity"),
        (Outcome.ERROR, "ts"),
        (Outcome.ACCEPTED, None),
    ]


def test_negative_quantities_are_taken_when_the_metric_allows_corrections(
    app: MeteringApp, clock: FakeClock
) -> None:
    tenant = app.tenant_by_slug("acme").id
    app.declare_metric(tenant, MetricDefinition("credits", Aggregation.SUM, allow_negative=True))
    app.usage.record_usage([submission(tenant, 10, clock.now, metric="credits")])
    app.usage.record_usage([submission(tenant, "-2.5", clock.now, metric="credits")])
    assert app.usage_period(tenant, "cus_1", "credits", "2026-03").total == Decimal("7.5")


def test_late_event_inside_the_window_lands_in_its_own_period(
    app: MeteringApp, clock: FakeClock
) -> None:
    tenant = app.tenant_by_slug("acme").id
    clock.now = clock.now.replace(month=4, day=1, hour=10)  # 10 h after March closed; window 48 h
    [result] = app.usage.record_usage([submission(tenant, 3, clock.now.replace(month=3, day=31))])
    assert result.outcome is Outcome.ACCEPTED
    assert result.late is Lateness.IN_WINDOW
    march = app.usage_period(tenant, "cus_1", "api_calls", "2026-03")
    assert march.total == Decimal(3)


def test_event_past_the_window_is_carried_into_the_open_period_by_default(
    app: MeteringApp, clock: FakeClock
) -> None:
    tenant = app.tenant_by_slug("acme").id
    clock.now = clock.now.replace(month=4, day=5)
    [result] = app.usage.record_usage([submission(tenant, 3, clock.now.replace(month=3, day=31))])
    assert result.outcome is Outcome.ACCEPTED
    assert result.late is Lateness.CARRIED
    # Kept visibly in March, not counted there: March's invoice is final.
    march = app.usage_period(tenant, "cus_1", "api_calls", "2026-03")
    assert (march.total, march.late_events) == (Decimal(0), 1)
    late = list(app.repository.event_store.get(march.id))[-1]
    assert isinstance(late, UsagePeriod.LateUsageRecorded)
    assert "carried into period 2026-04" in late.reason
    # Counted once, as a correction, in April (the open period).
    april = app.usage_period(tenant, "cus_1", "api_calls", "2026-04")
    assert (april.total, april.event_count, april.corrections) == (Decimal(3), 1, 1)
    adjustment = app.repository.get(
        late_adjustment_id(tenant, result.idempotency_key, derived=True)
    )
    assert (adjustment.status, adjustment.applied_to) == (AdjustmentStatus.APPLIED, "2026-04")
    # Its key is still claimed: sending it again is a duplicate, not a second correction.
    [again] = app.usage.record_usage([submission(tenant, 3, clock.now.replace(month=3, day=31))])
    assert again.outcome is Outcome.DUPLICATE
    assert app.usage_period(tenant, "cus_1", "api_calls", "2026-04").total == Decimal(3)


def test_with_the_hold_policy_a_late_event_waits_for_approval(
    app: MeteringApp, clock: FakeClock
) -> None:
    tenant = app.tenant_by_slug("acme").id
    app.set_late_policy(tenant, "hold")
    clock.now = clock.now.replace(month=4, day=5)
    [result] = app.usage.record_usage([submission(tenant, 3, clock.now.replace(month=3, day=31))])
    assert result.late is Lateness.HELD
    adjustment_id = late_adjustment_id(tenant, result.idempotency_key, derived=True)
    assert app.repository.get(adjustment_id).status is AdjustmentStatus.PENDING
    with pytest.raises(NotFoundError):
        app.usage_period(tenant, "cus_1", "api_calls", "2026-04")  # nothing counted yet

    AdjustmentService(app).approve(tenant, adjustment_id, "ops@acme", "customer confirmed")
    april = app.usage_period(tenant, "cus_1", "api_calls", "2026-04")
    assert (april.total, april.event_count) == (Decimal(3), 1)
    with pytest.raises(ConflictError):
        AdjustmentService(app).approve(tenant, adjustment_id, "ops@acme", "twice")


def test_a_late_event_of_a_max_metric_is_kept_but_not_carried(
    app: MeteringApp, clock: FakeClock
) -> None:
    tenant = app.tenant_by_slug("acme").id
    app.declare_metric(tenant, MetricDefinition("seats", Aggregation.MAX))
    clock.now = clock.now.replace(month=4, day=5)
    late = submission(tenant, 9, clock.now.replace(month=3, day=31), metric="seats")
    [result] = app.usage.record_usage([late])
    assert result.late is Lateness.PAST_WINDOW
    march = app.usage_period(tenant, "cus_1", "seats", "2026-03")
    assert (march.value, march.late_events) == (Decimal(0), 1)


def test_a_closed_period_counts_nothing_more_even_inside_the_lateness_window(
    app: MeteringApp, clock: FakeClock
) -> None:
    tenant = app.tenant_by_slug("acme").id
    clock.now = clock.now.replace(month=4, day=1, hour=1)  # inside the 48 h window
    [counted] = app.usage.record_usage([submission(tenant, 5, clock.now.replace(month=3, day=31))])
    assert counted.late is Lateness.IN_WINDOW
    period_id = app.usage_period(tenant, "cus_1", "api_calls", "2026-03").id
    app.usage.change_periods(lambda load: [p] if (p := load.get(period_id)).close("test") else [])
    [result] = app.usage.record_usage([submission(tenant, 2, clock.now.replace(month=3, day=30))])
    assert result.late is Lateness.CARRIED
    assert app.usage_period(tenant, "cus_1", "api_calls", "2026-03").total == Decimal(5)
    assert app.usage_period(tenant, "cus_1", "api_calls", "2026-04").total == Decimal(2)


@pytest.mark.parametrize(
    ("aggregation", "expected"),
    [
        (Aggregation.SUM, Decimal(12)),
        (Aggregation.COUNT, Decimal(3)),
        (Aggregation.MAX, Decimal(7)),
        (Aggregation.LAST, Decimal(2)),
    ],
)
def test_each_aggregation(
    app: MeteringApp, clock: FakeClock, aggregation: Aggregation, expected: Decimal
) -> None:
    tenant = app.tenant_by_slug("acme").id
    app.declare_metric(tenant, MetricDefinition("m", aggregation))
    # Arrival order differs from event time: "last" follows event time.
    app.usage.record_usage(
        [
            submission(tenant, 3, clock.now - timedelta(hours=1), metric="m"),
            submission(tenant, 2, clock.now, metric="m"),
            submission(tenant, 7, clock.now - timedelta(hours=2), metric="m"),
        ]
    )
    assert app.usage_period(tenant, "cus_1", "m", "2026-03").value == expected


def test_redeclaring_a_metric_differently_is_refused(app: MeteringApp) -> None:
    tenant = app.tenant_by_slug("acme").id
    assert app.declare_metric(tenant, MetricDefinition("api_calls", Aggregation.SUM)) is False
    with pytest.raises(MetricConflictError):
        app.declare_metric(tenant, MetricDefinition("api_calls", Aggregation.MAX))


def test_tenant_slugs_are_unique(app: MeteringApp) -> None:
    with pytest.raises(ConflictError):
        app.register_tenant("acme", "Another Acme")


def test_keys_are_stored_hashed_and_revocation_checks_the_tenant(app: MeteringApp) -> None:
    acme = app.tenant_by_slug("acme").id
    other = app.register_tenant("globex", "Globex").id
    issued = app.issue_api_key(acme, frozenset({Scope.INGEST}))
    stored = app.repository.get(issued.key_id)
    assert issued.secret not in repr(vars(stored))
    assert app.authenticate(issued.secret).tenant_id == acme
    with pytest.raises(Exception, match="does not exist"):
        app.revoke_api_key(other, issued.key_id, "not yours")
    assert app.authenticate(issued.secret).tenant_id == acme
    app.revoke_api_key(acme, issued.key_id, "rotated")
    with pytest.raises(UnauthenticatedError):
        app.authenticate(issued.secret)


def test_usage_period_snapshots_round_trip(clock: FakeClock) -> None:
    application = MeteringApp(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}, clock=clock)
    tenant = application.register_tenant("acme", "Acme").id
    application.declare_metric(tenant, MetricDefinition("api_calls", Aggregation.MAX))
    for start in range(0, 1200, 100):
        application.usage.record_usage(
            [submission(tenant, i % 97, clock.now, key=f"k{i}") for i in range(start, start + 100)]
        )
    period_id = application.usage_period(tenant, "cus_1", "api_calls", "2026-03").id
    assert application.snapshots is not None
    assert list(application.snapshots.get(period_id))  # taken at versions 500 and 1000
    reread = application.repository.get(period_id)
    assert (reread.event_count, reread.value) == (1200, Decimal(96))


def test_with_no_open_period_to_carry_into_a_late_event_waits_for_approval(
    app: MeteringApp, clock: FakeClock
) -> None:
    """A period closed early by hand leaves nowhere to carry to: held, never an error."""
    tenant = app.tenant_by_slug("acme").id
    app.usage.record_usage([submission(tenant, 5, clock.now)])
    period_id = app.usage_period(tenant, "cus_1", "api_calls", "2026-03").id
    app.usage.change_periods(lambda load: [p] if (p := load.get(period_id)).close("test") else [])
    [result] = app.usage.record_usage([submission(tenant, 2, clock.now)])
    assert (result.outcome, result.late) == (Outcome.ACCEPTED, Lateness.HELD)
    assert app.usage_period(tenant, "cus_1", "api_calls", "2026-03").total == Decimal(5)
