"""The metrics a tenant declares, as ``/v1/meters`` and ``stripemeter meters`` show them."""

from __future__ import annotations

from uuid import UUID

import msgspec

from api.schemas import MeterOut
from domain.application import MeteringApp
from domain.meters import DEFAULT_LATENESS_SECONDS, MetricDefinition, parse_aggregation


def meter_out(definition: MetricDefinition) -> MeterOut:
    return msgspec.convert(definition, MeterOut, from_attributes=True)


def declare_meter(
    app: MeteringApp,
    tenant_id: UUID,
    *,
    name: str,
    aggregation: str,
    unit: str = "unit",
    lateness_window_seconds: int = DEFAULT_LATENESS_SECONDS,
    stripe_event_name: str | None = None,
    allow_negative: bool = False,
) -> tuple[MeterOut, bool]:
    """Declare a metric (its rules are the definition's); True when it is new."""
    definition = MetricDefinition(
        name=name,
        aggregation=parse_aggregation(aggregation),
        unit=unit,
        lateness_seconds=lateness_window_seconds,
        stripe_event_name=stripe_event_name,
        allow_negative=allow_negative,
    )
    created = app.declare_metric(tenant_id, definition)
    return meter_out(definition), created


def list_meters(app: MeteringApp, tenant_id: UUID) -> list[MeterOut]:
    return [meter_out(m) for m in app.metrics(tenant_id)]
