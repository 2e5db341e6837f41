"""Pre-invoice parity: /v1/reconciliation, /v1/adjustments, and Stripe's invoice webhooks."""

from __future__ import annotations

import io
from typing import Annotated, Any
from uuid import UUID

import anyio.to_thread
import msgspec
from litestar import Request, Response, get, post
from litestar.params import FromPath, FromQuery, QueryParameter

from adapters.closing import Invoice
from adapters.reconciler import Scope
from adapters.stripe_gateway import verify_webhook
from api.auth import authorize, authorize_async, services
from api.queries.adjustments import adjustment_out
from api.queries.cursors import decode_cursor, encode_cursor
from api.queries.reconciliation import month_of, report_out, write_csv
from api.query import given_once
from api.schemas import (
    AdjustmentIn,
    AdjustmentOut,
    DecisionIn,
    FieldError,
    ReconcileIn,
    ReconciliationOut,
    decode_json,
    quantity_of,
    validation_field,
)
from domain import fields
from domain.adjusting import AdjustmentService
from domain.errors import NotFoundError
from domain.tenancy import Principal
from domain.tenancy import Scope as KeyScope


def actor_of(principal: Principal, named: str | None) -> str:
    """Who acted: the name the caller gives (checked), and always the key that was used."""
    key = f"api-key:{principal.key_id}"
    if named is None:
        return key
    return f"{fields.actor(named)} ({key})"


@post("/v1/reconciliation/run", status_code=200)
async def run_reconciliation(request: Request[Any, Any, Any]) -> dict[str, list[ReconciliationOut]]:
    """Reconcile this tenant's periods now (one month, or every recent one); repair on request."""
    principal = await authorize_async(request, KeyScope.ADMIN)
    raw = await request.body()
    body = decode_json(raw, ReconcileIn) if raw.strip() else ReconcileIn()
    month = month_of("period", body.period) if body.period is not None else None
    actor = actor_of(principal, body.actor)
    reconciler = services(request).reconciliation().reconciler
    reports = await anyio.to_thread.run_sync(
        lambda: reconciler.run(
            Scope(principal.tenant_id, month), repair=body.repair, actor=actor, trigger="api"
        )
    )
    return {"data": [report_out(r) for r in reports]}


@get("/v1/reconciliation/{period:str}", sync_to_thread=True, before_request=given_once)
def get_reconciliation(
    request: Request[Any, Any, Any],
    period: FromPath[str],
    fmt: Annotated[str, QueryParameter(name="format")] = "json",
) -> Response[Any]:
    """The latest report for a month (periods starting in it), as JSON or CSV."""
    principal = authorize(request, KeyScope.READ)
    month = month_of("period", period)
    if fmt not in ("json", "csv"):
        raise FieldError("format", "must be json or csv")
    report = services(request).stores.views.reports.latest(principal.tenant_id, month)
    if report is None:
        raise NotFoundError(f"no reconciliation has run for {month} yet")
    out = report_out(report)
    if fmt == "json":
        return Response(out)
    buffer = io.StringIO()
    write_csv([out], buffer)
    return Response(
        buffer.getvalue(),
        media_type="text/csv",
        headers={"content-disposition": f'attachment; filename="reconciliation-{month}.csv"'},
    )


# -- adjustments ----------------------------------------------------------------------


@post("/v1/adjustments")
async def propose_adjustment(request: Request[Any, Any, Any]) -> Response[AdjustmentOut]:
    """Propose an adjustment; it counts only once approved. ``Idempotency-Key`` proposes once."""
    principal = await authorize_async(request, KeyScope.ADMIN)
    body = decode_json(await request.body(), AdjustmentIn)
    customer_ref = fields.customer_ref(body.customer_ref)
    metric = fields.metric(body.metric)
    quantity = quantity_of(body.quantity)
    key = request.headers.get("idempotency-key")
    if key is not None:
        key = fields.idempotency_header(key)
    service = AdjustmentService(services(request).stores.app)
    adjustment, created = await anyio.to_thread.run_sync(
        lambda: service.propose(
            principal.tenant_id,
            customer_ref,
            metric,
            quantity,
            actor=actor_of(principal, body.actor),
            reason=body.reason,
            key=key,
        )
    )
    return Response(adjustment_out(adjustment), status_code=201 if created else 200)


