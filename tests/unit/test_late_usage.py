"""correct_late and why_late on their own: what a late event becomes, and the events it yields."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import uuid4

import pytest

from domain.adjustments import Adjustment, LatePolicy, late_adjustment_id
from domain.ingest import Lateness
from domain.late_usage import LATE_POLICY_ACTOR, correct_late, takes_corrections, why_late
from domain.meters import Aggregation, MetricDefinition
from domain.periods import period_of
from domain.usage import UsagePeriod
from tests.helpers import submission

TENANT = uuid4()
MARCH = datetime(2026, 3, 20, tzinfo=UTC)
NOW = datetime(2026, 4, 10, tzinfo=UTC)
CALLS = MetricDefinition("api_calls", Aggregation.SUM, lateness_seconds=3600)
SEATS = MetricDefinition("seats", Aggregation.MAX, lateness_seconds=3600)


def period(metric: MetricDefinition, moment: datetime, closed: bool = False) -> UsagePeriod:
    opened = UsagePeriod.open(TENANT, "cus_1", metric.name, metric.aggregation, period_of(moment))
    if closed:
        opened.close("invoice finalising")
    opened.collect_events()  # only what correct_late adds is looked at
    return opened


def test_why_late_names_the_closed_period_or_the_window_and_none_while_open() -> None:
    march = period(CALLS, MARCH)
    assert why_late(march, CALLS, datetime(2026, 3, 31, 23, tzinfo=UTC)) is None
    assert why_late(march, CALLS, datetime(2026, 4, 1, 0, 59, tzinfo=UTC)) is None  # in window
    assert why_late(march, CALLS, datetime(2026, 4, 1, 1, tzinfo=UTC)) == (
        "it arrived after the lateness window closed at 2026-04-01T01:00:00+00:00"
    )
    march.close("by hand")
    assert why_late(march, CALLS, MARCH) == "its period 2026-03 is closed for invoicing"


def test_carry_forward_counts_a_correction_in_the_open_period_and_approves_it() -> None:
    item = submission(TENANT, 3, MARCH, key="late-1")
    source, target = period(CALLS, MARCH, closed=True), period(CALLS, NOW)
    result = correct_late(item, CALLS, source, "why", LatePolicy.CARRY_FORWARD, target, NOW)

    assert result.lateness is Lateness.CARRIED
    correction, proposed, approved = result.events
    assert isinstance(correction, UsagePeriod.CorrectionApplied)
    assert (correction.originator_id, correction.quantity, correction.events) == (
        target.id,
        Decimal(3),
        1,
    )
    assert (correction.reason, correction.source_period) == ("late usage: why", "2026-03")
    adjustment_id = late_adjustment_id(TENANT, "late-1", False)
    assert correction.adjustment_id == adjustment_id
    assert isinstance(proposed, Adjustment.Proposed)
    assert isinstance(approved, Adjustment.Approved)
    assert (proposed.originator_id, proposed.actor) == (adjustment_id, LATE_POLICY_ACTOR)
    assert approved.applied_to == "2026-04"
    assert target.total == Decimal(3)
    # The late event stays in its own period, uncounted; the caller collects it.
    [late] = source.collect_events()
    assert isinstance(late, UsagePeriod.LateUsageRecorded)
    assert late.reason == f"why; carried into period 2026-04 as adjustment {adjustment_id}"
    assert source.total == Decimal(0)


def test_hold_proposes_an_adjustment_and_changes_no_other_period() -> None:
    item = submission(TENANT, 3, MARCH, key="late-2")
    source = period(CALLS, MARCH, closed=True)
    result = correct_late(item, CALLS, source, "why", LatePolicy.HOLD, None, NOW)

    assert result.lateness is Lateness.HELD
    [proposed] = result.events
    assert isinstance(proposed, Adjustment.Proposed)
    assert (proposed.quantity, proposed.source_period, proposed.source_key) == (
        Decimal(3),
        "2026-03",
        "late-2",
    )
    [late] = source.collect_events()
    assert late.reason == f"why; held for approval as adjustment {proposed.originator_id}"


def test_carry_forward_into_a_period_closed_early_is_held_instead() -> None:
    item = submission(TENANT, 3, MARCH, key="late-3")
    source, target = period(CALLS, MARCH, closed=True), period(CALLS, NOW, closed=True)
    result = correct_late(item, CALLS, source, "why", LatePolicy.CARRY_FORWARD, target, NOW)

    assert result.lateness is Lateness.HELD
    assert [type(e) for e in result.events] == [Adjustment.Proposed]
    assert target.collect_events() == []
    assert target.total == Decimal(0)


@pytest.mark.parametrize("aggregation", [Aggregation.MAX, Aggregation.LAST])
def test_a_max_or_last_metric_records_the_late_event_uncounted_and_corrects_nothing(
    aggregation: Aggregation,
) -> None:
    metric = MetricDefinition("seats", aggregation)
    item = submission(TENANT, 9, MARCH, metric="seats")
    source = period(metric, MARCH, closed=True)
    result = correct_late(item, metric, source, "why", LatePolicy.CARRY_FORWARD, None, NOW)

    assert (result.lateness, result.events) == (Lateness.PAST_WINDOW, ())
    [late] = source.collect_events()
    assert late.reason == f"not counted: why; a {aggregation.value} metric takes no corrections"
    assert not takes_corrections(metric)
    assert takes_corrections(CALLS)


def test_the_correction_is_dated_now_not_when_the_usage_happened() -> None:
    item = submission(TENANT, 1, MARCH - timedelta(days=1))
    source = period(CALLS, MARCH, closed=True)
    [proposed] = correct_late(item, CALLS, source, "why", LatePolicy.HOLD, None, NOW).events
    assert proposed.proposed_at == NOW
