"""The alert service: rules changed for a tenant, incidents moved along their life.

Everything a tenant names is checked to be its own: another tenant's rule or
incident is "not found", never shown or changed. Incident changes are
load-decide-save with the incident's deterministic id: when another
evaluator saved first, the save fails on the version, and the decision is
made again on what it saved (never a second trigger for one breach).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from domain import fields
from domain.alert_incidents import (
    Action,
    AlertIncident,
    Reading,
    ResolvedBecause,
    Target,
    is_open,
    next_action,
)
from domain.alerts import AlertRule, AlertSpec, check_spec
from domain.application import MeteringApp
from domain.errors import ConflictError, InvalidInputError, NotFoundError

SAVE_ATTEMPTS = 5

A = TypeVar("A", AlertRule, AlertIncident)

IncidentEvent = AlertIncident.Triggered | AlertIncident.Resolved


@dataclass(frozen=True)
class Saved:
    """What an evaluation saved: the incident as saved, and its trigger and resolve events."""

    incident: AlertIncident | None = None
    events: tuple[IncidentEvent, ...] = ()


class AlertService:
    def __init__(self, app: MeteringApp) -> None:
        self.app = app

    # -- rules ----------------------------------------------------------------

    def spec(
        self,
        tenant_id: UUID,
        *,
        metric: str,
        customer_ref: str | None,
        kind: str,
        threshold: Decimal,
        basis: str | None,
        currency: str | None,
        enabled: bool,
        cooldown_seconds: int,
    ) -> AlertSpec:
        """A rule's fields checked, against the tenant's declared metrics too."""
        definition = self.app.tenant(tenant_id).metrics.get(fields.metric(metric))
        if definition is None:
            raise InvalidInputError(
                "metric", f"{metric!r} is not declared (declare it with POST /v1/meters)"
            )
        return check_spec(
            metric=metric,
            customer_ref=customer_ref,
            kind=kind,
            threshold=threshold,
            basis=basis,
            currency=currency,
            enabled=enabled,
            cooldown_seconds=cooldown_seconds,
            aggregation=definition.aggregation,
        )

    def create(self, tenant_id: UUID, spec: AlertSpec, alert_id: UUID | None = None) -> AlertRule:
        """Create a rule. It is evaluated against the usage counted so far (not only
        usage that arrives after it) as soon as the projection worker sees it.

        ``alert_id``: a deterministic id (api/config_file.py); taken already, a conflict.
        """
        rule = AlertRule.create(tenant_id, spec, alert_id)
        try:
            self.app.save(rule)
        except IntegrityError:
            raise ConflictError(f"alert {alert_id} already exists") from None
        return rule

    def rule(self, tenant_id: UUID, alert_id: UUID) -> AlertRule:
        """The tenant's rule; a deleted one, or another tenant's, is not found."""
        try:
            rule: AlertRule = self.app.repository.get(alert_id)
        except AggregateNotFoundError:
            raise NotFoundError(f"alert {alert_id} does not exist") from None
        if not isinstance(rule, AlertRule) or rule.tenant_id != tenant_id or rule.deleted:
            raise NotFoundError(f"alert {alert_id} does not exist")
        return rule

    def replace(self, tenant_id: UUID, alert_id: UUID, spec: AlertSpec) -> AlertRule:
        """Replace every field of the rule (PUT): nothing is kept from before."""
        return self._change(tenant_id, alert_id, lambda rule: rule.replace(spec))

    def delete(self, tenant_id: UUID, alert_id: UUID) -> None:
        """Delete the rule; the evaluator resolves its open incidents when it sees this."""
        self._change(tenant_id, alert_id, lambda rule: rule.delete())

    def _change(
        self, tenant_id: UUID, alert_id: UUID, change: Callable[[AlertRule], object]
    ) -> AlertRule:
        return self._changed(
            lambda: self.rule(tenant_id, alert_id),
            change,
            f"alert {alert_id} is being changed concurrently; try again",
        )

    def _changed(self, load: Callable[[], A], change: Callable[[A], object], conflict: str) -> A:
        """Load, change and save an aggregate, loading it again when another saved first.

        ``change`` answering False means nothing changed: the aggregate as loaded.
        """
        for _ in range(SAVE_ATTEMPTS):
            aggregate = load()
            if change(aggregate) is False:
                return aggregate
            try:
                self.app.save(aggregate)
            except IntegrityError:
                continue
            return aggregate
        raise ConflictError(conflict)

    # -- incidents ------------------------------------------------------------

    def incident(self, tenant_id: UUID, alert_id: UUID, incident_id: UUID) -> AlertIncident:
        """The tenant's incident of this rule; anything else is not found."""
        self.rule(tenant_id, alert_id)
        found = self._incident(incident_id)
        if found is None or found.target.alert_id != alert_id:
            raise NotFoundError(f"incident {incident_id} of alert {alert_id} does not exist")
        return found

    def acknowledge(
        self, tenant_id: UUID, alert_id: UUID, incident_id: UUID, actor: str
    ) -> AlertIncident:
        """Acknowledge an open incident (again: no change); a resolved one is a conflict."""
        return self._changed(
            lambda: self.incident(tenant_id, alert_id, incident_id),
            lambda incident: incident.acknowledge(actor, self.app.clock()),
            f"incident {incident_id} is being changed concurrently; try again",
        )

    def evaluate(
        self,
        target: Target,
        threshold: Decimal,
        cooldown_seconds: int,
        reading: Reading,
        now: datetime,
    ) -> Saved:
        """Trigger or resolve the target's incident as ``reading`` says; what was saved."""

        def decide(incident: AlertIncident | None) -> AlertIncident | None:
            action = next_action(incident, reading.breached, now, cooldown_seconds)
            if action is None:
                return None
            if action is Action.TRIGGER:
                if incident is None:
                    return AlertIncident.open(target, threshold, reading, now)
                incident.trigger(threshold, reading, now)
            else:
                assert incident is not None
                incident.resolve(ResolvedBecause.BELOW_THRESHOLD, threshold, reading.observed, now)
            return incident

        return self._decided(
            target.incident_id,
            decide,
            f"incident {target.incident_id} keeps changing; evaluated again later",
        )

    def resolve(
        self,
        incident_id: UUID,
        reason: ResolvedBecause,
        threshold: Decimal,
        observed: Decimal | None,
        now: datetime,
    ) -> Saved:
        """Resolve an incident that is open (the period ended, the rule went away)."""

        def decide(incident: AlertIncident | None) -> AlertIncident | None:
            if incident is None or not is_open(incident):
                return None
            incident.resolve(reason, threshold, observed, now)
            return incident

        return self._decided(
            incident_id, decide, f"incident {incident_id} keeps changing; resolved again later"
        )

    def _decided(
        self,
        incident_id: UUID,
        decide: Callable[[AlertIncident | None], AlertIncident | None],
        conflict: str,
    ) -> Saved:
        """Load the incident, let ``decide`` change it (None: nothing to do), save; when
        another saved first, decide again on what it saved."""
        for _ in range(SAVE_ATTEMPTS):
            incident = decide(self._incident(incident_id))
            if incident is None:
                return Saved()
            saved = self._save(incident)
            if saved is not None:
                return saved
        raise ConflictError(conflict)

    def _save(self, incident: AlertIncident) -> Saved | None:
        """Save; what was saved, or None when another saved first (decide again)."""
        try:
            recordings = self.app.save(incident)
        except IntegrityError:
            return None
        events = tuple(
            r.domain_event
            for r in recordings
            if isinstance(r.domain_event, (AlertIncident.Triggered, AlertIncident.Resolved))
        )
        return Saved(incident, events)

    def _incident(self, incident_id: UUID) -> AlertIncident | None:
        try:
            incident: object = self.app.repository.get(incident_id)
        except AggregateNotFoundError:
            return None
        # Any aggregate's id may be named: only an incident is one.
        return incident if isinstance(incident, AlertIncident) else None
