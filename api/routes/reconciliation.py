"""Pre-invoice parity: /v1/reconciliation, /v1/adjustments, and Stripe's invoice webhooks."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Annotated, Any
from uuid import UUID

import anyio.to_thread
import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.openapi.spec import Operation
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody, QueryParameter

from adapters.closing import Invoice
from adapters.cycle_changes import CycleFollower, Subscription
from adapters.price_book import PriceRef
from adapters.reconciler import Scope
from adapters.stripe_gateway import verify_webhook
from api.auth import PrincipalDep, ServicesDep, requires
from api.controller import V1Controller
from api.openapi import AlsoCsv, header, read_by_hand
from api.problems import created_or_same, error_responses
from api.queries.adjustments import adjustment_out
from api.queries.cursors import decode_cursor, encode_cursor
from api.queries.reconciliation import month_of, report_out, write_csv
from api.query import given_once
from api.schemas import (
    AdjustmentIn,
    AdjustmentOut,
    AdjustmentPage,
    DecisionIn,
    FieldError,
    ReconcileIn,
    ReconciliationOut,
    ReconciliationRuns,
    WebhookReceipt,
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


class ReconciliationController(V1Controller):
    path = "/v1/reconciliation"
    tags = ["reconciliation"]

    @post(
        "/run",
        status_code=200,
        guards=[requires(KeyScope.ADMIN)],
        responses=error_responses(400, 401, 403, 422, 503),
    )
    async def run_reconciliation(
        self, svc: ServicesDep, principal: PrincipalDep, data: JSONBody[ReconcileIn | None] = None
    ) -> ReconciliationRuns:
        """Reconcile this tenant's periods now (one month, or every recent one); repair on
        request. The body may be left out."""
        body = data or ReconcileIn()
        month = month_of("period", body.period) if body.period is not None else None
        actor = actor_of(principal, body.actor)
        reconciler = svc.reconciliation().reconciler
        reports = await anyio.to_thread.run_sync(
            lambda: reconciler.run(
                Scope(principal.tenant_id, month), repair=body.repair, actor=actor, trigger="api"
            )
        )
        return ReconciliationRuns([report_out(r) for r in reports])

    @get(
        "/{period:str}",
        guards=[requires(KeyScope.READ)],
        before_request=given_once,
        sync_to_thread=True,
        operation_class=AlsoCsv,
        responses=error_responses(400, 401, 403, 404, 422),
    )
    def get_reconciliation(
        self,
        svc: ServicesDep,
        principal: PrincipalDep,
        period: FromPath[str],
        fmt: Annotated[str, QueryParameter(name="format")] = "json",
    ) -> Response[ReconciliationOut]:
        """The latest report for a month (periods starting in it), as JSON or CSV
        (``format=csv``)."""
        month = month_of("period", period)
        if fmt not in ("json", "csv"):
            raise FieldError("format", "must be json or csv")
        report = svc.stores.views.reports.latest(principal.tenant_id, month)
        if report is None:
            raise NotFoundError(f"no reconciliation has run for {month} yet")
        out = report_out(report)
        if fmt == "json":
            return Response(out)
        buffer = io.StringIO()
        write_csv([out], buffer)
        return Response(
            buffer.getvalue(),  # type: ignore[arg-type]
            media_type="text/csv",
            headers={"content-disposition": f'attachment; filename="reconciliation-{month}.csv"'},
        )


# -- adjustments ----------------------------------------------------------------------


class AdjustmentsController(V1Controller):
    path = "/v1/adjustments"
    tags = ["reconciliation"]

    @post(
        guards=[requires(KeyScope.ADMIN)],
        responses=created_or_same(
            AdjustmentOut, "Proposed before with this Idempotency-Key", 400, 401, 403, 404, 409, 422
        ),
    )
    async def propose_adjustment(
        self,
        svc: ServicesDep,
        principal: PrincipalDep,
        data: JSONBody[AdjustmentIn],
        idempotency_key: Annotated[str | None, HeaderParameter(name="Idempotency-Key")] = None,
    ) -> Response[AdjustmentOut]:
        """Propose an adjustment; it counts only once approved. ``Idempotency-Key`` proposes
        once."""
        customer_ref = fields.customer_ref(data.customer_ref)
        metric = fields.metric(data.metric)
        quantity = quantity_of(data.quantity)
        key = None if idempotency_key is None else fields.idempotency_header(idempotency_key)
        service = AdjustmentService(svc.stores.app)
        adjustment, created = await anyio.to_thread.run_sync(
            lambda: service.propose(
                principal.tenant_id,
                customer_ref,
                metric,
                quantity,
                actor=actor_of(principal, data.actor),
                reason=data.reason,
                key=key,
            )
        )
        return Response(adjustment_out(adjustment), status_code=201 if created else 200)

    @get(
        guards=[requires(KeyScope.READ)],
        before_request=given_once,
        sync_to_thread=True,
        responses=error_responses(400, 401, 403, 422),
    )
    def list_adjustments(
        self,
        svc: ServicesDep,
        principal: PrincipalDep,
        status: FromQuery[str | None] = None,
        cursor: FromQuery[str | None] = None,
        limit: FromQuery[int] = 100,
    ) -> AdjustmentPage:
        if status is not None and status not in ("pending", "applied", "rejected", "reverted"):
            raise FieldError("status", "must be pending, applied, rejected or reverted")
        if not 1 <= limit <= 1000:
            raise FieldError("limit", "must be between 1 and 1000")
        after = decode_cursor(cursor) if cursor is not None else None
        rows = svc.stores.views.adjustments.page(principal.tenant_id, status, after, limit)
        next_cursor = encode_cursor(rows[-1].position) if len(rows) == limit else None
        return AdjustmentPage([adjustment_out(r) for r in rows], next_cursor)

    @post(
        "/{adjustment_id:str}/{decision:str}",
        status_code=200,
        guards=[requires(KeyScope.ADMIN)],
        responses=error_responses(400, 401, 403, 404, 409, 422),
    )
    async def decide_adjustment(
        self,
        svc: ServicesDep,
        principal: PrincipalDep,
        adjustment_id: FromPath[str],
        decision: FromPath[str],
        data: JSONBody[DecisionIn],
    ) -> AdjustmentOut:
        """``approve``: count a pending adjustment in the customer's open period; ``reject``
        it; ``revert``: undo an applied one (its opposite counts in the open period), or
        reject a pending one."""
        try:
            target = UUID(adjustment_id)
        except ValueError:
            raise FieldError("id", "must be an adjustment id (a UUID)") from None
        service = AdjustmentService(svc.stores.app)
        actor = actor_of(principal, data.actor)
        adjustment = await anyio.to_thread.run_sync(
            lambda: service.decide(decision, principal.tenant_id, target, actor, data.reason)
        )
        outcome = {"applied": "approved"}.get(adjustment.status.value, adjustment.status.value)
        svc.metrics.corrections.labels(outcome).inc()
        return adjustment_out(adjustment)


# -- Stripe's webhooks ------------------------------------------------------------------


TIMESTAMP_FIELDS = (
    "created",
    "period_start",
    "period_end",
    "automatically_finalizes_at",
    "billing_cycle_anchor",
)
# The object an event carries in data.object, checked even where nothing is done with
# it (every invoice.* event): a malformed one is a sign of a wrong endpoint or secret.
WEBHOOK_OBJECTS: dict[str, type[Invoice] | type[Subscription] | type[PriceRef]] = {
    "invoice.": Invoice,
    "customer.subscription.": Subscription,
    "price.": PriceRef,
}


class WebhookData(msgspec.Struct, frozen=True):
    object: dict[str, Any]


class WebhookEvent(msgspec.Struct, frozen=True):
    """The envelope of a Stripe event: what the route reads before the handler."""

    type: Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
    id: str | None = None
    data: WebhookData | None = None


@dataclass
class WebhookOperation(Operation):
    """The webhook's body and signature header, though the handler reads them by hand."""

    def __post_init__(self) -> None:
        self.parameters = [
            header("Stripe-Signature", "Stripe's signature of the body", required=True)
        ]
        self.request_body = read_by_hand(
            WebhookEvent, "A Stripe event; an invoice event carries its invoice in data.object."
        )


