"""Request and response shapes of /v1/webhook-endpoints (camelCase on the wire)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from domain.webhook_endpoints import EVENT_TYPES, MAX_ENDPOINTS

EVENT_TYPE_LIST = Annotated[
    list[str],
    msgspec.Meta(
        max_length=len(EVENT_TYPES) + 1,
        description="Event types to receive: " + ", ".join(EVENT_TYPES) + ", or '*' for all",
    ),
]


class WebhookEndpointIn(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    url: str
    enabled_events: EVENT_TYPE_LIST
    enabled: bool = True
    description: str = ""


class WebhookEndpointOut(msgspec.Struct, rename="camel"):
    """An endpoint as listed: never its secret."""

    id: str
    url: str
    enabled_events: list[str]
    enabled: bool
    description: str
    created: datetime


class WebhookEndpointCreated(msgspec.Struct, rename="camel"):
    """The endpoint just created, with its signing secret: shown here and never again."""

    id: str
    url: str
    enabled_events: list[str]
    enabled: bool
    description: str
    created: datetime
    secret: str


class WebhookEndpointPage(msgspec.Struct):
    data: Annotated[list[WebhookEndpointOut], msgspec.Meta(max_length=MAX_ENDPOINTS)]


class AttemptOut(msgspec.Struct, rename="camel"):
    """One attempt: ``outcome`` is null while it runs, or when its sender stopped during it."""

    number: int
    started_at: datetime
    finished_at: datetime | None
    status_code: int | None
    error: str
    duration_ms: int | None
    outcome: str | None
    response_body: str


class DeliveryOut(msgspec.Struct, rename="camel"):
    id: str
    event_id: str
    type: str
    status: str
    created: datetime
    next_attempt_at: datetime | None
    reason: str | None
    attempts: list[AttemptOut]


class DeliveryPage(msgspec.Struct, rename="camel"):
    data: list[DeliveryOut]
    next_cursor: str | None
