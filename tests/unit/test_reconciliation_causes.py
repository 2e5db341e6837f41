"""The remap cause: which ledger pushes count as sent elsewhere, and how it ranks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

from domain.ledger import StripeLedger
from domain.reconciliation import (
    Cause,
    Standing,
    Status,
    Tolerance,
    classify,
    pushed_elsewhere,
)

NOW = datetime(2026, 3, 10, 12, tzinfo=UTC)


def ledger_events(*pushes: tuple[str, str]) -> list[object]:
    """A ledger's events for pushes of 5 units: (event name, 'confirmed' | 'abandoned')."""
    ledger = StripeLedger.open(uuid4(), uuid4(), "live")
    for number, (event_name, outcome) in enumerate(pushes, start=1):
        ledger.intend(5, "delta", number, NOW, event_name, "cus_X", "usage", NOW)
        if outcome == "confirmed":
            ledger.confirm(number, "response", NOW)
        else:
            ledger.abandon(number, "the mapping moved", permanent=False)
    return list(ledger.collect_events())


def test_a_confirmed_push_to_another_event_name_is_pushed_elsewhere() -> None:
    events = ledger_events(("old_calls", "confirmed"), ("new_calls", "confirmed"))
    assert pushed_elsewhere(events, "new_calls") is True
    assert pushed_elsewhere(events[:3], "old_calls") is False  # only the first push


def test_an_abandoned_push_to_the_old_meter_is_not() -> None:
    events = ledger_events(("old_calls", "abandoned"), ("new_calls", "confirmed"))
    assert pushed_elsewhere(events, "new_calls") is False


def standing(**changes: object) -> Standing:
    base: dict[str, object] = {
        "local": 15,
        "stripe": 5,
        "expected": 15,
        "mode": "delta",
        "pending_value": None,
        "last_confirmed_at": NOW - timedelta(minutes=1),
        "closed": False,
        "remapped": True,
    }
    base.update(changes)
    return Standing(**base)  # type: ignore[arg-type]


def test_a_remap_is_drift_before_lag_and_tolerance_still_applies() -> None:
    exact = Tolerance()
    assert classify(standing(), exact, NOW) == (Status.DRIFT, Cause.REMAPPED)
    assert classify(standing(remapped=False), exact, NOW) == (Status.PENDING, Cause.SUMMARY_LAG)
    assert classify(standing(closed=True), exact, NOW) == (Status.DRIFT, Cause.REMAPPED)
    loose = Tolerance(absolute=10)
    assert classify(standing(), loose, NOW) == (Status.OK, Cause.WITHIN_TOLERANCE)
    assert classify(standing(stripe=15), exact, NOW) == (Status.OK, Cause.NONE)
