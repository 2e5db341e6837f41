"""The directory of usage periods: who, what and when each UsagePeriod is.

Usage events carry only their aggregate id; the other views look the
tenant, customer, metric and period up here, in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.dispatch import singledispatchmethod

from domain.meters import Aggregation
from domain.usage import HISTORY, UsagePeriod
from projections.base import BatchProjection, Positioned, UnhandledEventError, handled_by
from projections.store import Tx, ViewStore


@dataclass(frozen=True)
class PeriodInfo:
    aggregate_id: UUID
    tenant_id: UUID
    customer_ref: str
    metric: str
    period: str
    period_start: datetime
    period_end: datetime
    aggregation: Aggregation


class UsagePeriodDirectory(BatchProjection):
    name = "usage_periods"
    tables = ("sm_usage_periods",)

    def __init__(self, store: ViewStore) -> None:
        super().__init__(store)
        self._cache: dict[UUID, PeriodInfo] = {}

    def schema(self) -> list[str]:
        return [
            "CREATE TABLE IF NOT EXISTS sm_usage_periods ("
            " aggregate_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL,"
            " customer_ref TEXT NOT NULL, metric TEXT NOT NULL, period TEXT NOT NULL,"
            " period_start {timestamp} NOT NULL, period_end {timestamp} NOT NULL,"
            " aggregation TEXT NOT NULL, invoice_id TEXT, finalizes_at {timestamp},"
            " closed_at {timestamp}, verdict TEXT, final_local {bigint}, final_stripe {bigint},"
            " invoice_quantity {bigint})",
            "CREATE INDEX IF NOT EXISTS sm_usage_periods_end ON sm_usage_periods (period_end)",
        ]

    def process(self, tx: Tx, events: Sequence[Positioned]) -> None:
        """Insert the batch's new periods set-wise; an update first flushes the ones before it."""
        opened: list[tuple[Any, ...]] = []
        apply = self.apply  # bound once per batch: binding is the costly part
        for _, event in events:
            apply(event, tx, opened)
        self._insert(tx, opened)

    @singledispatchmethod
    def apply(self, event: object, tx: Tx, opened: list[tuple[Any, ...]]) -> None:
        raise UnhandledEventError(self.name, event)

    @apply.register(UsagePeriod.Opened)
    def _opened(self, event: UsagePeriod.Opened, tx: Tx, opened: list[tuple[Any, ...]]) -> None:
        info = PeriodInfo(
            aggregate_id=event.originator_id,
            tenant_id=event.tenant_id,
            customer_ref=event.customer_ref,
            metric=event.metric,
            period=event.period,
            period_start=event.period_start,
            period_end=event.period_end,
            aggregation=Aggregation(event.aggregation),
        )
        self._cache[info.aggregate_id] = info
        opened.append(
            (
                str(info.aggregate_id),
                str(info.tenant_id),
                info.customer_ref,
                info.metric,
                info.period,
                self.store.encode_time(info.period_start),
                self.store.encode_time(info.period_end),
                info.aggregation.value,
            )
        )

    @apply.register(UsagePeriod.ClosingScheduled)
    def _closing_scheduled(
        self, event: UsagePeriod.ClosingScheduled, tx: Tx, opened: list[tuple[Any, ...]]
    ) -> None:
        self._insert(tx, opened)  # the period's row must exist before it is updated
        tx.execute(
            "UPDATE sm_usage_periods SET invoice_id = ?, finalizes_at = ? WHERE aggregate_id = ?",
            (
                event.invoice_id,
                self.store.encode_time(event.finalizes_at),
                str(event.originator_id),
            ),
        )

    @apply.register(UsagePeriod.UsageMovedOut)
    def _moved_out(
        self, event: UsagePeriod.UsageMovedOut, tx: Tx, opened: list[tuple[Any, ...]]
    ) -> None:
        self._insert(tx, opened)
        tx.execute(
            "UPDATE sm_usage_periods SET period_end = ? WHERE aggregate_id = ?",
            (self.store.encode_time(event.period_end), str(event.originator_id)),
        )
        self._cache.pop(event.originator_id, None)

    @apply.register(UsagePeriod.PeriodClosed)
    def _closed(
        self, event: UsagePeriod.PeriodClosed, tx: Tx, opened: list[tuple[Any, ...]]
    ) -> None:
        self._insert(tx, opened)
        tx.execute(
            "UPDATE sm_usage_periods SET closed_at = ? WHERE aggregate_id = ?",
            (self.store.encode_time(event.timestamp), str(event.originator_id)),
        )

    @apply.register(UsagePeriod.HistoryOpened)
    def _history(
        self, event: UsagePeriod.HistoryOpened, tx: Tx, opened: list[tuple[Any, ...]]
    ) -> None:
        # Closed from the start, its verdict final: no push sweep, closing or
        # reconciliation looks at it again (domain/history.py).
        self._insert(tx, opened)
        tx.execute(
            "UPDATE sm_usage_periods SET closed_at = ?, verdict = ? WHERE aggregate_id = ?",
            (self.store.encode_time(event.timestamp), HISTORY, str(event.originator_id)),
        )

    @apply.register(UsagePeriod.ParityRecorded)
    def _parity(
        self, event: UsagePeriod.ParityRecorded, tx: Tx, opened: list[tuple[Any, ...]]
    ) -> None:
        self._insert(tx, opened)
        tx.execute(
            "UPDATE sm_usage_periods SET verdict = ?, final_local = ?, final_stripe = ?,"
            " invoice_quantity = ? WHERE aggregate_id = ?",
            (
                event.verdict,
                event.local_units,
                event.stripe_total,
                event.invoice_quantity,
                str(event.originator_id),
            ),
        )

    handles = handled_by(apply)

    def _insert(self, tx: Tx, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            tx.executemany(
                "INSERT INTO sm_usage_periods (aggregate_id, tenant_id, customer_ref, metric,"
                " period, period_start, period_end, aggregation) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (aggregate_id) DO NOTHING",
                rows,
            )
            rows.clear()

    def lookup(self, tx: Tx, aggregate_id: UUID) -> PeriodInfo:
        info = self._cache.get(aggregate_id)
        if info is not None:
            return info
        rows = tx.execute(
            "SELECT tenant_id, customer_ref, metric, period, period_start, period_end, aggregation"
            " FROM sm_usage_periods WHERE aggregate_id = ?",
            (str(aggregate_id),),
        )
        if not rows:
            raise LookupError(f"usage period {aggregate_id} is not in the directory")
        tenant_id, customer_ref, metric, period, start, end, aggregation = rows[0]
        start_at = self.store.decode_time(start)
        end_at = self.store.decode_time(end)
        assert start_at is not None and end_at is not None
        info = PeriodInfo(
            aggregate_id,
            UUID(tenant_id),
            customer_ref,
            metric,
            period,
            start_at,
            end_at,
            Aggregation(aggregation),
        )
        self._cache[aggregate_id] = info
        return info

    def extents(
        self, tenant_id: UUID, customer_ref: str, metric: str | None = None
    ) -> dict[tuple[str, str], tuple[datetime, datetime, bool]]:
        """(metric, period) -> the period's start and end, and whether it holds imported
        history, for every period of a customer."""
        sql = (
            "SELECT metric, period, period_start, period_end, verdict FROM sm_usage_periods"
            " WHERE tenant_id = ? AND customer_ref = ?"
        )
        params: list[Any] = [str(tenant_id), customer_ref]
        if metric is not None:
            sql += " AND metric = ?"
            params.append(metric)
        with self.store.transaction() as tx:
            rows = tx.execute(sql, params)
        found = {}
        for metric_name, period, start, end, verdict in rows:
            start_at, end_at = self.store.decode_time(start), self.store.decode_time(end)
            assert start_at is not None and end_at is not None
            found[(metric_name, period)] = (start_at, end_at, verdict == HISTORY)
        return found

    def clear(self, tx: Tx) -> None:
        super().clear(tx)
        self._cache.clear()
