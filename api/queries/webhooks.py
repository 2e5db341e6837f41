"""Webhook endpoints and their deliveries, as /v1/webhook-endpoints answers them."""

from __future__ import annotations

from uuid import UUID

from api.queries.cursors import encode_cursor
from api.schemas import FieldError
from api.webhook_schemas import (
    AttemptOut,
    DeliveryOut,
    DeliveryPage,
    WebhookEndpointCreated,
    WebhookEndpointOut,
)
from domain.webhook_endpoints import Endpoint
from projections.webhook_deliveries import AttemptRow, DeliveryRow, WebhookDeliveriesProjection


def endpoint_id_of(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise FieldError("id", "must be a webhook endpoint id (a UUID)") from None


def endpoint_out(endpoint: Endpoint) -> WebhookEndpointOut:
    return WebhookEndpointOut(
        id=str(endpoint.id),
        url=endpoint.url,
        enabled_events=list(endpoint.event_types),
        enabled=endpoint.enabled,
        description=endpoint.description,
        created=endpoint.created_at,
    )


def endpoint_created(endpoint: Endpoint) -> WebhookEndpointCreated:
    out = endpoint_out(endpoint)
    return WebhookEndpointCreated(
        id=out.id,
        url=out.url,
        enabled_events=out.enabled_events,
        enabled=out.enabled,
        description=out.description,
        created=out.created,
        secret=endpoint.secret,
    )


def _attempt(row: AttemptRow) -> AttemptOut:
    return AttemptOut(
        number=row.number,
        started_at=row.started_at,
        finished_at=row.finished_at,
        status_code=row.status_code,
        error=row.error,
        duration_ms=row.duration_ms,
        outcome=row.outcome,
        response_body=row.response_body,
    )


def _delivery(row: DeliveryRow, attempts: list[AttemptRow]) -> DeliveryOut:
    return DeliveryOut(
        id=str(row.delivery_id),
        event_id=row.event_id,
        type=row.event_type,
        status=row.status,
        created=row.created_at,
        next_attempt_at=row.next_attempt_at,
        reason=row.reason,
        attempts=[_attempt(a) for a in attempts],
    )


def delivery_page(
    view: WebhookDeliveriesProjection,
    tenant_id: UUID,
    endpoint_id: UUID,
    after: int | None,
    limit: int,
) -> DeliveryPage:
    """Newest first; ``nextCursor`` continues with older ones."""
    rows = view.page(tenant_id, endpoint_id, after, limit)
    cursor = encode_cursor(rows[-1][0].position) if len(rows) == limit else None
    return DeliveryPage([_delivery(row, attempts) for row, attempts in rows], cursor)