def read_webhook(
    payload: str,
) -> tuple[str, str | None, Invoice | Subscription | PriceRef | None]:
    """The event's type, id and, for an event read here, its object (an invoice, a subscription).

    The fields are checked here, at the boundary, so that a signed but
    malformed delivery changes nothing and is answered 422 naming the field (a
    500 would only make Stripe send it again). Other events are acknowledged
    unread.
    """
    try:
        event = decode_json(payload.encode(), WebhookEvent)
    except msgspec.ValidationError as error:
        raise validation_field(error) from None
    kind = next((k for prefix, k in WEBHOOK_OBJECTS.items() if event.type.startswith(prefix)), None)
    if kind is None:
        return event.type, event.id, None
    if event.data is None:
        noun = kind.__name__.lower()
        article = "an" if noun[0] in "aeiou" else "a"
        raise FieldError("data.object", f"is required: {article} {noun} event carries the {noun}")
    try:
        found = msgspec.convert(event.data.object, type=kind)
    except msgspec.ValidationError as error:
        bad = validation_field(error)
        if bad.field == "body":
            raise FieldError("data.object", bad.reason) from None
        reason = bad.reason
        if bad.field in TIMESTAMP_FIELDS and reason != "is required":
            reason = f"must be a Unix timestamp in whole seconds, 1970 to 2099 ({reason})"
        raise FieldError(f"data.object.{bad.field}", reason) from None
    return event.type, event.id, found


