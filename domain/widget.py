"""Widget tokens and widget origins: what the ``<stripemeter-usage>`` widget reads with.

A widget token lets a browser read one customer's usage of one tenant, and
nothing else, until it expires. The tenant's backend mints it with a key of
scope ``admin`` or ``widget:mint`` and hands it to its own page.

A token is stored like an API key: a random 256-bit secret shown once, of
which only the SHA-256 digest is kept, in a ``WidgetToken`` aggregate whose id
derives from that digest. So there is no signing secret to keep, rotate or
leak (nothing in code, nothing in settings), and the server's clock alone
decides expiry. A widget token's prefix (``smw_``) is not an API key's
(``smk_``), and its id lives in another namespace: presented as an API key it
is unknown, so no other route accepts it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.errors import InvalidInputError, UnauthenticatedError
from domain.tenancy import NAMESPACE

WIDGET_TOKEN_PREFIX = "smw_"
DEFAULT_LIFETIME_SECONDS = 900
MAX_LIFETIME_SECONDS = 86_400
MAX_ORIGINS = 50
# scheme://host[:port]: what a browser sends in its Origin header.
_HOST = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$|^\[[0-9a-f:.]+\]$")


class ExpiredWidgetTokenError(UnauthenticatedError):
    """A widget token past its expiry (401). Knows its tenant, so that the answer can
    still carry that tenant's CORS grant and the widget can say what happened."""

    def __init__(self, message: str, tenant_id: UUID) -> None:
        super().__init__(message)
        self.tenant_id = tenant_id


def widget_token_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def widget_token_id_for(secret: str) -> UUID:
    return uuid5(NAMESPACE, f"widget-token:{widget_token_digest(secret)}")


def new_widget_secret() -> str:
    return WIDGET_TOKEN_PREFIX + secrets.token_urlsafe(32)


def is_widget_token(secret: str) -> bool:
    return secret.startswith(WIDGET_TOKEN_PREFIX)


def check_lifetime(seconds: int | None) -> int:
    """The token's lifetime in seconds: 900 when not given, 1 to 86,400 otherwise."""
    if seconds is None:
        return DEFAULT_LIFETIME_SECONDS
    if isinstance(seconds, bool) or not 1 <= seconds <= MAX_LIFETIME_SECONDS:
        raise InvalidInputError(
            "lifetimeSeconds", f"must be a whole number from 1 to {MAX_LIFETIME_SECONDS}"
        )
    return seconds


def parse_origin(value: str, field: str = "origins") -> str:
    """A web origin as browsers send it (``https://app.acme.com``, lower case), else 422."""
    refused = InvalidInputError(
        field, f"{value[:100]!r} is not an origin: scheme://host[:port], no path"
    )
    if len(value) > 300 or value != value.strip():
        raise refused
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise refused from None
    host = (parts.hostname or "").lower()
    if (
        parts.scheme not in ("http", "https")
        or parts.path
        or parts.query
        or parts.fragment
        or "?" in value
        or "#" in value
        or parts.username is not None
        or parts.password is not None
        or not host
        or not _HOST.match(host if ":" not in host else f"[{host}]")
    ):
        raise refused
    netloc = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{netloc}" + (f":{port}" if port is not None else "")


def parse_origins(values: Sequence[str]) -> tuple[str, ...]:
    """The tenant's widget origins, checked, without repeats, in the order given."""
    if len(values) > MAX_ORIGINS:
        raise InvalidInputError("origins", f"at most {MAX_ORIGINS} origins")
    found: list[str] = []
    for value in values:
        origin = parse_origin(value)
        if origin not in found:
            found.append(origin)
    return tuple(found)


@dataclass(frozen=True)
class WidgetGrant:
    """What a valid widget token allows: reading this one customer's usage."""

    tenant_id: UUID
    customer_ref: str
    expires_at: datetime


@dataclass(frozen=True)
class MintedWidgetToken:
    secret: str
    customer_ref: str
    expires_at: datetime


class WidgetToken(Aggregate):
    """One widget token: the digest of its secret, its tenant, its customer, its expiry."""

    class Minted(Aggregate.Created):
        tenant_id: UUID
        customer_ref: str
        digest: str
        expires_at: datetime

    def __init__(
        self, tenant_id: UUID, customer_ref: str, digest: str, expires_at: datetime
    ) -> None:
        self.tenant_id = tenant_id
        self.customer_ref = customer_ref
        self.digest = digest
        self.expires_at = expires_at

    @classmethod
    def mint(
        cls, tenant_id: UUID, customer_ref: str, secret: str, now: datetime, lifetime: int
    ) -> WidgetToken:
        return cls._create(
            cls.Minted,
            id=widget_token_id_for(secret),
            tenant_id=tenant_id,
            customer_ref=customer_ref,
            digest=widget_token_digest(secret),
            expires_at=now + timedelta(seconds=lifetime),
        )

    def grant(self, now: datetime) -> WidgetGrant:
        """What the token allows at ``now``; past its expiry, ExpiredWidgetTokenError."""
        if now >= self.expires_at:
            stamp = self.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")
            raise ExpiredWidgetTokenError(
                f"this widget token expired at {stamp}: ask the page for a new one",
                self.tenant_id,
            )
        return WidgetGrant(self.tenant_id, self.customer_ref, self.expires_at)


def widget_origin_id(origin: str) -> UUID:
    return uuid5(NAMESPACE, f"widget-origin:{origin}")


class WidgetOrigin(Aggregate):
    """Which tenants allow one web origin: what a CORS preflight, which carries no token
    and so no tenant, can ask ("does any tenant allow this page?")."""

    class Created(Aggregate.Created):
        origin: str

    class TenantAllowed(Aggregate.Event):
        tenant_id: UUID

        def apply(self, aggregate: WidgetOrigin) -> None:
            aggregate.tenant_ids.add(self.tenant_id)

    class TenantWithdrew(Aggregate.Event):
        tenant_id: UUID

        def apply(self, aggregate: WidgetOrigin) -> None:
            aggregate.tenant_ids.discard(self.tenant_id)

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.tenant_ids: set[UUID] = set()

    @classmethod
    def create(cls, origin: str) -> WidgetOrigin:
        return cls._create(cls.Created, id=widget_origin_id(origin), origin=origin)

    def allow(self, tenant_id: UUID) -> None:
        if tenant_id not in self.tenant_ids:
            self.trigger_event(self.TenantAllowed, tenant_id=tenant_id)

    def withdraw(self, tenant_id: UUID) -> None:
        if tenant_id in self.tenant_ids:
            self.trigger_event(self.TenantWithdrew, tenant_id=tenant_id)