@get("/v1/adjustments", sync_to_thread=True, before_request=given_once)
def list_adjustments(
    request: Request[Any, Any, Any],
    status: FromQuery[str | None] = None,
    cursor: FromQuery[str | None] = None,
    limit: FromQuery[int] = 100,
) -> dict[str, Any]:
    principal = authorize(request, KeyScope.READ)
    if status is not None and status not in ("pending", "applied", "rejected", "reverted"):
        raise FieldError("status", "must be pending, applied, rejected or reverted")
    if not 1 <= limit <= 1000:
        raise FieldError("limit", "must be between 1 and 1000")
    after = decode_cursor(cursor) if cursor is not None else None
    rows = services(request).stores.views.adjustments.page(
        principal.tenant_id, status, after, limit
    )
    next_cursor = encode_cursor(rows[-1].position) if len(rows) == limit else None
    return {"data": [adjustment_out(r) for r in rows], "nextCursor": next_cursor}


@post("/v1/adjustments/{adjustment_id:str}/{decision:str}", status_code=200)
async def decide_adjustment(
    request: Request[Any, Any, Any], adjustment_id: FromPath[str], decision: FromPath[str]
) -> AdjustmentOut:
    """``approve``: count a pending adjustment in the customer's open period; ``reject`` it;
    ``revert``: undo an applied one (its opposite counts in the open period), or reject a
    pending one."""
    principal = await authorize_async(request, KeyScope.ADMIN)
    body = decode_json(await request.body(), DecisionIn)
    try:
        target = UUID(adjustment_id)
    except ValueError:
        raise FieldError("id", "must be an adjustment id (a UUID)") from None
    service = AdjustmentService(services(request).stores.app)
    actor = actor_of(principal, body.actor)
    adjustment = await anyio.to_thread.run_sync(
        lambda: service.decide(decision, principal.tenant_id, target, actor, body.reason)
    )
    outcome = {"applied": "approved"}.get(adjustment.status.value, adjustment.status.value)
    services(request).metrics.corrections.labels(outcome).inc()
    return adjustment_out(adjustment)


# -- Stripe's webhooks ------------------------------------------------------------------


INVOICE_TIMESTAMPS = ("created", "period_start", "period_end", "automatically_finalizes_at")


class WebhookData(msgspec.Struct, frozen=True):
    object: dict[str, Any]


class WebhookEvent(msgspec.Struct, frozen=True):
    """The envelope of a Stripe event: what the route reads before the handler."""

    type: Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
    id: str | None = None
    data: WebhookData | None = None


def read_webhook(payload: str) -> tuple[str, Invoice | None]:
    """The event's type and, for an invoice event, its invoice; a FieldError names what is wrong.

    The fields are checked here, at the boundary, so that a signed but
    malformed delivery changes nothing and is answered 422 (a 500 would only
    make Stripe send it again).
    """
    try:
        event = decode_json(payload.encode(), WebhookEvent)
    except msgspec.ValidationError as error:
        raise validation_field(error) from None
    if not event.type.startswith("invoice."):
        return event.type, None
    if event.data is None:
        raise FieldError("data.object", "is required: an invoice event carries the invoice")
    try:
        invoice = msgspec.convert(event.data.object, type=Invoice)
    except msgspec.ValidationError as error:
        bad = validation_field(error)
        if bad.field == "body":
            raise FieldError("data.object", bad.reason) from None
        reason = bad.reason
        if bad.field in INVOICE_TIMESTAMPS and reason != "is required":
            reason = f"must be a Unix timestamp in whole seconds, 1970 to 2099 ({reason})"
        raise FieldError(f"data.object.{bad.field}", reason) from None
    return event.type, invoice


@post("/v1/stripe/webhooks", status_code=200)
async def stripe_webhook(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """``invoice.created`` tells when a period's invoice finalises; ``invoice.finalized`` ends it.

    Only signed deliveries are read (``STRIPE_WEBHOOK_SECRET``); others are 422,
    and so is a signed one whose fields are not what Stripe sends.
    """
    svc = services(request)
    secret = svc.settings.stripe.webhook_secret
    if secret is None:
        raise FieldError(
            "Stripe-Signature", "webhooks are not configured here: set STRIPE_WEBHOOK_SECRET"
        )
    try:
        payload = (await request.body()).decode()
    except UnicodeDecodeError:
        raise FieldError("body", "must be JSON in UTF-8") from None
    verify_webhook(payload, request.headers.get("stripe-signature", ""), secret)
    kind, invoice = read_webhook(payload)
    closer = svc.reconciliation().closer
    handlers = {
        "invoice.created": closer.invoice_created,
        "invoice.finalized": closer.invoice_finalized,
    }
    handled = 0
    if kind in handlers and invoice is not None:
        handled = await anyio.to_thread.run_sync(handlers[kind], invoice)
    return {"received": kind, "periods": handled}
