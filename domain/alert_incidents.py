"""An alert's life for one customer in one billing period: triggered, acknowledged, resolved.

One ``AlertIncident`` aggregate per rule × customer × period, its id derived
from the three (``incident_id_for``): two evaluators that see the same breach
at once build the same new aggregate, and the event store takes only the
first (optimistic concurrency); the other reloads it and finds it triggered.

The life, as events::

    Opened + Triggered ──► Acknowledged ──► Resolved ──(cooldown)──► Triggered ...
                 └──────────────────────────────┘

Resolved: the value fell back below the threshold (a correction, a replaced
rule), the period ended, or the rule was disabled, deleted, or replaced by one
that no longer covers this customer, metric or kind. After a
resolve the same incident triggers again only once ``cooldown_seconds`` have
passed since it resolved. A new period is a new incident: it triggers as soon
as the threshold is reached there (alerts recur per period).

``Triggered`` and ``Resolved`` carry everything a notification needs, with
stable names (outbound webhooks send them as ``alert.triggered`` and
``alert.resolved``). Times (``at``) are the application's clock — a Stripe
test clock where one drives it — not the wall clock.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, Protocol
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.errors import ConflictError
from domain.tenancy import NAMESPACE


def incident_id_for(alert_id: UUID, customer_ref: str, period_key: str) -> UUID:
    return uuid5(NAMESPACE, f"alert-incident:{alert_id}:{customer_ref}:{period_key}")


class IncidentStatus(StrEnum):
    TRIGGERED = "triggered"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class ResolvedBecause(StrEnum):
    BELOW_THRESHOLD = "below_threshold"
    PERIOD_ENDED = "period_ended"
    ALERT_DISABLED = "alert_disabled"
    ALERT_DELETED = "alert_deleted"
    ALERT_CHANGED = "alert_changed"  # replaced: another metric, kind or customer now


class Action(StrEnum):
    TRIGGER = "trigger"
    RESOLVE = "resolve"


@dataclass(frozen=True)
class Target:
    """What an incident is about: a rule, a customer, one of their periods."""

    alert_id: UUID
    tenant_id: UUID
    customer_ref: str
    metric: str
    period: str
    period_start: datetime
    period_end: datetime
    kind: str

    @property
    def incident_id(self) -> UUID:
        return incident_id_for(self.alert_id, self.customer_ref, self.period)

    def as_fields(self) -> dict[str, Any]:
        """The eight fields by name, as ``Opened``, ``Triggered`` and ``Resolved`` carry them."""
        return {field.name: getattr(self, field.name) for field in fields(self)}


@dataclass(frozen=True)
class Reading:
    """What was compared with the threshold: the observed value (and a spike's baseline)."""

    observed: Decimal
    breached: bool
    baseline: Decimal | None = None


class IncidentState(Protocol):
    """What deciding needs of an incident: the aggregate and the incidents view both have it."""

    @property
    def status(self) -> IncidentStatus: ...

    @property
    def resolved_at(self) -> datetime | None: ...


def is_open(state: IncidentState | None) -> bool:
    return state is not None and state.status is not IncidentStatus.RESOLVED


def next_action(
    state: IncidentState | None, breached: bool, now: datetime, cooldown_seconds: int
) -> Action | None:
    """What an incident should do, given whether its rule is breached now.

    Triggers when breached and not open — a resolved one only once its
    cooldown has passed (``now`` at least ``resolved_at + cooldown``);
    resolves when open and no longer breached; otherwise nothing.
    """
    if breached:
        if state is None:
            return Action.TRIGGER
        if state.status is IncidentStatus.RESOLVED:
            resolved_at = state.resolved_at
            if resolved_at is None or now >= resolved_at + timedelta(seconds=cooldown_seconds):
                return Action.TRIGGER
        return None
    return Action.RESOLVE if is_open(state) else None


def threshold_breached(observed: Decimal, threshold: Decimal) -> bool:
    """A usage or spend threshold is reached when the value is at or above it (0: any value)."""
    return observed >= threshold


def spike_breached(current: Decimal, baseline: Decimal, factor: Decimal) -> bool:
    """A spike: the current period's usage is at least ``factor`` × the previous period's
    usage at the same elapsed point. Without any usage then (``baseline`` 0 or less) there
    is nothing to compare with: never a spike."""
    return baseline > 0 and current >= factor * baseline


def spike_cutoff(
    current_start: datetime,
    current_end: datetime,
    previous_start: datetime,
    previous_end: datetime,
    now: datetime,
) -> datetime:
    """The moment of the previous period that matches ``now`` in the current one.

    The same time elapsed since the period's start (not the same fraction of
    it: months differ in length), in whole minutes (rounded down), and never
    past the previous period's end. The baseline is the previous period's usage
    with an event time strictly before this moment.
    """
    elapsed = min(max(now, current_start), current_end) - current_start
    whole_minutes = timedelta(minutes=elapsed // timedelta(minutes=1))
    return min(previous_start + whole_minutes, previous_end)


class AlertIncident(Aggregate):
    """One rule's incident for one customer × period (see the module docstring)."""

    class Opened(Aggregate.Created):
        """The incident's identity (v1), recorded with its first ``Triggered``."""

        tenant_id: UUID
        alert_id: UUID
        customer_ref: str
        metric: str
        period: str
        period_start: datetime
        period_end: datetime
        kind: str

    class Triggered(Aggregate.Event):
        """The rule is breached (v1): ``observed`` reached ``threshold`` at ``at``.

        ``baseline`` is a spike's previous-period usage (None for other kinds);
        ``occurrence`` counts the triggers of this incident (1, then 2 after a
        resolve and the cooldown, ...).
        """

        alert_id: UUID
        tenant_id: UUID
        customer_ref: str
        metric: str
        period: str
        period_start: datetime
        period_end: datetime
        kind: str
        threshold: Decimal
        observed: Decimal
        baseline: Decimal | None
        occurrence: int
        at: datetime

        def apply(self, aggregate: AlertIncident) -> None:
            aggregate.status = IncidentStatus.TRIGGERED
            aggregate.occurrences = self.occurrence
            aggregate.triggered_at = self.at
            aggregate.observed = self.observed
            aggregate.baseline = self.baseline
            aggregate.threshold = self.threshold
            aggregate.acknowledged_at = None
            aggregate.acknowledged_by = None
            aggregate.resolved_at = None
            aggregate.resolved_because = None

    class Acknowledged(Aggregate.Event):
        """Someone saw it (v1); it stays open until resolved."""

        actor: str
        at: datetime

        def apply(self, aggregate: AlertIncident) -> None:
            aggregate.status = IncidentStatus.ACKNOWLEDGED
            aggregate.acknowledged_at = self.at
            aggregate.acknowledged_by = self.actor

    class Resolved(Aggregate.Event):
        """No longer breached (v1): ``reason`` is a ``ResolvedBecause``; ``observed`` the
        value then (None when the period ended or the rule went away unread)."""

        alert_id: UUID
        tenant_id: UUID
        customer_ref: str
        metric: str
        period: str
        period_start: datetime
        period_end: datetime
        kind: str
        threshold: Decimal
        observed: Decimal | None
        reason: str
        occurrence: int
        at: datetime

        def apply(self, aggregate: AlertIncident) -> None:
            aggregate.status = IncidentStatus.RESOLVED
            aggregate.resolved_at = self.at
            aggregate.resolved_because = ResolvedBecause(self.reason)
            if self.observed is not None:
                aggregate.observed = self.observed

    def __init__(
        self,
        tenant_id: UUID,
        alert_id: UUID,
        customer_ref: str,
        metric: str,
        period: str,
        period_start: datetime,
        period_end: datetime,
        kind: str,
    ) -> None:
        self.target = Target(
            alert_id, tenant_id, customer_ref, metric, period, period_start, period_end, kind
        )
        self.status = IncidentStatus.TRIGGERED
        self.occurrences = 0
        self.threshold = Decimal(0)
        self.observed: Decimal | None = None
        self.baseline: Decimal | None = None
        self.triggered_at: datetime | None = None
        self.acknowledged_at: datetime | None = None
        self.acknowledged_by: str | None = None
        self.resolved_at: datetime | None = None
        self.resolved_because: ResolvedBecause | None = None

    @classmethod
    def open(
        cls, target: Target, threshold: Decimal, reading: Reading, now: datetime
    ) -> AlertIncident:
        """A new incident, triggered: two events, saved together."""
        incident = cls._create(
            cls.Opened,
            id=target.incident_id,
            **target.as_fields(),
        )
        incident.trigger(threshold, reading, now)
        return incident

    def trigger(self, threshold: Decimal, reading: Reading, now: datetime) -> None:
        self.trigger_event(
            self.Triggered,
            **self.target.as_fields(),
            threshold=threshold,
            observed=reading.observed,
            baseline=reading.baseline,
            occurrence=self.occurrences + 1,
            at=now,
        )

    def acknowledge(self, actor: str, now: datetime) -> bool:
        """Acknowledge an open incident; False when already acknowledged (nothing recorded)."""
        if self.status is IncidentStatus.ACKNOWLEDGED:
            return False
        if self.status is IncidentStatus.RESOLVED:
            raise ConflictError(f"incident {self.id} is resolved; there is nothing to acknowledge")
        self.trigger_event(self.Acknowledged, actor=actor, at=now)
        return True

    def resolve(
        self, reason: ResolvedBecause, threshold: Decimal, observed: Decimal | None, now: datetime
    ) -> None:
        self.trigger_event(
            self.Resolved,
            **self.target.as_fields(),
            threshold=threshold,
            observed=observed,
            reason=reason.value,
            occurrence=self.occurrences,
            at=now,
        )
