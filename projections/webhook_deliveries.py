"""Webhook deliveries and their attempts, for the listing and for the sender's due query.

The ``Delivery`` aggregates hold the truth (domain/deliveries.py); this view
only finds them: the sender re-reads each aggregate before it acts, so a view
that lags never sends anything twice or too early.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.dispatch import singledispatchmethod

from domain.deliveries import Delivery
from projections.base import BatchProjection, Positioned, UnhandledEventError, handled_by
from projections.store import Tx


@dataclass(frozen=True)
class AttemptRow:
    number: int
    started_at: datetime
    finished_at: datetime | None
    status_code: int | None
    error: str
    duration_ms: int | None
    outcome: str | None  # None: no answer recorded (the sender stopped during it)
    response_body: str


@dataclass(frozen=True)
class DeliveryRow:
    delivery_id: UUID
    endpoint_id: UUID
    event_id: str
    event_type: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    created_at: datetime
    reason: str | None
    position: int


COLUMNS = (
    "delivery_id, endpoint_id, event_id, event_type, status, attempts, due_at, created_at,"
    " reason, position"
)
ATTEMPT_COLUMNS = (
    "delivery_id, number, started_at, finished_at, status_code, error, duration_ms, outcome,"
    " response_body"
)


class WebhookDeliveriesProjection(BatchProjection):
    name = "webhook_deliveries"
    tables = ("sm_webhook_deliveries", "sm_webhook_attempts")

    def schema(self) -> list[str]:
        return [
            "CREATE TABLE IF NOT EXISTS sm_webhook_deliveries ("
            " delivery_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, endpoint_id TEXT NOT NULL,"
            " event_id TEXT NOT NULL, event_type TEXT NOT NULL, status TEXT NOT NULL,"
            " attempts {bigint} NOT NULL, due_at {timestamp}, created_at {timestamp} NOT NULL,"
            " reason TEXT, position {bigint} NOT NULL)",
            "CREATE INDEX IF NOT EXISTS sm_webhook_deliveries_endpoint"
            " ON sm_webhook_deliveries (endpoint_id, position)",
            "CREATE INDEX IF NOT EXISTS sm_webhook_deliveries_due"
            " ON sm_webhook_deliveries (status, due_at)",
            "CREATE TABLE IF NOT EXISTS sm_webhook_attempts ("
            " delivery_id TEXT NOT NULL, number {bigint} NOT NULL,"
            " started_at {timestamp} NOT NULL, finished_at {timestamp}, status_code {bigint},"
            " error TEXT NOT NULL, duration_ms {bigint}, outcome TEXT,"
            " response_body TEXT NOT NULL, PRIMARY KEY (delivery_id, number))",
        ]

    def process(self, tx: Tx, events: Sequence[Positioned]) -> None:
        apply = self.apply
        for position, event in events:
            apply(event, tx, position)

    @singledispatchmethod
    def apply(self, event: object, tx: Tx, position: int) -> None:
        raise UnhandledEventError(self.name, event)

    @apply.register(Delivery.Created)
    def _created(self, event: Delivery.Created, tx: Tx, position: int) -> None:
        time = self.store.encode_time
        tx.execute(
            "INSERT INTO sm_webhook_deliveries (tenant_id, " + COLUMNS + ") VALUES"
            " (?, ?, ?, ?, ?, 'pending', 0, ?, ?, NULL, ?) ON CONFLICT (delivery_id) DO NOTHING",
            (
                str(event.tenant_id),
                str(event.originator_id),
                str(event.endpoint_id),
                event.event_id,
                event.event_type,
                time(event.due_at),
                time(event.due_at),
                position,
            ),
        )

    @apply.register(Delivery.AttemptStarted)
    def _started(self, event: Delivery.AttemptStarted, tx: Tx, position: int) -> None:
        time = self.store.encode_time
        delivery_id = str(event.originator_id)
        tx.execute(
            "UPDATE sm_webhook_deliveries SET attempts = ?, due_at = ? WHERE delivery_id = ?",
            (event.number, time(event.lease_until), delivery_id),
        )
        tx.execute(
            "INSERT INTO sm_webhook_attempts (delivery_id, number, started_at, error,"
            " response_body) VALUES (?, ?, ?, '', '') ON CONFLICT (delivery_id, number) DO NOTHING",
            (delivery_id, event.number, time(event.started_at)),
        )

    @apply.register(Delivery.AttemptRecorded)
    def _recorded(self, event: Delivery.AttemptRecorded, tx: Tx, position: int) -> None:
        time = self.store.encode_time
        delivery_id = str(event.originator_id)
        status = {"succeeded": "succeeded", "failed": "failed"}.get(event.outcome, "pending")
        tx.execute(
            "UPDATE sm_webhook_deliveries SET status = ?, due_at = ? WHERE delivery_id = ?",
            (status, time(event.next_attempt_at), delivery_id),
        )
        tx.execute(
            "UPDATE sm_webhook_attempts SET finished_at = ?, status_code = ?, error = ?,"
            " duration_ms = ?, outcome = ?, response_body = ? WHERE delivery_id = ? AND number = ?",
            (
                time(event.finished_at),
                event.status_code,
                event.error,
                event.duration_ms,
                event.outcome,
                event.response_body,
                delivery_id,
                event.number,
            ),
        )

    @apply.register(Delivery.Abandoned)
    def _abandoned(self, event: Delivery.Abandoned, tx: Tx, position: int) -> None:
        tx.execute(
            "UPDATE sm_webhook_deliveries SET status = 'failed', due_at = NULL, reason = ?"
            " WHERE delivery_id = ?",
            (event.reason, str(event.originator_id)),
        )

    handles = handled_by(apply)

    # -- reads ----------------------------------------------------------------------

    def due(self, now: datetime, limit: int) -> list[UUID]:
        """Pending deliveries whose next attempt (or expired claim) is at or before ``now``."""
        with self.store.transaction() as tx:
            rows = tx.execute(
                "SELECT delivery_id FROM sm_webhook_deliveries WHERE status = 'pending'"
                " AND due_at <= ? ORDER BY due_at LIMIT ?",
                (self.store.encode_time(now), limit),
            )
        return [UUID(r[0]) for r in rows]

    def page(
        self, tenant_id: UUID, endpoint_id: UUID, after: int | None, limit: int
    ) -> list[tuple[DeliveryRow, list[AttemptRow]]]:
        """An endpoint's deliveries, newest first, before the cursor ``after``, with attempts."""
        sql = f"SELECT {COLUMNS} FROM sm_webhook_deliveries WHERE tenant_id = ? AND endpoint_id = ?"
        params: list[Any] = [str(tenant_id), str(endpoint_id)]
        if after is not None:
            sql += " AND position < ?"
            params.append(after)
        with self.store.transaction() as tx:
            rows = tx.execute(sql + " ORDER BY position DESC LIMIT ?", [*params, limit])
            deliveries = [self._delivery(r) for r in rows]
            attempts: dict[UUID, list[AttemptRow]] = {d.delivery_id: [] for d in deliveries}
            if deliveries:
                marks = ", ".join("?" * len(deliveries))
                found = tx.execute(
                    f"SELECT {ATTEMPT_COLUMNS} FROM sm_webhook_attempts"
                    f" WHERE delivery_id IN ({marks}) ORDER BY delivery_id, number",
                    [str(d.delivery_id) for d in deliveries],
                )
                for r in found:
                    attempts[UUID(r[0])].append(self._attempt(r))
        return [(d, attempts[d.delivery_id]) for d in deliveries]

    def _delivery(self, r: Sequence[Any]) -> DeliveryRow:
        created_at = self.store.decode_time(r[7])
        assert created_at is not None
        status = r[4]
        return DeliveryRow(
            delivery_id=UUID(r[0]),
            endpoint_id=UUID(r[1]),
            event_id=r[2],
            event_type=r[3],
            status=status,
            attempts=int(r[5]),
            next_attempt_at=self.store.decode_time(r[6]) if status == "pending" else None,
            created_at=created_at,
            reason=r[8],
            position=int(r[9]),
        )

    def _attempt(self, r: Sequence[Any]) -> AttemptRow:
        started_at = self.store.decode_time(r[2])
        assert started_at is not None
        return AttemptRow(
            number=int(r[1]),
            started_at=started_at,
            finished_at=self.store.decode_time(r[3]),
            status_code=None if r[4] is None else int(r[4]),
            error=r[5],
            duration_ms=None if r[6] is None else int(r[6]),
            outcome=r[7],
            response_body=r[8],
        )
