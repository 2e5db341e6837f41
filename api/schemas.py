"""Request and response shapes of the HTTP API (camelCase on the wire)."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from domain import fields, json_shape
from domain.errors import InvalidInputError
from domain.meters import Aggregation

T = TypeVar("T")
# Deep enough for any body this API takes (an event's meta may nest 32 levels
# inside the batch), shallow enough that decoding never nears the stack limit.
MAX_BODY_DEPTH = 64


# How the OpenAPI document shows the values read later by hand (msgspec.Raw);
# "extra" is where Litestar reads schema keywords from (api/openapi.py too).
# msgspec ignores this metadata when decoding.
QUANTITY = msgspec.Meta(
    extra_json_schema={
        "description": "a decimal, as a JSON number or a string holding one",
        "extra": {"anyOf": [{"type": "number"}, {"type": "string"}]},
    }
)


class EventIn(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    metric: str
    customer_ref: str
    quantity: Annotated[msgspec.Raw, QUANTITY]  # judged by domain.fields.quantity
    ts: str
    idempotency_key: str | None = None
    meta: dict[str, Any] | None = None
    tenant_id: str | None = None


class IngestRequest(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    # Each event is decoded alone, so that one bad event refuses only itself.
    events: list[msgspec.Raw]
    tenant_id: str | None = None
    history: Annotated[
        bool,
        msgspec.Meta(
            description="Import the events as history (an API key with the admin scope):"
            " an event older than the ingest horizon is counted in its own ended billing"
            " period, one StripeMeter never billed live, and never pushed to Stripe; its"
            ' result says late: "history". Events inside the horizon are ordinary usage,'
            " except in a period already history, where they are history too (docs/import.md)."
        ),
    ] = False


class EventResult(msgspec.Struct, rename="camel", omit_defaults=True):
    index: int
    status: str
    idempotency_key: str | None = None
    field: str | None = None
    reason: str | None = None
    late: str | None = None
    # Present only when a cap decided the event (docs/caps.md): ``soft``, accepted with its
    # period past a soft cap; ``hard``, refused (an error on ``quantity``) by a hard cap.
    cap: Literal["soft", "hard"] | None = None


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


class MeterOut(
    msgspec.Struct,
    rename={
        "lateness_seconds": "latenessWindowSeconds",
        "stripe_event_name": "stripeEventName",
        "allow_negative": "allowNegative",
    },
):
    """A ``MetricDefinition`` as answered: converted from its attributes (``meter_out``)."""

    name: str
    aggregation: Aggregation
    unit: str
    lateness_seconds: int
    stripe_event_name: str | None
    allow_negative: bool


class MeterPage(msgspec.Struct):
    data: list[MeterOut]


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
    # counted, late (its period was closed: not counted there), correction, or moved
    # (counted in another period now, when the customer's billing cycle changed)
    status: str
    note: str | None = None  # why it is late, why the correction was made, where it moved


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


class NotBilledOut(msgspec.Struct, rename="camel"):
    """Usage of a Stripe-mapped customer that no invoice covers, and why."""

    metric: str
    period: str
    period_start: str
    period_end: str
    value: str
    reason: str


class CurrentUsage(msgspec.Struct, rename="camel"):
    customer_ref: str
    period: str
    period_start: str
    period_end: str
    counters: list[CounterOut]
    # Usage counted in periods no Stripe invoice covers (before the subscription
    # started, or counted under an earlier billing cycle): never pushed, never hidden.
    not_billed: list[NotBilledOut] = []


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


class FieldReason(msgspec.Struct):
    field: str  # as the client sent it: a body field, a query parameter, a header
    reason: str


class ProblemDetails(msgspec.Struct, omit_defaults=True):
    """Every error answer (RFC 9457), built by api/problems.py."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldReason] | None = None  # each refused field; present on most 400/422


class FieldError(InvalidInputError, ValueError):
    """A request value that breaks a rule; ``field`` names it as the client sent it."""


def parse_time(field: str, value: str) -> datetime:
    """An RFC 3339 timestamp with an explicit offset, as a UTC datetime (see domain.fields)."""
    return fields.timestamp(field, value)


def check_text(field: str, value: str, longest: int) -> str:
    return fields.text(field, value, longest)


NOT_UTF8 = "is not valid UTF-8"


def quantity_of(raw: msgspec.Raw, field: str = "quantity") -> Decimal:
    """A quantity sent as a JSON number or as a JSON string holding one."""
    data = bytes(raw)
    if data[:1] == b'"':
        try:
            text = msgspec.json.decode(data, type=str)
        except UnicodeDecodeError:
            raise FieldError(field, NOT_UTF8) from None
    elif data[:1] in b"-0123456789":
        text = data.decode()
    else:
        raise FieldError(field, "must be a number or a string holding one")
    return fields.quantity(text, field)


