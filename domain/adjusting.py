"""Operator adjustments: propose, approve, reject, revert — each an event with actor and reason.

Approving counts the adjustment in the customer's *open* period (the one
containing now), in the same transaction as the approval; reverting counts
its opposite there. A closed period, whose invoice is final, never changes.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from domain import fields
from domain.adjustments import Adjustment, AdjustmentStatus, adjustment_id_for
from domain.application import MeteringApp
from domain.errors import ConflictError, InvalidInputError, NotFoundError
from domain.meters import Aggregation
from domain.recording import PeriodLoader

MAX_REASON = 500


def _check_text(field: str, value: str) -> str:
    return fields.free_text(field, value, MAX_REASON)


class AdjustmentService:
    def __init__(self, app: MeteringApp) -> None:
        self.app = app

    def propose(
        self,
        tenant_id: UUID,
        customer_ref: str,
        metric: str,
        quantity: Decimal,
        *,
        actor: str,
        reason: str,
        key: str | None = None,
    ) -> tuple[Adjustment, bool]:
        """Propose an adjustment (pending until approved); True when new.

        For a ``sum`` metric ``quantity`` is added to the total; for a
        ``count`` metric it is a whole number of events. ``max`` and ``last``
        metrics cannot be adjusted by adding. The same ``key`` proposes once.
        """
        reason = _check_text("reason", reason)
        fields.customer_ref(customer_ref)
        definition = self.app.metric(tenant_id, fields.metric(metric))
        if definition.aggregation in (Aggregation.MAX, Aggregation.LAST):
            raise InvalidInputError(
                "metric", f"a {definition.aggregation.value} metric cannot be adjusted by adding"
            )
        if not quantity.is_finite() or quantity == 0:
            raise InvalidInputError("quantity", "must be a non-zero number")
        events = 0
        if definition.aggregation is Aggregation.COUNT:
            if quantity != quantity.to_integral_value():
                raise InvalidInputError("quantity", "a count metric is adjusted by whole events")
            events, quantity = int(quantity), Decimal(0)
        adjustment_id = adjustment_id_for(tenant_id, "manual:" + (key or uuid.uuid4().hex))
        try:
            existing: Adjustment = self.app.repository.get(adjustment_id)
        except AggregateNotFoundError:
            pass
        else:
            same = (existing.customer_ref, existing.metric, existing.quantity, existing.events) == (
                customer_ref,
                metric,
                quantity,
                events,
            )
            if not same:
                raise ConflictError("this key was already used for another adjustment")
            return existing, False
        adjustment = Adjustment.propose(
            adjustment_id,
            tenant_id,
            customer_ref,
            metric,
            quantity,
            events,
            source_period=None,
            source_key=None,
            actor=actor,
            reason=reason,
            now=self.app.clock(),
        )
        try:
            self.app.save(adjustment)
        except IntegrityError:
            raise ConflictError("this adjustment was proposed concurrently; read it") from None
        return adjustment, True

    def get(self, tenant_id: UUID, adjustment_id: UUID) -> Adjustment:
        try:
            adjustment: Adjustment = self.app.repository.get(adjustment_id)
        except AggregateNotFoundError:
            raise NotFoundError(f"adjustment {adjustment_id} does not exist") from None
        if adjustment.tenant_id != tenant_id:
            raise NotFoundError(f"adjustment {adjustment_id} does not exist")
        return adjustment

    def decide(
        self, decision: str, tenant_id: UUID, adjustment_id: UUID, actor: str, reason: str
    ) -> Adjustment:
        """``approve``, ``reject`` or ``revert`` an adjustment of this tenant."""
        decisions = {"approve": self.approve, "reject": self.reject, "revert": self.revert}
        if decision not in decisions:
            raise NotFoundError(f"{decision!r} is not a decision: approve, reject or revert")
        return decisions[decision](tenant_id, adjustment_id, actor, reason)

    def approve(self, tenant_id: UUID, adjustment_id: UUID, actor: str, reason: str) -> Adjustment:
        """Count a pending adjustment in the customer's open period."""
        reason = _check_text("reason", reason)
        self.get(tenant_id, adjustment_id)

        def change(loader: PeriodLoader) -> Sequence[Any]:
            adjustment = self.get(tenant_id, adjustment_id)
            target = self._open_period(loader, adjustment)
            adjustment.approve(actor, reason, target.period)
            target.apply_correction(
                adjustment.id,
                adjustment.quantity,
                adjustment.events,
                f"adjustment approved by {actor}: {reason}",
                adjustment.source_period,
            )
            return [adjustment, target]

        return self._adjustment(self.app.usage.change_periods(change))

    def reject(self, tenant_id: UUID, adjustment_id: UUID, actor: str, reason: str) -> Adjustment:
        reason = _check_text("reason", reason)
        adjustment = self.get(tenant_id, adjustment_id)
        adjustment.reject(actor, reason)
        try:
            self.app.save(adjustment)
        except IntegrityError:
            raise ConflictError("the adjustment changed meanwhile; read it again") from None
        return adjustment

    def revert(self, tenant_id: UUID, adjustment_id: UUID, actor: str, reason: str) -> Adjustment:
        """Revert an applied adjustment: its opposite is counted in the open period.

        A pending adjustment is rejected instead (nothing was counted yet).
        """
        reason = _check_text("reason", reason)
        if self.get(tenant_id, adjustment_id).status is AdjustmentStatus.PENDING:
            return self.reject(tenant_id, adjustment_id, actor, reason)

        def change(loader: PeriodLoader) -> Sequence[Any]:
            adjustment = self.get(tenant_id, adjustment_id)
            target = self._open_period(loader, adjustment)
            adjustment.revert(actor, reason, target.period)
            target.apply_correction(
                adjustment.id,
                -adjustment.quantity,
                -adjustment.events,
                f"adjustment reverted by {actor}: {reason}",
                adjustment.applied_to,
            )
            return [adjustment, target]

        return self._adjustment(self.app.usage.change_periods(change))

    def _open_period(self, loader: PeriodLoader, adjustment: Adjustment) -> Any:
        target = loader.at(
            adjustment.tenant_id, adjustment.customer_ref, adjustment.metric, self.app.clock()
        )
        if target.closed:
            raise ConflictError(
                f"the customer's current period {target.period} is already closed; try again"
                " once the next period has begun"
            )
        return target

    @staticmethod
    def _adjustment(saved: Sequence[Any]) -> Adjustment:
        adjustment = saved[0]
        assert isinstance(adjustment, Adjustment)
        return adjustment
