"""Which domain events become outbound webhooks, and what each one's ``data`` says.

``WEBHOOK_SOURCES`` maps a domain event class to its webhook type and a
function of (the event, its aggregate as of that event) giving the tenant and
the payload's ``data``. Adding a source is one entry: the outbox follower
(adapters/webhook_outbox.py) reads every class named here from the log. The
function must depend on the event and the aggregate at its version only, so
that a replay makes the same payload.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid5

from domain.alert_incidents import AlertIncident
from domain.drift import DriftFinding
from domain.tenancy import NAMESPACE
from domain.usage import UsagePeriod

Data = dict[str, Any]


@dataclass(frozen=True)
class WebhookSource:
    type: str
    describe: Callable[[Any, Any], tuple[UUID, Data]]
    """(event, aggregate as of the event) → (tenant id, the payload's ``data``)."""


def source_event_id(originator_id: UUID, originator_version: int) -> UUID:
    """The id of one stored domain event: its aggregate and version name it for good."""
    return uuid5(NAMESPACE, f"source-event:{originator_id}:{originator_version}")


def webhook_event_id(source: UUID) -> str:
    """The payload's ``id``: the same for every endpoint that gets the event."""
    return f"evt_{source.hex}"


def payload(event_id: str, event_type: str, created: datetime, data: Data) -> str:
    """The delivery's exact body: ``id``, ``type``, ``created`` (Unix seconds), ``data``."""
    body = {"id": event_id, "type": event_type, "created": int(created.timestamp()), "data": data}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _period(period: UsagePeriod) -> Data:
    return {
        "customerRef": period.customer_ref,
        "metric": period.metric,
        "period": period.period,
        "periodStart": _time(period.period_start),
        "periodEnd": _time(period.period_end),
    }


def period_closed(event: UsagePeriod.PeriodClosed, period: UsagePeriod) -> tuple[UUID, Data]:
    return period.tenant_id, {
        **_period(period),
        "aggregation": period.aggregation_name,
        "value": str(period.value),
        "eventCount": period.event_count,
        "invoiceId": period.invoice_id,
        "reason": event.reason,
    }


def parity_recorded(event: UsagePeriod.ParityRecorded, period: UsagePeriod) -> tuple[UUID, Data]:
    return period.tenant_id, {
        **_period(period),
        "verdict": event.verdict,
        "localUnits": event.local_units,
        "stripeTotal": event.stripe_total,
        "invoiceId": event.invoice_id,
        "invoiceQuantity": event.invoice_quantity,
    }


def drift_detected(event: DriftFinding.Detected, _: DriftFinding) -> tuple[UUID, Data]:
    return event.tenant_id, {
        "customerRef": event.customer_ref,
        "metric": event.metric,
        "period": event.period,
        "target": event.target,
        "stripeCustomerId": event.stripe_customer_id,
        "meterId": event.meter_id,
        "local": event.local,
        "stripe": event.stripe,
        "expected": event.expected,
        "difference": event.local - event.stripe,
        "cause": event.cause,
        "closed": event.closed,
    }


def cap_reached(event: UsagePeriod.CapReached, period: UsagePeriod) -> tuple[UUID, Data]:
    return period.tenant_id, {
        **_period(period),
        "aggregation": period.aggregation_name,
        "mode": event.mode,
        "limit": str(event.limit),
        "value": str(event.value),
    }


def _incident(event: AlertIncident.Triggered | AlertIncident.Resolved) -> Data:
    return {
        "alertId": str(event.alert_id),
        "incidentId": str(event.originator_id),
        "customerRef": event.customer_ref,
        "metric": event.metric,
        "period": event.period,
        "periodStart": _time(event.period_start),
        "periodEnd": _time(event.period_end),
        "kind": event.kind,
        "threshold": str(event.threshold),
        "observed": None if event.observed is None else str(event.observed),
        "occurrence": event.occurrence,
        "at": _time(event.at),
    }


def alert_triggered(event: AlertIncident.Triggered, _: AlertIncident) -> tuple[UUID, Data]:
    baseline = None if event.baseline is None else str(event.baseline)
    return event.tenant_id, {**_incident(event), "baseline": baseline}


def alert_resolved(event: AlertIncident.Resolved, _: AlertIncident) -> tuple[UUID, Data]:
    return event.tenant_id, {**_incident(event), "reason": event.reason}


WEBHOOK_SOURCES: dict[type[Any], WebhookSource] = {
    UsagePeriod.PeriodClosed: WebhookSource("period.closed", period_closed),
    UsagePeriod.ParityRecorded: WebhookSource("parity.recorded", parity_recorded),
    DriftFinding.Detected: WebhookSource("drift.detected", drift_detected),
    UsagePeriod.CapReached: WebhookSource("cap.reached", cap_reached),
    AlertIncident.Triggered: WebhookSource("alert.triggered", alert_triggered),
    AlertIncident.Resolved: WebhookSource("alert.resolved", alert_resolved),
}
