"""Reconciliation: is Stripe's number for a period ours, and if not, why not?

For one customer × meter × billing period, three numbers decide it:

- *local*: the counter in whole units (the truth: derived from the event log);
- *stripe*: Stripe's meter event summary over exactly the period's minutes;
- *expected*: what Stripe should hold if every push the ledger confirmed is
  there (plus any drift an operator accepted before).

``classify`` turns them into a status and a probable cause:

    ok        Stripe equals local (or is within the configured tolerance).
    pending   they differ for a reason that settles by itself while the period
              is open: usage not pushed yet, a push not confirmed yet, or
              Stripe's summary still catching up.
    drift     they differ and nothing in flight explains it (Stripe holds
              usage StripeMeter never sent, or lacks a confirmed push), or the
              period is closed, where no difference is allowed; or the
              period's confirmed pushes went to another meter than the one
              the metric is mapped to now (``meter remapped mid-period``):
              the current meter lacks them, and no wait settles that.
    repaired  a repair pushed the correcting difference in this run.
    skipped   not compared: a shadow line whose Stripe test account is not
              configured here (its cause says so); ``classify`` never returns it.

The same rules judge the live meter against the live ledger and the shadow
meter (a Stripe test account) against the shadow ledger: each target has its
own pushes, so each is its own standing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from domain.ledger import StripeLedger


class Status(StrEnum):
    OK = "ok"
    PENDING = "pending"
    DRIFT = "drift"
    REPAIRED = "repaired"
    SKIPPED = "skipped"


class Cause(StrEnum):
    NONE = ""
    WITHIN_TOLERANCE = "within the configured drift tolerance"
    UNPUSHED = "events after the last push"
    UNCONFIRMED = "unconfirmed push"
    SUMMARY_LAG = "Stripe summary lag"
    OUTSIDE = "events sent to Stripe outside StripeMeter"
    MISSING = "Stripe lacks confirmed pushes (lost, or cancelled in Stripe)"
    REMAPPED = "meter remapped mid-period"
    NO_TEST_ACCOUNT = (
        "shadow mode is mapped, but STRIPE_TEST_SECRET_KEY is not set here:"
        " the shadow meter was not read"
    )


@dataclass(frozen=True)
class Tolerance:
    """Differences allowed without calling them drift (both 0 by default: exact).

    A difference is tolerated when it is at most ``absolute`` units or at
    most ``relative`` × |local|.
    """

    absolute: int = 0
    relative: Decimal = Decimal(0)
    summary_lag: timedelta = timedelta(minutes=10)

    def allows(self, local: int, difference: int) -> bool:
        return abs(difference) <= self.absolute or abs(difference) <= self.relative * abs(local)


@dataclass(frozen=True)
class Standing:
    """One period's numbers at the moment of the check."""

    local: int
    stripe: int
    expected: int  # what the confirmed pushes (and accepted drift) add up to in Stripe
    mode: str  # "delta" (Stripe sums) or "value" (Stripe keeps the last value)
    pending_value: int | None  # the unconfirmed push, if one is recorded
    last_confirmed_at: datetime | None
    closed: bool
    # Some confirmed push of the period went to another meter than the mapped one.
    remapped: bool = False


def classify(standing: Standing, tolerance: Tolerance, now: datetime) -> tuple[Status, Cause]:
    s = standing
    difference = s.local - s.stripe
    if difference == 0:
        return Status.OK, Cause.NONE
    if s.remapped:  # no wait settles it, whatever else is in flight
        if tolerance.allows(s.local, difference):
            return Status.OK, Cause.WITHIN_TOLERANCE
        return Status.DRIFT, Cause.REMAPPED
    in_flight = _in_flight(s, tolerance, now)
    if in_flight is not None and not s.closed:
        return Status.PENDING, in_flight
    if tolerance.allows(s.local, difference):
        return Status.OK, Cause.WITHIN_TOLERANCE
    if in_flight is not None:
        return Status.DRIFT, in_flight  # closed, yet not settled: the close must finish first
    return Status.DRIFT, Cause.OUTSIDE if s.stripe > s.expected else Cause.MISSING


def _in_flight(s: Standing, tolerance: Tolerance, now: datetime) -> Cause | None:
    """Why Stripe may lag us for a reason that settles by itself, if it does."""
    if s.pending_value is not None:
        with_pending = s.expected + s.pending_value if s.mode == "delta" else s.pending_value
        if s.stripe in (s.expected, with_pending):
            return Cause.UNCONFIRMED
    if s.stripe == s.expected:
        return Cause.UNPUSHED  # Stripe holds every confirmed push; the rest is not pushed yet
    recent = s.last_confirmed_at is not None and now - s.last_confirmed_at < tolerance.summary_lag
    if recent and s.stripe < s.expected:
        return Cause.SUMMARY_LAG
    return None


def pushed_elsewhere(ledger_events: Iterable[object], event_name: str) -> bool:
    """Whether a ledger's confirmed pushes went to a meter other than ``event_name``'s.

    Each intent records the event name it is sent under (the meter, since
    Stripe routes a meter event by its name); a confirmation settles the
    intent of its number.
    """
    sent_to: dict[int, str] = {}
    for event in ledger_events:
        if isinstance(event, StripeLedger.PushIntended):
            sent_to[event.number] = event.event_name
        elif (
            isinstance(event, StripeLedger.PushConfirmed)
            and sent_to.get(event.number, event_name) != event_name
        ):
            return True
    return False
