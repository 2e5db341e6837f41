"""A tenant's outbound webhook endpoints: where StripeMeter tells it what happened.

One aggregate per tenant holds all its endpoints (at most ``MAX_ENDPOINTS``
live ones, like Stripe's 16): creating, listing and deleting read one small
aggregate, so a listing always shows what was just created, and two creations
at once are ordered by its version. An endpoint's id is derived from the
tenant and its number (the n-th endpoint the tenant ever made), so ids are
never reused.

The signing secret (``whsec_…``) is made here, shown once by the API in the
create response and never again. Unlike an API key it cannot be stored as a
digest: the sender needs it to sign each delivery (HMAC), as Stripe does with
its own endpoint secrets. It lives in the event log only, and nothing logs it
(the ``Endpoint`` repr leaves it out).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit
from uuid import UUID, uuid5

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from domain.errors import ConflictError, InvalidInputError, NotFoundError
from domain.tenancy import NAMESPACE

# Every type a delivery can carry (docs/webhooks.md); "*" subscribes to all of them.
EVENT_TYPES = (
    "alert.triggered",
    "alert.resolved",
    "cap.reached",
    "period.closed",
    "parity.recorded",
    "drift.detected",
)
ALL_TYPES = "*"
MAX_ENDPOINTS = 16
MAX_URL_LENGTH = 2048
MAX_DESCRIPTION_LENGTH = 500
SECRET_PREFIX = "whsec_"


def webhook_endpoints_id(tenant_id: UUID) -> UUID:
    return uuid5(NAMESPACE, f"webhook-endpoints:{tenant_id}")


def endpoint_id_for(tenant_id: UUID, number: int) -> UUID:
    return uuid5(NAMESPACE, f"webhook-endpoint:{tenant_id}:{number}")


def new_signing_secret() -> str:
    return SECRET_PREFIX + secrets.token_hex(24)


def check_url(url: str) -> str:
    """An absolute http(s) URL with a host, no credentials and no fragment; else ``url`` 422."""
    if not isinstance(url, str) or not url:
        raise InvalidInputError("url", "is required")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidInputError("url", f"must be at most {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise InvalidInputError("url", "must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise InvalidInputError("url", f"is not a valid URL ({error})") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidInputError("url", "must start with http:// or https://")
    if not parts.hostname:
        raise InvalidInputError("url", "must name a host")
    if parts.username is not None or parts.password is not None:
        raise InvalidInputError("url", "must not carry a user name or password")
    if parts.fragment:
        raise InvalidInputError("url", "must not have a #fragment")
    if port == 0:
        raise InvalidInputError("url", "must not use port 0")
    return url


def check_event_types(values: list[str]) -> list[str]:
    """The subscribed types, sorted and without repeats; ``*`` alone means every type."""
    if not values:
        raise InvalidInputError("enabledEvents", "must name at least one event type (or '*')")
    chosen: set[str] = set()
    for value in values:
        if value != ALL_TYPES and value not in EVENT_TYPES:
            allowed = ", ".join((*EVENT_TYPES, ALL_TYPES))
            raise InvalidInputError("enabledEvents", f"{value!r} is not one of {allowed}")
        chosen.add(value)
    if ALL_TYPES in chosen:
        return [ALL_TYPES]
    return sorted(chosen)


@dataclass(frozen=True)
class Endpoint:
    id: UUID
    url: str
    event_types: tuple[str, ...]
    enabled: bool
    description: str
    created_at: datetime
    secret: str = field(repr=False)

    def wants(self, event_type: str) -> bool:
        return self.enabled and (ALL_TYPES in self.event_types or event_type in self.event_types)


class WebhookEndpoints(Aggregate):
    """The live webhook endpoints of one tenant."""

    class Started(Aggregate.Created):
        tenant_id: UUID

    class EndpointAdded(Aggregate.Event):
        """An endpoint was created (v1). ``secret`` signs its deliveries; never shown again."""

        tenant_id: UUID
        endpoint_id: UUID
        url: str
        event_types: list[str]
        enabled: bool
        description: str
        secret: str

        def apply(self, aggregate: WebhookEndpoints) -> None:
            aggregate.added += 1
            aggregate.endpoints[self.endpoint_id] = Endpoint(
                self.endpoint_id,
                self.url,
                tuple(self.event_types),
                self.enabled,
                self.description,
                self.timestamp,
                self.secret,
            )

    class EndpointDeleted(Aggregate.Event):
        """An endpoint was deleted (v1): it receives nothing more, pending deliveries included."""

        endpoint_id: UUID

        def apply(self, aggregate: WebhookEndpoints) -> None:
            aggregate.endpoints.pop(self.endpoint_id, None)

    def __init__(self, tenant_id: UUID) -> None:
        self.tenant_id = tenant_id
        self.added = 0
        self.endpoints: dict[UUID, Endpoint] = {}

    def __repr__(self) -> str:  # the endpoints hold their secrets: never in a log line
        return f"WebhookEndpoints(tenant_id={self.tenant_id}, endpoints={len(self.endpoints)})"

    @classmethod
    def start(cls, tenant_id: UUID) -> WebhookEndpoints:
        return cls._create(cls.Started, id=webhook_endpoints_id(tenant_id), tenant_id=tenant_id)

    def add(
        self,
        url: str,
        event_types: list[str],
        *,
        enabled: bool = True,
        description: str = "",
        secret: str | None = None,
    ) -> Endpoint:
        """Add an endpoint (checked); its secret is in the result."""
        url = check_url(url)
        types = check_event_types(event_types)
        if len(description) > MAX_DESCRIPTION_LENGTH:
            raise InvalidInputError(
                "description", f"must be at most {MAX_DESCRIPTION_LENGTH} characters"
            )
        if len(self.endpoints) >= MAX_ENDPOINTS:
            raise ConflictError(
                f"a tenant has at most {MAX_ENDPOINTS} webhook endpoints: delete one first"
            )
        endpoint_id = endpoint_id_for(self.tenant_id, self.added + 1)
        self.trigger_event(
            self.EndpointAdded,
            tenant_id=self.tenant_id,
            endpoint_id=endpoint_id,
            url=url,
            event_types=types,
            enabled=enabled,
            description=description,
            secret=secret or new_signing_secret(),
        )
        return self.endpoints[endpoint_id]

    def delete(self, endpoint_id: UUID) -> None:
        self.endpoint(endpoint_id)
        self.trigger_event(self.EndpointDeleted, endpoint_id=endpoint_id)

    def endpoint(self, endpoint_id: UUID) -> Endpoint:
        """The live endpoint; a deleted or another tenant's id is not found."""
        found = self.endpoints.get(endpoint_id)
        if found is None:
            raise NotFoundError(f"webhook endpoint {endpoint_id} does not exist")
        return found

    def listed(self) -> list[Endpoint]:
        return sorted(self.endpoints.values(), key=lambda e: (e.created_at, str(e.id)))


