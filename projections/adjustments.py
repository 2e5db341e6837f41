"""Adjustments per tenant, for ``GET /v1/adjustments`` (the aggregates hold the truth)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from eventsourcing.dispatch import singledispatchmethod

from domain.adjustments import Adjustment
from projections.base import BatchProjection, Positioned, UnhandledEventError, handled_by
from projections.store import Tx


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


class AdjustmentsProjection(BatchProjection):
    name = "adjustments"
    tables = ("sm_adjustments",)

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
        apply = self.apply  # bound once per batch: binding is the costly part
        for position, event in events:
            apply(event, tx, position)

    @singledispatchmethod
    def apply(self, event: object, tx: Tx, position: int) -> None:
        raise UnhandledEventError(self.name, event)

    @apply.register(Adjustment.Proposed)
    def _proposed(self, event: Adjustment.Proposed, tx: Tx, position: int) -> None:
        s = self.store
        tx.execute(
            "INSERT INTO sm_adjustments (tenant_id, " + COLUMNS + ") VALUES"
            " (?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?,"
            " NULL, NULL, NULL, NULL, NULL, ?)",
            (
                str(event.tenant_id),
                str(event.originator_id),
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

    @apply.register(Adjustment.Approved)
    def _approved(self, event: Adjustment.Approved, tx: Tx, position: int) -> None:
        self._decided(tx, event, "applied", applied_to=event.applied_to)

    @apply.register(Adjustment.Rejected)
    def _rejected(self, event: Adjustment.Rejected, tx: Tx, position: int) -> None:
        self._decided(tx, event, "rejected")

    @apply.register(Adjustment.Reverted)
    def _reverted(self, event: Adjustment.Reverted, tx: Tx, position: int) -> None:
        self._decided(tx, event, "reverted", reverted_in=event.reverted_in)

    handles = handled_by(apply)

    def _decided(
        self,
        tx: Tx,
        event: Adjustment.Approved | Adjustment.Rejected | Adjustment.Reverted,
        status: str,
        applied_to: str | None = None,
        reverted_in: str | None = None,
    ) -> None:
        """The decision on a proposal (or its later revert), with who made it and why.

        A revert keeps the period the adjustment was applied to: both are shown.
        """
        tx.execute(
            "UPDATE sm_adjustments SET status = ?, decided_by = ?, decision_reason = ?,"
            " decided_at = ?, applied_to = COALESCE(?, applied_to), reverted_in = ?"
            " WHERE adjustment_id = ?",
            (
                status,
                event.actor,
                event.reason,
                self.store.encode_time(event.timestamp),
                applied_to,
                reverted_in,
                str(event.originator_id),
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
