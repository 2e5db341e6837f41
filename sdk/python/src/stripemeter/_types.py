"""The shapes of what the read routes answer, as typed dicts (the service's camelCase keys).

They are plain dicts at run time: the types are for the reader and the type
checker. Numbers the service counts in decimals arrive as strings
(``"12.5"``), never floats; see docs/api.md for each field.
"""

from __future__ import annotations

from typing import Any, TypedDict


class Counter(TypedDict):
    metric: str
    customerRef: str
    period: str
    aggregation: str
    value: str  # by the metric's aggregation
    sum: str
    count: int
    max: str | None
    last: str | None
    lastAt: str | None
    watermark: str | None
    lateEvents: int


class NotBilled(TypedDict):
    metric: str
    period: str
    periodStart: str
    periodEnd: str
    value: str
    reason: str


class CurrentUsage(TypedDict):
    customerRef: str
    period: str
    periodStart: str
    periodEnd: str
    counters: list[Counter]
    notBilled: list[NotBilled]


class Bucket(TypedDict):
    start: str
    value: str
    sum: str
    count: int
    max: str | None
    last: str | None


class UsageHistory(TypedDict):
    customerRef: str
    metric: str
    granularity: str
    buckets: list[Bucket]


class EventRecord(TypedDict):
    """One recorded usage event (``GET /v1/events``)."""

    id: str
    metric: str
    customerRef: str
    period: str
    quantity: str
    ts: str
    recordedAt: str
    idempotencyKey: str
    meta: dict[str, Any]
    status: str  # counted, late, correction or moved
    note: str | None


class ReconciliationLine(TypedDict):
    customerRef: str
    metric: str
    period: str
    periodStart: str
    periodEnd: str
    stripeCustomerId: str
    meterId: str
    local: int
    stripe: int | None
    expected: int
    difference: int | None
    status: str
    cause: str
    closed: bool
    verdict: str | None
    target: str  # live, or shadow


class ReconciliationReport(TypedDict):
    runId: str
    month: str
    startedAt: str
    finishedAt: str
    trigger: str
    actor: str
    repair: bool
    stripeCalls: int
    counts: dict[str, int]
    lines: list[ReconciliationLine]


class WidgetToken(TypedDict):
    """A minted widget token (``POST /v1/widget-tokens``): shown once, read-only, one customer."""

    token: str
    customerRef: str
    expiresAt: str
