"""Request and response shapes of the widget routes (camelCase on the wire, docs/widget.md)."""

from __future__ import annotations

import msgspec

from api.schemas_projection import Money


class WidgetTokenIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """``POST /v1/widget-tokens``: whose usage the token reads, and for how long (s)."""

    customer_ref: str
    lifetime_seconds: int | None = None  # 900 when absent; 1 to 86,400


class WidgetTokenOut(msgspec.Struct, rename="camel"):
    token: str  # shown once: only its digest is stored
    customer_ref: str
    expires_at: str


class WidgetOriginsIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """``PUT /v1/widget/origins``: replaces the list; ``[]`` allows no page."""

    origins: list[str]


class WidgetOriginsOut(msgspec.Struct, rename="camel"):
    origins: list[str]


class WidgetMetric(msgspec.Struct, rename="camel"):
    """One metric as the widget shows it. No cost is a null with ``noPrice`` saying why,
    never a zero."""

    metric: str
    unit: str
    value: str  # the counter's value, as /v1/usage/current gives it
    currency: str | None
    cost_so_far: Money | None
    forecast: Money | None
    no_price: str | None


class WidgetUsage(msgspec.Struct, rename="camel"):
    """``GET /v1/widget/usage``: the token's customer, this billing period."""

    customer_ref: str
    period: str
    period_start: str
    period_end: str  # exclusive
    metrics: list[WidgetMetric]
    currency: str | None
    cost_so_far: Money | None
    forecast: Money | None
    cost_reason: str | None  # why there is no total, when there is none
    as_of: str
