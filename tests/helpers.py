"""Small builders shared by tests."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from domain.idempotency import canonical_meta, content_key, fingerprint
from domain.ingest import UsageSubmission


def submission(
    tenant_id: UUID,
    quantity: Decimal | int | str,
    occurred_at: datetime,
    key: str | None = None,
    metric: str = "api_calls",
    customer: str = "cus_1",
    meta: dict[str, Any] | None = None,
) -> UsageSubmission:
    amount = Decimal(quantity)
    meta_json = canonical_meta(meta)
    print_ = fingerprint(metric, customer, amount, occurred_at, meta_json)
    return UsageSubmission(
        tenant_id=tenant_id,
        metric=metric,
        customer_ref=customer,
        quantity=amount,
        occurred_at=occurred_at,
        idempotency_key=key if key is not None else content_key(print_),
        fingerprint=print_,
        meta=meta_json,
        derived_key=key is None,
    )
