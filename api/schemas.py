"""Request and response shapes of the HTTP API (camelCase on the wire)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec

MAX_META_BYTES = 4_096
MAX_QUANTITY = Decimal(10) ** 15
MAX_QUANTITY_PLACES = 12
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")


class EventIn(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    metric: str
    customer_ref: str
    quantity: Decimal
    ts: str
    idempotency_key: str | None = None
    meta: dict[str, Any] | None = None
    tenant_id: str | None = None


class IngestRequest(msgspec.Struct, rename="camel"):
    events: list[msgspec.Raw]


class EventResult(msgspec.Struct, rename="camel", omit_defaults=True):
    index: int
    status: str
    idempotency_key: str | None = None
    field: str | None = None
    reason: str | None = None
    late: str | None = None


class IngestResponse(msgspec.Struct, rename="camel"):
    accepted: int
    duplicates: int
    conflicts: int
    errors: int
    results: list[EventResult]


class MeterIn(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    name: str
    aggregation: str
    unit: str = "unit"
    lateness_window_seconds: int = 48 * 3600
    stripe_event_name: str | None = None
    allow_negative: bool = False


class MeterOut(msgspec.Struct, rename="camel"):
    name: str
    aggregation: str
    unit: str
    lateness_window_seconds: int
    stripe_event_name: str | None
    allow_negative: bool


class EventOut(msgspec.Struct, rename="camel"):
    id: str
    metric: str
    customer_ref: str
    period: str
    quantity: str
    ts: str
    recorded_at: str
    idempotency_key: str
    meta: dict[str, Any]
    status: str  # counted, late (its period was closed: not counted there) or correction
    note: str | None = None  # why it is late, or why the correction was made


class EventPage(msgspec.Struct, rename="camel"):
    data: list[EventOut]
    next_cursor: str | None


class CounterOut(msgspec.Struct, rename="camel"):
    metric: str
    customer_ref: str
    period: str
    aggregation: str
    value: str
    sum: str
    count: int
    max: str | None
    last: str | None
    last_at: str | None
    watermark: str | None
    late_events: int


class CurrentUsage(msgspec.Struct, rename="camel"):
    customer_ref: str
    period: str
    period_start: str
    period_end: str
    counters: list[CounterOut]


class BucketOut(msgspec.Struct, rename="camel"):
    start: str
    value: str
    sum: str
    count: int
    max: str | None
    last: str | None


class UsageHistory(msgspec.Struct, rename="camel"):
    customer_ref: str
    metric: str
    granularity: str
    buckets: list[BucketOut]


class FieldError(ValueError):
    """A request value that breaks a rule; ``field`` names it as the client sent it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def parse_time(field: str, value: str) -> datetime:
    """An RFC 3339 timestamp with an explicit offset, as a UTC datetime."""
    if not RFC3339.match(value):
        raise FieldError(
            field, "must be an RFC 3339 timestamp with a time zone, e.g. 2026-01-16T14:30:00Z"
        )
    text = value.replace("z", "Z").replace("Z", "+00:00").replace("t", "T").replace(" ", "T")
    # Python reads at most 6 fractional digits; nanoseconds are cut, not rounded.
    text = re.sub(r"\.(\d{6})\d+", r".\1", text)
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except ValueError:
        raise FieldError(field, "is not a real date and time") from None
    except OverflowError:  # the offset moves it past year 1 or 9999 in UTC
        raise FieldError(field, "is out of range") from None


def check_quantity(value: Decimal) -> Decimal:
    if not value.is_finite():
        raise FieldError("quantity", "must be a finite number")
    if abs(value) >= MAX_QUANTITY:
        raise FieldError("quantity", "must be smaller than 10^15 in magnitude")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MAX_QUANTITY_PLACES:
        normalized = value.normalize().as_tuple().exponent
        if isinstance(normalized, int) and normalized < -MAX_QUANTITY_PLACES:
            raise FieldError("quantity", f"must have at most {MAX_QUANTITY_PLACES} decimal places")
    return value + 0  # drop a negative zero's sign


def check_text(field: str, value: str, longest: int) -> str:
    if not value or not value.strip():
        raise FieldError(field, "must not be empty")
    if len(value) > longest:
        raise FieldError(field, f"must be at most {longest} characters")
    if any(ord(c) < 32 for c in value):
        raise FieldError(field, "must not contain control characters")
    return value


def validation_field(error: msgspec.ValidationError) -> FieldError:
    """Turn msgspec's message into the field it names and a plain reason."""
    message = str(error)
    missing = re.match(r"Object missing required field `(\w+)`", message)
    if missing:
        return FieldError(missing.group(1), "is required")
    unknown = re.match(r"Object contains unknown field `(\w+)`", message)
    if unknown:
        return FieldError(unknown.group(1), "is not a known field")
    located = re.match(r"(.*) - at `\$\.?([\w.\[\]]*)`", message)
    if located:
        reason, path = located.groups()
        return FieldError(path or "body", reason[0].lower() + reason[1:])
    return FieldError("body", message)