class WebhooksController(Controller):
    """Stripe's deliveries: authenticated by their signature, not an API key."""

    path = "/v1/stripe/webhooks"
    tags = ["reconciliation"]

    @post(
        status_code=200,
        operation_class=WebhookOperation,
        responses=error_responses(400, 422, 503),
    )
    async def stripe_webhook(
        self, request: Request[Any, Any, Any], svc: ServicesDep
    ) -> WebhookReceipt:
        """``invoice.created`` tells when a period's invoice finalises; ``invoice.finalized``
        ends it; ``customer.subscription.updated`` moves a customer's billing cycle with
        its Stripe subscription's anchor. ``customer.subscription.*`` and ``price.*``
        drop the cached prices they change (docs/projection.md).

        Only signed deliveries are read (``STRIPE_WEBHOOK_SECRET``); others are 422,
        and so is a signed one whose fields are not what Stripe sends. The body is
        read as bytes: the signature covers them exactly.
        """
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
        kind, event_id, found = read_webhook(payload)
        closer = svc.reconciliation().closer
        handled = 0
        if isinstance(found, Subscription):
            # Its items or prices may have changed: the owner's cached prices go.
            book = svc.price_book()
            for tenant_id, _ in await anyio.to_thread.run_sync(closer.owners, found.customer):
                book.forget_customer(tenant_id, found.customer)
            if kind == "customer.subscription.updated":
                follower = CycleFollower(svc.stores.app, closer.owners)
                handled = await anyio.to_thread.run_sync(
                    follower.subscription_updated, found, event_id
                )
        elif isinstance(found, PriceRef):
            handled = svc.price_book().forget_price(found.id)
        elif isinstance(found, Invoice):
            handlers = {
                "invoice.created": closer.invoice_created,
                "invoice.finalized": closer.invoice_finalized,
            }
            if kind in handlers:
                handled = await anyio.to_thread.run_sync(handlers[kind], found)
        return WebhookReceipt(kind, handled)
