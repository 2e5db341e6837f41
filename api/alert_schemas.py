"""Request and response shapes of ``/v1/alerts`` (camelCase on the wire)."""

from __future__ import annotations

from typing import Annotated

import msgspec

from api.schemas import QUANTITY

THRESHOLD = QUANTITY  # a decimal, as a JSON number or a string holding one


class AlertIn(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    """``POST /v1/alerts``: what is left out takes its default."""

    metric: str
    kind: str
    threshold: Annotated[msgspec.Raw, THRESHOLD]
    customer_ref: str | None = None
    basis: str | None = None
    currency: str | None = None
    enabled: bool = True
    cooldown_seconds: int = 3600


class AlertReplacement(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    """``PUT /v1/alerts/{id}``: the whole alert, every field given (null where it has none)."""

    metric: str
    customer_ref: str | None
    kind: str
    threshold: Annotated[msgspec.Raw, THRESHOLD]
    basis: str | None
    currency: str | None
    enabled: bool
    cooldown_seconds: int


class AlertOut(msgspec.Struct, rename="camel"):
    id: str
    metric: str
    customer_ref: str | None
    kind: str
    threshold: str
    basis: str | None
    currency: str | None
    enabled: bool
    cooldown_seconds: int
    created_at: str
    updated_at: str


class AlertPage(msgspec.Struct):
    data: list[AlertOut]


class IncidentOut(msgspec.Struct, rename="camel"):
    id: str
    alert_id: str
    customer_ref: str
    metric: str
    period: str
    period_start: str
    period_end: str
    kind: str
    status: str
    occurrences: int
    threshold: str
    observed: str | None
    baseline: str | None
    triggered_at: str | None
    acknowledged_at: str | None
    acknowledged_by: str | None
    resolved_at: str | None
    resolved_because: str | None


class IncidentPage(msgspec.Struct):
    data: list[IncidentOut]


class AcknowledgeIn(msgspec.Struct, forbid_unknown_fields=True):
    actor: str | None = None  # who, beside the key used (always recorded)
