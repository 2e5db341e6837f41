"""Alerts and incidents as answered: from the aggregate (just changed) or the view (listed)."""

from __future__ import annotations

from decimal import Decimal

from api.alert_schemas import AlertOut, IncidentOut
from api.queries.usage import when
from domain.alert_incidents import AlertIncident
from domain.alerts import AlertRule, AlertSpec
from projections.alerts import IncidentRow, RuleRow


def alert_out(rule: AlertRule | RuleRow) -> AlertOut:
    if isinstance(rule, RuleRow):
        return _alert(str(rule.alert_id), rule.spec, when(rule.created_at), when(rule.updated_at))
    return _alert(str(rule.id), rule.spec, when(rule.created_on), when(rule.modified_on))


def _alert(alert_id: str, spec: AlertSpec, created: str | None, updated: str | None) -> AlertOut:
    assert created is not None and updated is not None
    return AlertOut(
        id=alert_id,
        metric=spec.metric,
        customer_ref=spec.customer_ref,
        kind=spec.kind.value,
        threshold=str(spec.threshold),
        basis=spec.basis.value if spec.basis else None,
        currency=spec.currency,
        enabled=spec.enabled,
        cooldown_seconds=spec.cooldown_seconds,
        created_at=created,
        updated_at=updated,
    )


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def incident_out(incident: AlertIncident | IncidentRow) -> IncidentOut:
    t = incident.target
    return IncidentOut(
        id=str(incident.incident_id if isinstance(incident, IncidentRow) else incident.id),
        alert_id=str(t.alert_id),
        customer_ref=t.customer_ref,
        metric=t.metric,
        period=t.period,
        period_start=when(t.period_start) or "",
        period_end=when(t.period_end) or "",
        kind=t.kind,
        status=incident.status.value,
        occurrences=incident.occurrences,
        threshold=str(incident.threshold),
        observed=_text(incident.observed),
        baseline=_text(incident.baseline),
        triggered_at=when(incident.triggered_at),
        acknowledged_at=when(incident.acknowledged_at),
        acknowledged_by=incident.acknowledged_by,
        resolved_at=when(incident.resolved_at),
        resolved_because=incident.resolved_because.value if incident.resolved_because else None,
    )
