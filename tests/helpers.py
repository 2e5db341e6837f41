"""Small builders shared by tests."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from adapters.persistence import Stores, open_stores
from adapters.settings import Settings
from domain.idempotency import canonical_meta, content_key, fingerprint
from domain.ingest import Outcome, UsageSubmission
from domain.meters import Aggregation, MetricDefinition


def submission(
    tenant_id: UUID,
    quantity: Decimal | int | str,
    occurred_at: datetime,
    key: str | None = None,
    metric: str = "api_calls",
    customer: str = "cus_1",
    meta: dict[str, Any] | None = None,
    history: bool = False,
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
        history=history,
    )


def setup_tenant(stores: Stores, slug: str = "acme") -> UUID:
    """A tenant with the ``api_calls`` sum metric."""
    tenant = stores.app.register_tenant(slug, slug.title())
    stores.app.declare_metric(tenant.id, MetricDefinition("api_calls", Aggregation.SUM))
    return tenant.id


def race_writers(
    settings: Settings,
    clock: Callable[[], datetime],
    writers: int,
    rounds: int,
    batch_of: Callable[[UUID, int, int], list[UsageSubmission]],
) -> tuple[UUID, list[Outcome], list[Stores]]:
    """``writers`` app instances (as that many processes would) each record
    ``batch_of(tenant, writer, round)`` for every round, all starting at once.

    Returns the tenant, every outcome, and the instances (the caller closes them).
    """
    setup = open_stores(settings, clock)
    tenant = setup_tenant(setup)
    setup.close()
    instances = [open_stores(settings, clock) for _ in range(writers)]
    start = threading.Barrier(writers)
    outcomes: list[Outcome] = []
    lock = threading.Lock()

    def send(stores: Stores, writer: int) -> None:
        start.wait()
        for round_ in range(rounds):
            results = stores.app.usage.record_usage(batch_of(tenant, writer, round_))
            with lock:
                outcomes.extend(r.outcome for r in results)

    threads = [threading.Thread(target=send, args=(s, n)) for n, s in enumerate(instances)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tenant, outcomes, instances
