"""POST /v1/events/ingest: up to 1,000 usage events, one result each, in order."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, post

from api.auth import authorize_async, services
from api.schemas import (
    MAX_META_BYTES,
    EventIn,
    EventResult,
    FieldError,
    IngestRequest,
    IngestResponse,
    check_quantity,
    check_text,
    parse_time,
    validation_field,
)
from domain.errors import ForbiddenError
from domain.idempotency import (
    MAX_KEY_LENGTH,
    canonical_meta,
    content_key,
    fingerprint,
    request_key,
)
from domain.ingest import IngestResult, Outcome, UsageSubmission
from domain.tenancy import Principal, Scope


@post("/v1/events/ingest", status_code=200)
async def ingest(request: Request[Any, Any, Any]) -> IngestResponse:
    """Record usage events exactly once; each gets accepted, duplicate, conflict or error."""
    principal = await authorize_async(request, Scope.INGEST)
    svc = services(request)
    body = msgspec.json.decode(await request.body(), type=IngestRequest)
    if not body.events:
        raise FieldError("events", "must hold at least one event")
    if len(body.events) > svc.settings.max_batch_events:
        raise FieldError("events", f"must hold at most {svc.settings.max_batch_events} events")
    header_key = request.headers.get("idempotency-key")
    if header_key is not None:
        check_text("Idempotency-Key", header_key, MAX_KEY_LENGTH - 8)

    results: list[IngestResult | None] = []
    submissions: list[UsageSubmission] = []
    for index, raw in enumerate(body.events):
        try:
            event = msgspec.json.decode(raw, type=EventIn)
        except msgspec.ValidationError as error:
            bad = validation_field(error)
            results.append(IngestResult.error("", bad.field, bad.reason))
            continue
        if event.tenant_id is not None and event.tenant_id not in (
            str(principal.tenant_id),
            principal.tenant_slug,
        ):
            raise ForbiddenError(f"events[{index}].tenantId does not match the API key's tenant")
        try:
            submissions.append(_submission(event, index, header_key, principal))
            results.append(None)
        except FieldError as bad:
            results.append(IngestResult.error(event.idempotency_key or "", bad.field, bad.reason))

    refused = len(results) - len(submissions)
    if refused:
        svc.metrics.ingest_events.labels(Outcome.ERROR.value).inc(refused)
    written = iter(await svc.writer.submit(submissions)) if submissions else iter(())
    return _response([r if r is not None else next(written) for r in results])


def _submission(
    event: EventIn, index: int, header_key: str | None, principal: Principal
) -> UsageSubmission:
    metric = check_text("metric", event.metric, 64)
    customer_ref = check_text("customerRef", event.customer_ref, 255)
    quantity = check_quantity(event.quantity)
    occurred_at = parse_time("ts", event.ts)
    meta = canonical_meta(event.meta)
    if len(meta.encode()) > MAX_META_BYTES:
        raise FieldError("meta", f"must encode to at most {MAX_META_BYTES} bytes of JSON")
    event_fingerprint = fingerprint(metric, customer_ref, quantity, occurred_at, meta)
    if event.idempotency_key is not None:
        key = check_text("idempotencyKey", event.idempotency_key, MAX_KEY_LENGTH)
    elif header_key is not None:
        key = request_key(header_key, index)
    else:
        key = content_key(event_fingerprint)
    return UsageSubmission(
        tenant_id=principal.tenant_id,
        metric=metric,
        customer_ref=customer_ref,
        quantity=quantity,
        occurred_at=occurred_at,
        idempotency_key=key,
        fingerprint=event_fingerprint,
        meta=meta,
    )


def _response(results: list[IngestResult]) -> IngestResponse:
    counts = dict.fromkeys(Outcome, 0)
    out = []
    for index, result in enumerate(results):
        counts[result.outcome] += 1
        out.append(
            EventResult(
                index=index,
                status=result.outcome.value,
                idempotency_key=result.idempotency_key or None,
                field=result.field,
                reason=result.reason,
                late=result.late.value if result.late else None,
            )
        )
    return IngestResponse(
        accepted=counts[Outcome.ACCEPTED],
        duplicates=counts[Outcome.DUPLICATE],
        conflicts=counts[Outcome.CONFLICT],
        errors=counts[Outcome.ERROR],
        results=out,
    )
