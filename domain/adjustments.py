"""Adjustments: explicit, approved changes to usage that a finalised invoice cannot take.

An adjustment is proposed (by the late-event policy, or by an operator with
a reason), then approved — which counts it in the customer's open period as
a ``CorrectionApplied`` there — or rejected. An approved one can be reverted,
which counts its opposite in the then open period. Every step names its
actor and reason; nothing changes a closed period.

Statuses::

    pending ──approve──▶ applied ──revert──▶ reverted
       └──────reject───▶ rejected
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.errors import ConflictError
from domain.tenancy import NAMESPACE


class LatePolicy(StrEnum):
    """What happens to usage that arrives for a closed period."""

    CARRY_FORWARD = "carry_forward"  # counted at once in the customer's open period
    HOLD = "hold"  # kept as a pending adjustment until an operator approves it


class AdjustmentStatus(StrEnum):
    PENDING = "pending"
    APPLIED = "applied"
    REJECTED = "rejected"
    REVERTED = "reverted"


def adjustment_id_for(tenant_id: UUID, key: str) -> UUID:
    """One adjustment per late event (its idempotency key) or per client-chosen key."""
    return uuid5(NAMESPACE, f"adjustment:{tenant_id}:{key}")


def late_adjustment_id(tenant_id: UUID, key: str, derived: bool) -> UUID:
    """The adjustment that corrects one late usage event, named by the event's key.

    Keys a client chose and keys derived from a request header or the content
    are separate namespaces (``domain.idempotency``), so the same text in both
    is two events with two adjustments. A derived key's adjustment is named
    apart; a client key's keeps the name it always had.
    """
    return adjustment_id_for(tenant_id, ("late-derived:" if derived else "late:") + key)


class Adjustment(Aggregate):
    class Proposed(Aggregate.Created):
        tenant_id: UUID
        customer_ref: str
        metric: str
        quantity: Decimal
        events: int
        source_period: str | None
        source_key: str | None  # the late usage event's idempotency key, when it is one
        actor: str
        reason: str
        proposed_at: datetime

    class Approved(Aggregate.Event):
        actor: str
        reason: str
        applied_to: str  # the period key it was counted in

        def apply(self, aggregate: Adjustment) -> None:
            aggregate.status = AdjustmentStatus.APPLIED
            aggregate.applied_to = self.applied_to

    class Rejected(Aggregate.Event):
        actor: str
        reason: str

        def apply(self, aggregate: Adjustment) -> None:
            aggregate.status = AdjustmentStatus.REJECTED

    class Reverted(Aggregate.Event):
        actor: str
        reason: str
        reverted_in: str  # the period key its opposite was counted in

        def apply(self, aggregate: Adjustment) -> None:
            aggregate.status = AdjustmentStatus.REVERTED
            aggregate.reverted_in = self.reverted_in

    def __init__(
        self,
        tenant_id: UUID,
        customer_ref: str,
        metric: str,
        quantity: Decimal,
        events: int,
        source_period: str | None,
        source_key: str | None,
        actor: str,
        reason: str,
        proposed_at: datetime,
    ) -> None:
        self.tenant_id = tenant_id
        self.customer_ref = customer_ref
        self.metric = metric
        self.quantity = quantity
        self.events = events
        self.source_period = source_period
        self.source_key = source_key
        self.proposed_by = actor
        self.reason = reason
        self.proposed_at = proposed_at
        self.status = AdjustmentStatus.PENDING
        self.applied_to: str | None = None
        self.reverted_in: str | None = None

    @classmethod
    def propose(
        cls,
        adjustment_id: UUID,
        tenant_id: UUID,
        customer_ref: str,
        metric: str,
        quantity: Decimal,
        events: int,
        *,
        source_period: str | None,
        source_key: str | None,
        actor: str,
        reason: str,
        now: datetime,
    ) -> Adjustment:
        return cls._create(
            cls.Proposed,
            id=adjustment_id,
            tenant_id=tenant_id,
            customer_ref=customer_ref,
            metric=metric,
            quantity=quantity,
            events=events,
            source_period=source_period,
            source_key=source_key,
            actor=actor,
            reason=reason,
            proposed_at=now,
        )

    def approve(self, actor: str, reason: str, applied_to: str) -> None:
        if self.status is not AdjustmentStatus.PENDING:
            raise ConflictError(f"adjustment {self.id} is {self.status.value}, not pending")
        self.trigger_event(self.Approved, actor=actor, reason=reason, applied_to=applied_to)

    def reject(self, actor: str, reason: str) -> None:
        if self.status is not AdjustmentStatus.PENDING:
            raise ConflictError(f"adjustment {self.id} is {self.status.value}, not pending")
        self.trigger_event(self.Rejected, actor=actor, reason=reason)

    def revert(self, actor: str, reason: str, reverted_in: str) -> None:
        if self.status is not AdjustmentStatus.APPLIED:
            raise ConflictError(f"adjustment {self.id} is {self.status.value}, not applied")
        self.trigger_event(self.Reverted, actor=actor, reason=reason, reverted_in=reverted_in)
