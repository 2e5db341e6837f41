"""Adjustments per tenant, for ``GET /v1/adjustments`` (the aggregates hold the truth)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from domain.adjustments import Adjustment
from projections.base import Positioned, Projection
from projections.store import Tx

STATUS_OF = {
    Adjustment.Approved: "applied",
    Adjustment.Rejected: "rejected",
    Adjustment.Reverted: "reverted",
}


@dataclass(frozen=True)
class AdjustmentRow:
    adjustment_id: UUID
    customer_ref: str
    metric: str
    quantity: Decimal
    events: int
    status: str
    source_period: str | None
    source_key: str | None
    proposed_by: str
    reason: str
    proposed_at: datetime
    decided_by: str | None
    decision_reason: str | None
    decided_at: datetime | None
    applied_to: str | None
    reverted_in: str | None
    position: int


COLUMNS = (
    "adjustment_id, customer_ref, metric, quantity, events, status, source_period, source_key,"
    " proposed_by, reason, proposed_at, decided_by, decision_reason, decided_at, applied_to,"
    " reverted_in, position"
)


class AdjustmentsProjection(Projection):
    name = "adjustments"
    tables = ("sm_adjustments",)
    handles = (
        Adjustment.Proposed,
        Adjustment.Approved,
        Adjustment.Rejected,
        Adjustment.Reverted,
    )

    def schema(self) -> list[str]:
        return [
            "CREATE TABLE IF NOT EXISTS sm_adjustments ("
            " adjustment_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, customer_ref TEXT NOT NULL,"
            " metric TEXT NOT NULL, quantity {decimal} NOT NULL, events {bigint} NOT NULL,"
            " status TEXT NOT NULL, source_period TEXT, source_key TEXT,"
            " proposed_by TEXT NOT NULL, reason TEXT NOT NULL, proposed_at {timestamp} NOT NULL,"
            " decided_by TEXT, decision_reason TEXT, decided_at {timestamp}, applied_to TEXT,"
            " reverted_in TEXT, position {bigint} NOT NULL)",
            "CREATE INDEX IF NOT EXISTS sm_adjustments_tenant"
            " ON sm_adjustments (tenant_id, position)",
        ]

    def process(self, tx: Tx, events: Sequence[Positioned]) -> None:
        s = self.store
        for position, event in events:
            adjustment = str(event.originator_id)
            if isinstance(event, Adjustment.Proposed):
                tx.execute(
                    "INSERT INTO sm_adjustments (tenant_id, " + COLUMNS + ") VALUES"
                    " (?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?,"
                    " NULL, NULL, NULL, NULL, NULL, ?)",
                    (
                        str(event.tenant_id),
                        adjustment,
                        event.customer_ref,
                        event.metric,
                        s.encode_decimal(event.quantity),
                        event.events,
                        event.source_period,
                        event.source_key,
                        event.actor,
                        event.reason,
                        s.encode_time(event.proposed_at),
                        position,
                    ),
                )
                continue
            tx.execute(
                "UPDATE sm_adjustments SET status = ?, decided_by = ?, decision_reason = ?,"
                " decided_at = ?, applied_to = COALESCE(?, applied_to), reverted_in = ?"
                " WHERE adjustment_id = ?",
                (
                    STATUS_OF[type(event)],
                    event.actor,
                    event.reason,
                    s.encode_time(event.timestamp),
                    getattr(event, "applied_to", None),
                    getattr(event, "reverted_in", None),
                    adjustment,
                ),
            )

    def pending_count(self) -> int:
        """Adjustments of every tenant waiting for a decision."""
        with self.store.transaction() as tx:
            rows = tx.execute("SELECT COUNT(*) FROM sm_adjustments WHERE status = 'pending'")
        return int(rows[0][0])

    def page(
        self, tenant_id: UUID, status: str | None, after: int | None, limit: int
    ) -> list[AdjustmentRow]:
        """A tenant's adjustments in the order they were proposed, after a cursor."""
        sql = f"SELECT {COLUMNS} FROM sm_adjustments WHERE tenant_id = ?"
        params: list[Any] = [str(tenant_id)]
        if status is not None:
            sql += " AND status = ?"
            params.append(status)
        if after is not None:
            sql += " AND position > ?"
            params.append(after)
        with self.store.transaction() as tx:
            rows = tx.execute(sql + " ORDER BY position LIMIT ?", [*params, limit])
        return [self._row(r) for r in rows]

    def _row(self, r: Sequence[Any]) -> AdjustmentRow:
        s = self.store
        quantity, proposed_at = s.decode_decimal(r[3]), s.decode_time(r[10])
        assert quantity is not None and proposed_at is not None
        return AdjustmentRow(
            adjustment_id=UUID(r[0]),
            customer_ref=r[1],
            metric=r[2],
            quantity=quantity,
            events=int(r[4]),
            status=r[5],
            source_period=r[6],
            source_key=r[7],
            proposed_by=r[8],
            reason=r[9],
            proposed_at=proposed_at,
            decided_by=r[11],
            decision_reason=r[12],
            decided_at=s.decode_time(r[13]),
            applied_to=r[14],
            reverted_in=r[15],
            position=int(r[16]),
        )