class MappingIn(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    metric: str
    stripe_meter_id: str | None = None
    stripe_event_name: str | None = None
    create_meter: bool = False
    shadow_event_name: str | None = None


class MappingOut(msgspec.Struct, rename="camel"):
    metric: str
    stripe_meter_id: str
    stripe_event_name: str
    stripe_formula: str
    push: str
    shadow_meter_id: str | None
    shadow_event_name: str | None


class CustomerIn(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    customer_ref: str
    stripe_customer_id: str
    billing_cycle_anchor: str | None = None
    shadow_stripe_customer_id: str | None = None


class CustomerOut(msgspec.Struct, rename="camel"):
    customer_ref: str
    stripe_customer_id: str
    billing_cycle: str  # "calendar-month" or "anchored"
    billing_cycle_anchor: str | None
    shadow_stripe_customer_id: str | None


class PushOut(msgspec.Struct, rename="camel"):
    target: str
    number: int
    identifier: str
    value: int
    mode: str
    status: str
    settled_by: str | None
    reason: str | None  # why Stripe refused it, when abandoned
    stripe_timestamp: str
    requested_at: str
    settled_at: str | None
    covers_versions: list[int]
    events: list[EventOut]
    events_next_cursor: str | None
    purpose: str = "usage"  # "usage", or who repaired it and why


class RepairOut(msgspec.Struct, rename="camel"):
    target: str
    recorded_at: str
    stripe_total: int
    expected_total: int
    actor: str
    reason: str


class ClosingOut(msgspec.Struct, rename="camel"):
    """The period's invoice, its close and the final parity (when recorded)."""

    invoice_id: str | None
    finalizes_at: str | None
    closed_at: str | None
    verdict: str | None  # "parity" or "mismatch", once the invoice is final
    local: int | None
    stripe: int | None
    invoice_quantity: int | None


class InvoiceAudit(msgspec.Struct, rename="camel"):
    customer_ref: str
    metric: str
    period: str
    period_start: str
    period_end: str
    counter: CounterOut | None
    stripe_units_confirmed: dict[str, int]
    pushes: list[PushOut]
    unpushed_events: list[EventOut]
    unpushed_next_cursor: str | None
    repairs: list[RepairOut] = []
    closing: ClosingOut | None = None


# -- reconciliation and adjustments -------------------------------------------------


class ReconcileIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    period: str | None = None  # YYYY-MM (periods starting that month); none: every recent one
    repair: bool = False
    actor: str | None = None  # who asks, for the audit trail (the API key is recorded too)


class ReconciliationLineOut(msgspec.Struct, rename="camel"):
    customer_ref: str
    metric: str
    period: str
    period_start: str
    period_end: str
    stripe_customer_id: str
    meter_id: str
    local: int
    stripe: int | None
    expected: int
    difference: int | None
    status: str
    cause: str
    closed: bool
    verdict: str | None


class ReconciliationOut(msgspec.Struct, rename="camel"):
    run_id: str
    month: str
    started_at: str
    finished_at: str
    trigger: str
    actor: str
    repair: bool
    stripe_calls: int
    counts: dict[str, int]
    lines: list[ReconciliationLineOut]


class AdjustmentIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    customer_ref: str
    metric: str
    quantity: Decimal
    reason: str
    actor: str | None = None


class DecisionIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    reason: str
    actor: str | None = None


class AdjustmentOut(msgspec.Struct, rename="camel"):
    id: str
    customer_ref: str
    metric: str
    quantity: str
    events: int
    status: str
    source_period: str | None
    source_key: str | None
    proposed_by: str
    reason: str
    proposed_at: str
    decided_by: str | None = None
    decision_reason: str | None = None
    decided_at: str | None = None
    applied_to: str | None = None
    reverted_in: str | None = None


# -- replay -----------------------------------------------------------------------------


class ReplayIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    since: str
    until: str
    mode: str = "dry-run"  # or "apply"
    metrics: list[str] | None = None  # none: every metric
    customers: list[str] | None = None  # customerRefs; none: every customer
    cursor: str | None = None
    limit: int = 200


class ReplayTallyOut(msgspec.Struct, rename="camel"):
    value: str
    sum: str
    count: int
    max: str | None
    last: str | None
    last_at: str | None
    watermark: str | None
    late_events: int
    version: int  # the period's version this counter reflects
    position: int  # the log position of the last event it reflects


class ReplayCounterOut(msgspec.Struct, rename="camel"):
    customer_ref: str
    metric: str
    period: str
    period_start: str
    period_end: str
    aggregation: str
    before: ReplayTallyOut | None  # the stored counter (null: none stored)
    after: ReplayTallyOut | None  # derived from the event log (null: no counted event)
    difference: str  # after.value - before.value
    changed: bool  # the counter or one of its hour buckets differs
    hours_changed: int
    pending_events: int  # past the view's position: the projection adds them as usual


class ReplaySummaryOut(msgspec.Struct, rename="camel"):
    examined: int
    changed: int
    applied: int  # counters written (apply only)
    pending_events: int


class ReplayOut(msgspec.Struct, rename="camel"):
    mode: str
    view_position: int  # the counters view's log position the counters were derived as of
    summary: ReplaySummaryOut
    counters: list[ReplayCounterOut]
    pushes: str | None  # "queued" (at once) or "sweep" (by the push worker's sweep); null: none
    next_cursor: str | None