def not_utf8(data: bytes, prefix: str = "", among: frozenset[str] | None = None) -> FieldError:
    """The error of an object holding bytes that are no UTF-8, naming the member that holds them.

    The decoder raises ``UnicodeDecodeError`` for them, which no rule catches.
    ``among``: the members it reads (others are skipped unread).
    """
    whole = prefix.rstrip(".") or "body"
    for member in json_shape.members(data):
        if among is not None and member.key not in among:
            continue
        try:
            data[member.start : member.end].decode()
        except UnicodeDecodeError:
            return FieldError(f"{prefix}{member.key}" if member.key else whole, NOT_UTF8)
    return FieldError(whole, NOT_UTF8)


def too_deep(data: bytes) -> bool:
    """Whether ``data`` nests more than ``MAX_BODY_DEPTH`` levels (too deep to decode safely)."""
    return not json_shape.shallow(data, MAX_BODY_DEPTH) and json_shape.depth(data) > MAX_BODY_DEPTH


def decode_json(data: bytes, type: type[T]) -> T:
    """A request body as ``type``, refusing repeated keys and nesting past any sane depth."""
    if too_deep(data):
        raise FieldError("body", f"must nest at most {MAX_BODY_DEPTH} levels deep")
    value = msgspec.json.decode(data, type=type)
    repeated_key(data, "body")
    return value


def repeated_key(data: bytes, inner_field: str) -> None:
    """Refuse a key given twice in one object: a decoder would silently keep the last."""
    repeated = json_shape.duplicate_key(data)
    if repeated is None:
        return
    if repeated.top_level:
        raise FieldError(repeated.key, "appears more than once in one object")
    raise FieldError(inner_field, f"key {repeated.key!r} appears more than once in one object")


def unknown_field(error: msgspec.ValidationError) -> str | None:
    """The key msgspec refused as unknown (any text, even empty), if that was the error."""
    unknown = re.match(
        r"Object contains unknown field `(.*)`(?: - at `[^`]*`)?\Z", str(error), re.S
    )
    return unknown.group(1) if unknown else None


def validation_field(error: msgspec.ValidationError) -> FieldError:
    """Turn msgspec's message into the field it names and a plain reason."""
    message = str(error)
    missing = re.match(r"Object missing required field `(\w+)`", message)
    if missing:
        return FieldError(missing.group(1), "is required")
    unknown = unknown_field(error)
    if unknown is not None:
        if unknown.isidentifier():
            return FieldError(unknown, "is not a known field")
        return FieldError("body", f"holds the unknown field {unknown!r}")
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


class MappingPage(msgspec.Struct):
    data: list[MappingOut]


class CustomerPage(msgspec.Struct, rename="camel"):
    data: list[CustomerOut]
    next_cursor: str | None  # the last customerRef of this page; null: the last page


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
    verdict: str | None  # "parity" or "mismatch" once the invoice is final; "history": imported
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
    # Why no Stripe invoice covers this period (None: one does, or the customer is
    # not mapped), and where its usage went when the customer's billing cycle changed.
    not_billed_reason: str | None = None
    moved_to: list[str] = []
    # The period holds imported history (docs/import.md): counted, never pushed; its
    # events are the unpushed ones, its closing's verdict "history".
    history: bool = False


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
    target: Annotated[
        Literal["live", "shadow"],
        msgspec.Meta(
            description="Which Stripe account and ledger the line compares: live, or shadow"
            " mode's test account (a line of its own, beside the live line of the period)."
        ),
    ] = "live"


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


class ReconciliationRuns(msgspec.Struct):
    data: list[ReconciliationOut]


class AdjustmentIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    customer_ref: str
    metric: str
    quantity: Annotated[msgspec.Raw, QUANTITY]  # judged by domain.fields.quantity
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


class AdjustmentPage(msgspec.Struct, rename="camel"):
    data: list[AdjustmentOut]
    next_cursor: str | None


class WebhookReceipt(msgspec.Struct):
    received: str  # the event's type
    periods: int  # billing periods it changed


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


class Readiness(msgspec.Struct):
    status: str  # ready/unready (/health/ready), healthy/degraded (/health)
    checks: dict[str, Any]  # per dependency: its status and details
    version: str  # the running StripeMeter (adapters/build_info.py)


class CapIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """``PUT /v1/caps/{metric}``: ``customerRef`` null caps every customer of the metric."""

    customer_ref: str | None
    limit: Annotated[msgspec.Raw, QUANTITY]  # judged by domain.fields.quantity, then >= 0
    mode: Literal["soft", "hard"]


class CapOut(msgspec.Struct, rename="camel"):
    metric: str
    customer_ref: str | None
    limit: str
    mode: str


class CapPage(msgspec.Struct):
    data: list[CapOut]
