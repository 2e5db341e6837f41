"""The invoice audit: one invoice line traced to the pushes and usage events behind it.

For a customer, metric and billing period: the counter, every push to Stripe
(live and shadow) with the usage events it covered, the events no confirmed
push covers yet, what Stripe should hold, the period's closing and any
repairs. ``GET /v1/audit/invoice`` and ``stripemeter audit`` answer with it.
"""

from __future__ import annotations

from uuid import UUID

from adapters.persistence import Stores
from adapters.reconciliation_reports import ClosingState
from api.queries.cursors import decode_cursor, encode_cursor
from api.queries.usage import counter_out, event_out, when
from api.query import whole_number
from api.schemas import ClosingOut, FieldError, InvoiceAudit, PushOut, RepairOut
from domain import fields
from domain.history import HISTORY_NOT_BILLED
from domain.ledger import stripe_expected
from domain.mappings import PUSH_MODE, PushMode
from domain.periods import BillingPeriod
from domain.usage import usage_period_id
from projections.ledger import PushRow, RepairRow
from projections.usage_events import UsageEventRow

AUDIT_EVENTS = 100  # events listed per push; a push's cursor pages the rest
UNPUSHED = ("unpushed", 0)  # what ``push=unpushed`` names: the events no push covers yet


def build_audit(
    stores: Stores,
    tenant_id: UUID,
    customer_ref: str,
    metric: str,
    period: str | None = None,
    push: str | None = None,
    cursor: str | None = None,
) -> InvoiceAudit:
    """The audit of one invoice line; ``push`` and ``cursor`` page one push's events."""
    app, views = stores.app, stores.views
    fields.customer_ref(customer_ref)
    app.metric(tenant_id, metric)
    billing_period = _period(stores, tenant_id, customer_ref, metric, period)
    period_id = usage_period_id(tenant_id, customer_ref, metric, billing_period.key)
    wanted, after = _paging(push, cursor)
    counters = views.counters.counters(
        tenant_id, customer_ref=customer_ref, metric=metric, period=billing_period.key
    )
    pushes = []
    covered = 0  # the last version a confirmed live push covered
    for row in views.ledger.pushes(period_id):
        start = after if wanted == (row.target, row.number) else 0
        events = views.events.covered(
            period_id, row.covers_from, row.covers_to, start, AUDIT_EVENTS + 1
        )
        if row.status == "confirmed" and row.target == "live":
            covered = max(covered, row.covers_to)
        pushes.append(_push_out(row, events))
    start = after if wanted == UNPUSHED else 0
    unpushed = views.events.covered(period_id, covered + 1, 2**62, start, AUDIT_EVENTS + 1)
    mode = PUSH_MODE[counters[0].aggregation].value if counters else PushMode.VALUE.value
    confirmed = {
        ledger.target: stripe_expected(
            mode, ledger.confirmed_total, ledger.external_total, ledger.confirmed_value
        )
        for ledger in views.ledger.ledgers([period_id])
    }
    closing = views.reports.closing(period_id)
    customer = app.cached_customer(tenant_id, customer_ref)
    recorded = app.recorded_period(period_id)
    history = recorded is not None and recorded.history
    return InvoiceAudit(
        history=history,
        not_billed_reason=(
            HISTORY_NOT_BILLED
            if history
            else customer.why_not_billed(
                billing_period.key, billing_period.start, billing_period.end
            )
            if customer is not None and customer.mapped
            else None
        ),
        moved_to=recorded.moved_to if recorded is not None else [],
        closing=None if closing is None else _closing_out(closing),
        customer_ref=customer_ref,
        metric=metric,
        period=billing_period.key,
        period_start=when(billing_period.start) or "",
        period_end=when(billing_period.end) or "",
        counter=counter_out(counters[0]) if counters else None,
        stripe_units_confirmed=confirmed,
        pushes=pushes,
        unpushed_events=[event_out(e) for e in unpushed[:AUDIT_EVENTS]],
        unpushed_next_cursor=_cursor(unpushed),
        repairs=[_repair_out(r) for r in views.ledger.repairs(period_id)],
    )


def _period(
    stores: Stores, tenant_id: UUID, customer_ref: str, metric: str, period: str | None
) -> BillingPeriod:
    """The period named (in the customer's own cycle), or the one open now."""
    app = stores.app
    if period is None:
        return app.period_for(tenant_id, customer_ref, app.clock())
    app.customer(tenant_id, customer_ref)  # named by the customer as it is now
    return app.named_period(tenant_id, customer_ref, period, metric)


def _paging(push: str | None, cursor: str | None) -> tuple[tuple[str, int] | None, int]:
    """Which push's events to page (target, number), and after which event version."""
    if push is None:
        if cursor is not None:
            raise FieldError("push", "is required with cursor: name the push to page")
        return None, 0
    after = decode_cursor(cursor) if cursor is not None else 0
    if push == "unpushed":
        return UNPUSHED, after
    target, _, number = push.partition(":")
    reason = "must be <target>:<number> (e.g. live:3) or 'unpushed'"
    if target not in ("live", "shadow"):
        raise FieldError("push", reason)
    return (target, whole_number("push", number, reason)), after


def _cursor(events: list[UsageEventRow]) -> str | None:
    """The cursor past the listed events, when one more was read than is listed."""
    return encode_cursor(events[AUDIT_EVENTS - 1].version) if len(events) > AUDIT_EVENTS else None


def _push_out(row: PushRow, events: list[UsageEventRow]) -> PushOut:
    return PushOut(
        target=row.target,
        number=row.number,
        identifier=row.identifier,
        value=row.value,
        mode=row.mode,
        status=row.status,
        settled_by=row.how,
        reason=row.reason,
        stripe_timestamp=when(row.stripe_timestamp) or "",
        requested_at=when(row.intended_at) or "",
        settled_at=when(row.settled_at),
        covers_versions=[row.covers_from, row.covers_to],
        events=[event_out(e) for e in events[:AUDIT_EVENTS]],
        events_next_cursor=_cursor(events),
        purpose=row.purpose,
    )


def _closing_out(closing: ClosingState) -> ClosingOut:
    return ClosingOut(
        invoice_id=closing.invoice_id,
        finalizes_at=when(closing.finalizes_at),
        closed_at=when(closing.closed_at),
        verdict=closing.verdict,
        local=closing.local,
        stripe=closing.stripe,
        invoice_quantity=closing.invoice_quantity,
    )


def _repair_out(repair: RepairRow) -> RepairOut:
    return RepairOut(
        target=repair.target,
        recorded_at=when(repair.recorded_at) or "",
        stripe_total=repair.stripe_total,
        expected_total=repair.expected_total,
        actor=repair.actor,
        reason=repair.reason,
    )
