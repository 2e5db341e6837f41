"""Idempotency keys: how a usage event is recognised when it comes again.

A key counts once per tenant, forever. The claim on a key is itself an
aggregate whose id is derived from tenant and key, written in the same
transaction as the usage event it admits: the event store's uniqueness of
(aggregate id, version) is what stops two processes racing on one key from
both counting it.

Keys come from, in this order of preference:

1. the event's own ``idempotencyKey``;
2. the request's ``Idempotency-Key`` header plus the event's position in the
   batch (``<header>#<index>``), so retrying the whole request is safe but the
   events inside one request stay distinct;
3. otherwise a key derived from the event's content: ``content:`` followed by
   the SHA-256 of its canonical form (see ``canonical_payload``). Two events
   with identical metric, customer, quantity, time and meta are then one
   event; a client that means two must send keys.

The keys a client chose and the keys derived for it live in two namespaces:
a claim's id is ``uuid5`` of ``idempotency-key:{tenant}:{key}`` for a key the
client sent in ``idempotencyKey`` (as it always was), and of
``derived-idempotency-key:{tenant}:{key}`` for a key derived from the header
or the content. An explicit ``req#0`` and the header ``req`` at index 0, or an
explicit ``content:<sha>`` and the content key of the same event, are
therefore different keys. Claims stored before the namespaces were separated
are carried over by ``domain.key_namespaces`` (see there).
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate
from eventsourcing.utils import get_topic

from domain.tenancy import NAMESPACE

MAX_KEY_LENGTH = 255


def canonical_quantity(quantity: Decimal) -> str:
    """``1``, ``1.0`` and ``1E0`` are the same quantity and print the same."""
    text = format(quantity.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def canonical_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_meta(meta: dict[str, Any] | None) -> str:
    if not meta:
        return "{}"
    return json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_payload(
    metric: str, customer_ref: str, quantity: Decimal, occurred_at: datetime, meta_json: str
) -> str:
    """The canonical form of an event's content, one field per line."""
    return "\n".join(
        (metric, customer_ref, canonical_quantity(quantity), canonical_time(occurred_at), meta_json)
    )


def fingerprint(
    metric: str, customer_ref: str, quantity: Decimal, occurred_at: datetime, meta_json: str
) -> str:
    payload = canonical_payload(metric, customer_ref, quantity, occurred_at, meta_json)
    return hashlib.sha256(payload.encode()).hexdigest()


def content_key(event_fingerprint: str) -> str:
    return f"content:{event_fingerprint}"


def request_key(header_key: str, index: int) -> str:
    return f"{header_key}#{index}"


def choose_key(
    explicit: str | None, header: str | None, index: int, event_fingerprint: str
) -> tuple[str, bool]:
    """The event's key and whether it was derived (not chosen by the client)."""
    if explicit is not None:
        return explicit, False
    if header is not None:
        return request_key(header, index), True
    return content_key(event_fingerprint), True


def idempotency_key_id(tenant_id: UUID, key: str) -> UUID:
    """The claim id of a key the client chose (unchanged since the first release)."""
    return uuid5(NAMESPACE, f"idempotency-key:{tenant_id}:{key}")


def derived_key_id(tenant_id: UUID, key: str) -> UUID:
    """The claim id of a key derived from the request header or the event's content."""
    return uuid5(NAMESPACE, f"derived-idempotency-key:{tenant_id}:{key}")


def claim_id(tenant_id: UUID, key: str, derived: bool) -> UUID:
    return derived_key_id(tenant_id, key) if derived else idempotency_key_id(tenant_id, key)


DERIVED_SHAPE = re.compile(r"(content:[0-9a-f]{64}|.+#[0-9]+)\Z", re.DOTALL)


def has_derived_shape(key: str) -> bool:
    """Whether a key stored before the split could have been derived (content or header#n)."""
    return DERIVED_SHAPE.match(key) is not None


class IdempotencyKey(Aggregate):
    """The claim on one idempotency key of one tenant."""

    class Claimed(Aggregate.Created):
        tenant_id: UUID
        key: str
        fingerprint: str
        usage_period_id: UUID
        usage_version: int

    def __init__(
        self,
        tenant_id: UUID,
        key: str,
        fingerprint: str,
        usage_period_id: UUID,
        usage_version: int,
    ) -> None:
        self.tenant_id = tenant_id
        self.key = key
        self.fingerprint = fingerprint
        self.usage_period_id = usage_period_id
        self.usage_version = usage_version

    @classmethod
    def claimed(
        cls,
        claim_id: UUID,
        tenant_id: UUID,
        key: str,
        event_fingerprint: str,
        usage_period_id: UUID,
        usage_version: int,
    ) -> IdempotencyKey.Claimed:
        """The claim as its one stored event, without building the aggregate (ingest's hot path)."""
        # The event classes are dataclasses made by a metaclass mypy cannot see through.
        return cls.Claimed(  # type: ignore[call-arg]
            originator_id=claim_id,
            originator_version=cls.INITIAL_VERSION,
            timestamp=cls.Claimed.create_timestamp(),
            originator_topic=CLAIM_TOPIC,
            tenant_id=tenant_id,
            key=key,
            fingerprint=event_fingerprint,
            usage_period_id=usage_period_id,
            usage_version=usage_version,
        )


CLAIM_TOPIC = get_topic(IdempotencyKey)
