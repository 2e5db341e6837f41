"""Adjustments (corrections for closed periods) as ``/v1/adjustments`` and the CLI show them."""

from __future__ import annotations

from api.queries.usage import number, when
from api.schemas import AdjustmentOut
from domain.adjustments import Adjustment
from projections.adjustments import AdjustmentRow


def adjustment_out(a: Adjustment | AdjustmentRow) -> AdjustmentOut:
    """The aggregate (just changed) or its view row (listed): only the row tells the decision."""
    if isinstance(a, AdjustmentRow):
        return _out(
            a,
            str(a.adjustment_id),
            a.status,
            decided_by=a.decided_by,
            decision_reason=a.decision_reason,
            decided_at=when(a.decided_at),
        )
    return _out(a, str(a.id), a.status.value)


def _out(
    a: Adjustment | AdjustmentRow,
    adjustment_id: str,
    status: str,
    *,
    decided_by: str | None = None,
    decision_reason: str | None = None,
    decided_at: str | None = None,
) -> AdjustmentOut:
    return AdjustmentOut(
        id=adjustment_id,
        customer_ref=a.customer_ref,
        metric=a.metric,
        quantity=number(a.quantity) or "0",
        events=a.events,
        status=status,
        source_period=a.source_period,
        source_key=a.source_key,
        proposed_by=a.proposed_by,
        reason=a.reason,
        proposed_at=when(a.proposed_at) or "",
        decided_by=decided_by,
        decision_reason=decision_reason,
        decided_at=decided_at,
        applied_to=a.applied_to,
        reverted_in=a.reverted_in,
    )