class WebhookEndpointsService:
    """Creating, reading and deleting a tenant's endpoints, on its one aggregate."""

    def __init__(self, app: Application[UUID], attempts: int = 5) -> None:
        self.app = app
        self.attempts = attempts

    def endpoints(self, tenant_id: UUID) -> WebhookEndpoints:
        """The tenant's endpoints as stored (none yet: an empty, unsaved aggregate)."""
        try:
            found: WebhookEndpoints = self.app.repository.get(webhook_endpoints_id(tenant_id))
        except AggregateNotFoundError:
            return WebhookEndpoints.start(tenant_id)
        return found

    def create(
        self,
        tenant_id: UUID,
        url: str,
        event_types: list[str],
        *,
        enabled: bool = True,
        description: str = "",
    ) -> Endpoint:
        """Add an endpoint; the result holds its secret, which no later read returns."""
        for _ in range(self.attempts):
            endpoints = self.endpoints(tenant_id)
            endpoint = endpoints.add(url, event_types, enabled=enabled, description=description)
            try:
                self.app.save(endpoints)
            except IntegrityError:
                continue  # another endpoint was added or deleted meanwhile: number it again
            return endpoint
        raise ConflictError("the webhook endpoints are being changed concurrently; try again")

    def delete(self, tenant_id: UUID, endpoint_id: UUID) -> None:
        """Delete an endpoint of this tenant; another tenant's id is not found."""
        for _ in range(self.attempts):
            endpoints = self.endpoints(tenant_id)
            endpoints.delete(endpoint_id)
            try:
                self.app.save(endpoints)
            except IntegrityError:
                continue
            return
        raise ConflictError("the webhook endpoints are being changed concurrently; try again")
