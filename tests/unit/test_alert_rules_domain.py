"""Alert rules and incidents on their own: thresholds (0 included), cooldown, spike maths."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest

from domain.alert_incidents import (
    Action,
    AlertIncident,
    IncidentStatus,
    Reading,
    ResolvedBecause,
    Target,
    incident_id_for,
    next_action,
    spike_breached,
    spike_cutoff,
    threshold_breached,
)
from domain.alerts import AlertKind, AlertRule, SpendBasis, check_spec
from domain.errors import ConflictError, InvalidInputError
from domain.meters import Aggregation

NOW = datetime(2026, 3, 15, 12, tzinfo=UTC)
MARCH = (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
FEBRUARY = (datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC))


def spec(**changes: Any) -> Any:
    given: dict[str, Any] = {
        "metric": "api_calls",
        "customer_ref": None,
        "kind": "usage",
        "threshold": Decimal(100),
        "basis": None,
        "currency": None,
        "enabled": True,
        "cooldown_seconds": 3600,
        "aggregation": Aggregation.SUM,
    }
    given.update(changes)
    return check_spec(**given)


def target() -> Target:
    return Target(uuid4(), uuid4(), "cus_1", "api_calls", "2026-03", *MARCH, "usage")


# -- rules ---------------------------------------------------------------------


def test_a_threshold_of_zero_and_a_disabled_rule_are_values_not_missing() -> None:
    rule = spec(threshold=Decimal(0), enabled=False, cooldown_seconds=0)
    assert (rule.threshold, rule.enabled, rule.cooldown_seconds) == (0, False, 0)


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"kind": "budget"}, "kind", "must be one of usage, spend, spike"),
        ({"threshold": Decimal(-1)}, "threshold", "must be zero or more"),
        ({"kind": "spend", "currency": "usd"}, "basis", "is required for a spend alert"),
        ({"kind": "spend", "basis": "forecast"}, "currency", "is required for a spend alert"),
        ({"kind": "spend", "basis": "later", "currency": "usd"}, "basis", "must be one of"),
        ({"kind": "spend", "basis": "forecast", "currency": "us"}, "currency", "three-letter"),
        (
            {"kind": "spend", "basis": "forecast", "currency": "usd", "threshold": Decimal("1.5")},
            "threshold",
            "whole number",
        ),
        ({"basis": "forecast"}, "basis", "must be null unless kind is spend"),
        ({"currency": "usd"}, "currency", "must be null unless kind is spend"),
        ({"kind": "spike", "threshold": Decimal("0.5")}, "threshold", "between 1 and"),
        (
            {"kind": "spike", "threshold": Decimal(2), "aggregation": Aggregation.MAX},
            "metric",
            "sum or count",
        ),
        ({"cooldown_seconds": -1}, "cooldownSeconds", "between 0 and"),
        ({"customer_ref": ""}, "customerRef", "must not be empty"),
        ({"threshold": Decimal("1e20")}, "threshold", "smaller than"),
    ],
)
def test_a_refused_rule_names_the_field_and_why(
    changes: dict[str, Any], field: str, reason: str
) -> None:
    with pytest.raises(InvalidInputError) as refused:
        spec(**changes)
    assert refused.value.field == field
    assert reason in refused.value.reason


def test_a_spend_rule_keeps_its_basis_and_a_lower_case_currency() -> None:
    rule = spec(kind="spend", basis="amount_so_far", currency="JPY", threshold=Decimal(5000))
    assert (rule.kind, rule.basis, rule.currency) == (
        AlertKind.SPEND,
        SpendBasis.AMOUNT_SO_FAR,
        "jpy",
    )


def test_a_rule_is_replaced_whole_recorded_only_when_changed_and_deleted_once() -> None:
    rule = AlertRule.create(uuid4(), spec())
    assert rule.replace(spec()) is False
    assert rule.replace(spec(threshold=Decimal(0), enabled=False)) is True
    assert (rule.threshold, rule.enabled) == (0, False)
    rule.delete()
    with pytest.raises(ConflictError):
        rule.delete()
    names = [type(e).__name__ for e in rule.collect_events()]
    assert names == ["Created", "Replaced", "Deleted"]


# -- decisions -----------------------------------------------------------------


def test_thresholds_are_reached_at_or_above_and_zero_is_reached_by_any_usage() -> None:
    assert threshold_breached(Decimal(100), Decimal(100))
    assert not threshold_breached(Decimal("99.9"), Decimal(100))
    assert threshold_breached(Decimal(0), Decimal(0))
    assert not threshold_breached(Decimal(-1), Decimal(0))  # a correction below zero


def test_an_incident_triggers_once_resolves_when_it_falls_back_and_waits_out_the_cooldown() -> None:
    t = target()
    assert next_action(None, True, NOW, 600) is Action.TRIGGER
    assert next_action(None, False, NOW, 600) is None
    incident = AlertIncident.open(t, Decimal(100), Reading(Decimal(120), True), NOW)
    assert incident.id == incident_id_for(t.alert_id, "cus_1", "2026-03")
    assert next_action(incident, True, NOW, 600) is None  # already triggered
    incident.acknowledge("key:x", NOW)
    assert incident.status is IncidentStatus.ACKNOWLEDGED
    assert next_action(incident, True, NOW, 600) is None
    assert next_action(incident, False, NOW, 600) is Action.RESOLVE
    resolved_at = NOW + timedelta(minutes=5)
    incident.resolve(ResolvedBecause.BELOW_THRESHOLD, Decimal(100), Decimal(90), resolved_at)
    assert next_action(incident, False, resolved_at, 600) is None
    assert next_action(incident, True, resolved_at + timedelta(seconds=599), 600) is None
    assert next_action(incident, True, resolved_at + timedelta(seconds=600), 600) is Action.TRIGGER
    assert next_action(incident, True, resolved_at, 0) is Action.TRIGGER
    incident.trigger(Decimal(100), Reading(Decimal(130), True), resolved_at + timedelta(hours=1))
    events = incident.collect_events()
    triggered = [e for e in events if isinstance(e, AlertIncident.Triggered)]
    assert [e.occurrence for e in triggered] == [1, 2]
    assert triggered[1].observed == 130 and triggered[1].at == resolved_at + timedelta(hours=1)
    assert incident.acknowledged_at is None  # a new occurrence is unacknowledged


def test_a_resolved_incident_cannot_be_acknowledged_and_acknowledging_twice_records_once() -> None:
    incident = AlertIncident.open(target(), Decimal(1), Reading(Decimal(1), True), NOW)
    assert incident.acknowledge("a", NOW) is True
    assert incident.acknowledge("a", NOW) is False
    incident.resolve(ResolvedBecause.PERIOD_ENDED, Decimal(1), None, NOW)
    with pytest.raises(ConflictError):
        incident.acknowledge("a", NOW)


def test_resolved_carries_what_a_notification_needs() -> None:
    t = target()
    incident = AlertIncident.open(t, Decimal(10), Reading(Decimal(12), True), NOW)
    incident.resolve(ResolvedBecause.PERIOD_ENDED, Decimal(10), None, MARCH[1])
    resolved = incident.collect_events()[-1]
    assert isinstance(resolved, AlertIncident.Resolved)
    assert (resolved.alert_id, resolved.tenant_id, resolved.customer_ref) == (
        t.alert_id,
        t.tenant_id,
        "cus_1",
    )
    assert (resolved.period_start, resolved.period_end, resolved.reason) == (*MARCH, "period_ended")
    assert (resolved.threshold, resolved.occurrence, resolved.at) == (10, 1, MARCH[1])


# -- spikes --------------------------------------------------------------------


def test_the_spike_cutoff_is_the_same_elapsed_time_into_the_previous_period() -> None:
    # 14 days, 12 hours and 30.5 seconds into March: February's cutoff, to the minute.
    now = datetime(2026, 3, 15, 12, 0, 30, 500_000, tzinfo=UTC)
    assert spike_cutoff(*MARCH, *FEBRUARY, now) == datetime(2026, 2, 15, 12, 0, tzinfo=UTC)
    # 30 days into March is past February's end: the whole of February.
    late = datetime(2026, 3, 31, 6, tzinfo=UTC)
    assert spike_cutoff(*MARCH, *FEBRUARY, late) == FEBRUARY[1]
    # A clock past the period's end compares the whole period.
    assert spike_cutoff(*MARCH, *FEBRUARY, datetime(2026, 5, 1, tzinfo=UTC)) == FEBRUARY[1]
    assert spike_cutoff(*MARCH, *FEBRUARY, MARCH[0]) == FEBRUARY[0]


def test_a_spike_is_at_least_factor_times_the_baseline_and_needs_a_baseline() -> None:
    assert spike_breached(Decimal(200), Decimal(100), Decimal(2))
    assert not spike_breached(Decimal("199.99"), Decimal(100), Decimal(2))
    assert spike_breached(Decimal(150), Decimal(100), Decimal("1.5"))
    assert not spike_breached(Decimal(1_000), Decimal(0), Decimal(2))  # nothing to compare with
    assert not spike_breached(Decimal(10), Decimal(-5), Decimal(1))
