"""Reconciliation reports: the standing of each period (from the views) and the runs' reports.

``standings`` joins what a run needs per usage period: its counter, its live
ledger, its pending push and its closing state. Reports are *observations*
of Stripe, not facts derived from the event log, so they are stored in the
views' database but are not a projection (and live here, beside the
reconciler that writes them, not in projections/): a rebuild leaves them alone.
Each run writes one report per month (of period start) it covered, with one
line per customer × metric × period and target (``live``; ``shadow`` too when
the metric and customer are mapped in shadow mode); reading a month returns
its latest run only — nothing is ever summed across runs. Older runs are pruned.

Shadow lines are kept in a table of their own with the same columns, so the
live lines' table keeps its shape and primary key: an existing deployment
needs no migration, and its stored reports read as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from domain.meters import Aggregation
from projections.counters import stored_value
from projections.store import ViewStore

RUNS_KEPT = 20
# Where each target's lines are stored (see the module docstring).
LINE_TABLES = {"live": "sm_reconciliation_lines", "shadow": "sm_reconciliation_shadow_lines"}


@dataclass(frozen=True)
class PeriodStanding:
    usage_period_id: UUID
    tenant_id: UUID
    customer_ref: str
    metric: str
    period: str
    period_start: datetime
    period_end: datetime
    aggregation: Aggregation
    value: Decimal
    stripe_customer_id: str | None
    confirmed_total: int
    confirmed_value: int | None
    external_total: int
    pending_value: int | None
    last_confirmed_at: datetime | None
    finalizes_at: datetime | None
    closed: bool
    verdict: str | None
    invoice_id: str | None = None


@dataclass(frozen=True)
class ClosingState:
    invoice_id: str | None
    finalizes_at: datetime | None
    closed_at: datetime | None
    verdict: str | None
    local: int | None
    stripe: int | None
    invoice_quantity: int | None


@dataclass(frozen=True)
class ReportLine:
    customer_ref: str
    metric: str
    period: str
    period_start: datetime
    period_end: datetime
    stripe_customer_id: str
    meter_id: str
    local: int
    stripe: int | None
    expected: int
    difference: int | None
    status: str
    cause: str
    closed: bool
    verdict: str | None
    target: str = "live"  # which Stripe account and ledger: "live", or "shadow"


@dataclass(frozen=True)
class Report:
    run_id: str
    tenant_id: UUID
    month: str
    started_at: datetime
    finished_at: datetime
    trigger: str
    actor: str
    repair: bool
    stripe_calls: int
    lines: list[ReportLine]

    def count(self, status: str) -> int:
        return sum(1 for line in self.lines if line.status == status)


LINE_COLUMNS = (
    "customer_ref, metric, period, period_start, period_end, stripe_customer_id, meter_id,"
    " local_units, stripe_units, expected_units, difference, status, cause, closed, verdict"
)


class ReconciliationReports:
    def __init__(self, store: ViewStore) -> None:
        self.store = store

    def create_tables(self) -> None:
        with self.store.transaction() as tx:
            for statement in (
                "CREATE TABLE IF NOT EXISTS sm_reconciliation_runs ("
                " run_id TEXT NOT NULL, tenant_id TEXT NOT NULL, month TEXT NOT NULL,"
                " started_at {timestamp} NOT NULL, finished_at {timestamp} NOT NULL,"
                " trigger TEXT NOT NULL, actor TEXT NOT NULL, repair {bigint} NOT NULL,"
                " stripe_calls {bigint} NOT NULL, seq {bigint} NOT NULL,"
                " PRIMARY KEY (tenant_id, month, run_id))",
                *(
                    f"CREATE TABLE IF NOT EXISTS {table} ("
                    " run_id TEXT NOT NULL, tenant_id TEXT NOT NULL, month TEXT NOT NULL,"
                    " customer_ref TEXT NOT NULL, metric TEXT NOT NULL, period TEXT NOT NULL,"
                    " period_start {timestamp} NOT NULL, period_end {timestamp} NOT NULL,"
                    " stripe_customer_id TEXT NOT NULL, meter_id TEXT NOT NULL,"
                    " local_units {bigint} NOT NULL, stripe_units {bigint},"
                    " expected_units {bigint} NOT NULL, difference {bigint},"
                    " status TEXT NOT NULL, cause TEXT NOT NULL, closed {bigint} NOT NULL,"
                    " verdict TEXT, PRIMARY KEY (run_id, customer_ref, metric, period))"
                    for table in LINE_TABLES.values()
                ),
            ):
                tx.execute(self.store.ddl(statement))

    # -- what a run reads -------------------------------------------------------

    def standings(
        self,
        tenant_id: UUID | None,
        *,
        start_from: datetime | None = None,
        start_before: datetime | None = None,
        ending_after: datetime | None = None,
        ended_by: datetime | None = None,
        unsettled: bool = False,
        period_ids: list[UUID] | None = None,
        target: str = "live",
    ) -> list[PeriodStanding]:
        """Periods with a counter and their ledger for ``target``, filtered by start, end or id.

        ``unsettled``: only periods whose final parity is not recorded yet.
        ``target="shadow"``: the shadow ledger, and the customer's shadow Stripe
        customer as ``stripe_customer_id`` (None where the customer has none).
        """
        s = self.store
        customer_column = {"live": "stripe_customer_id", "shadow": "shadow_stripe_customer_id"}[
            target
        ]
        where = ["1 = 1"]
        params: list[Any] = [target]
        for clause, value in (
            ("p.tenant_id = ?", None if tenant_id is None else str(tenant_id)),
            ("p.period_start >= ?", s.encode_time(start_from) if start_from else None),
            ("p.period_start < ?", s.encode_time(start_before) if start_before else None),
            ("p.period_end > ?", s.encode_time(ending_after) if ending_after else None),
            ("p.period_end <= ?", s.encode_time(ended_by) if ended_by else None),
        ):
            if value is not None:
                where.append(clause)
                params.append(value)
        if unsettled:
            where.append("p.verdict IS NULL")
        if period_ids is not None:
            if not period_ids:
                return []
            where.append(f"p.aggregate_id IN ({', '.join('?' * len(period_ids))})")
            params += [str(i) for i in period_ids]
        with s.transaction() as tx:
            rows = tx.execute(
                "SELECT p.aggregate_id, p.tenant_id, p.customer_ref, p.metric, p.period,"
                " p.period_start, p.period_end, p.aggregation, c.total, c.event_count,"
                f" c.maximum, c.last_value, cu.{customer_column}, l.confirmed_total,"
                " l.confirmed_value, l.external_total, pp.value,"
                " (SELECT MAX(settled_at) FROM sm_pushes q WHERE q.ledger_id = l.ledger_id"
                "  AND q.status = 'confirmed'),"
                " p.finalizes_at, p.closed_at, p.verdict, p.invoice_id"
                " FROM sm_usage_periods p"
                " JOIN sm_counters c ON c.tenant_id = p.tenant_id AND c.customer_ref ="
                " p.customer_ref AND c.metric = p.metric AND c.period = p.period"
                " LEFT JOIN sm_customers cu ON cu.tenant_id = p.tenant_id"
                " AND cu.customer_ref = p.customer_ref"
                " LEFT JOIN sm_ledgers l ON l.usage_period_id = p.aggregate_id"
                " AND l.target = ?"
                " LEFT JOIN sm_pushes pp ON pp.ledger_id = l.ledger_id"
                " AND pp.number = l.pending_number"
                f" WHERE {' AND '.join(where)}"
                " ORDER BY p.tenant_id, p.customer_ref, p.metric, p.period_start",
                params,
            )
        result = []
        for r in rows:
            aggregation = Aggregation(r[7])
            start, end = s.decode_time(r[5]), s.decode_time(r[6])
            assert start is not None and end is not None
            result.append(
                PeriodStanding(
                    usage_period_id=UUID(r[0]),
                    tenant_id=UUID(r[1]),
                    customer_ref=r[2],
                    metric=r[3],
                    period=r[4],
                    period_start=start,
                    period_end=end,
                    aggregation=aggregation,
                    value=stored_value(s, aggregation, r[8], r[9], r[10], r[11]),
                    stripe_customer_id=r[12],
                    confirmed_total=int(r[13] or 0),
                    confirmed_value=None if r[14] is None else int(r[14]),
                    external_total=int(r[15] or 0),
                    pending_value=None if r[16] is None else int(r[16]),
                    last_confirmed_at=s.decode_time(r[17]),
                    finalizes_at=s.decode_time(r[18]),
                    closed=r[19] is not None,
                    verdict=r[20],
                    invoice_id=r[21],
                )
            )
        return result

    def closing(self, usage_period_id: UUID) -> ClosingState | None:
        """A period's invoice, whether it is closed, and its recorded final parity."""
        s = self.store
        with s.transaction() as tx:
            rows = tx.execute(
                "SELECT invoice_id, finalizes_at, closed_at, verdict, final_local, final_stripe,"
                " invoice_quantity FROM sm_usage_periods WHERE aggregate_id = ?",
                (str(usage_period_id),),
            )
        if not rows:
            return None
        r = rows[0]
        return ClosingState(
            invoice_id=r[0],
            finalizes_at=s.decode_time(r[1]),
            closed_at=s.decode_time(r[2]),
            verdict=r[3],
            local=None if r[4] is None else int(r[4]),
            stripe=None if r[5] is None else int(r[5]),
            invoice_quantity=None if r[6] is None else int(r[6]),
        )

    # -- reports ----------------------------------------------------------------

    def save(self, report: Report) -> None:
        s = self.store
        with s.transaction() as tx:
            # Runs are ordered by when they were saved (clocks may tie, or stand still in tests).
            (last,) = tx.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM sm_reconciliation_runs"
                " WHERE tenant_id = ? AND month = ?",
                (str(report.tenant_id), report.month),
            )[0]
            tx.execute(
                "INSERT INTO sm_reconciliation_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    report.run_id,
                    str(report.tenant_id),
                    report.month,
                    s.encode_time(report.started_at),
                    s.encode_time(report.finished_at),
                    report.trigger,
                    report.actor,
                    int(report.repair),
                    report.stripe_calls,
                    int(last) + 1,
                ),
            )
            for target, table in LINE_TABLES.items():
                lines = [line for line in report.lines if line.target == target]
                if lines:
                    tx.executemany(
                        f"INSERT INTO {table} (run_id, tenant_id, month, {LINE_COLUMNS})"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [self._row(report, line) for line in lines],
                    )
            old = tx.execute(
                "SELECT run_id FROM sm_reconciliation_runs WHERE tenant_id = ? AND month = ?"
                " ORDER BY seq DESC",
                (str(report.tenant_id), report.month),
            )[RUNS_KEPT:]
            for (run_id,) in old:
                for table in (*LINE_TABLES.values(), "sm_reconciliation_runs"):
                    tx.execute(
                        f"DELETE FROM {table} WHERE run_id = ? AND tenant_id = ? AND month = ?",
                        (run_id, str(report.tenant_id), report.month),
                    )

    def latest(self, tenant_id: UUID, month: str) -> Report | None:
        """The latest run's report for a month, or None when never reconciled."""
        s = self.store
        with s.transaction() as tx:
            runs = tx.execute(
                "SELECT run_id, started_at, finished_at, trigger, actor, repair, stripe_calls"
                " FROM sm_reconciliation_runs WHERE tenant_id = ? AND month = ?"
                " ORDER BY seq DESC LIMIT 1",
                (str(tenant_id), month),
            )
            if not runs:
                return None
            run = runs[0]
            # Each live line, then its shadow line ('live' < 'shadow').
            rows = tx.execute(
                " UNION ALL ".join(
                    f"SELECT {LINE_COLUMNS}, '{target}' AS target FROM {table}"
                    " WHERE run_id = ? AND tenant_id = ? AND month = ?"
                    for target, table in LINE_TABLES.items()
                )
                + " ORDER BY customer_ref, metric, period_start, target",
                (run[0], str(tenant_id), month) * len(LINE_TABLES),
            )
        started, finished = s.decode_time(run[1]), s.decode_time(run[2])
        assert started is not None and finished is not None
        return Report(
            run_id=run[0],
            tenant_id=tenant_id,
            month=month,
            started_at=started,
            finished_at=finished,
            trigger=run[3],
            actor=run[4],
            repair=bool(run[5]),
            stripe_calls=int(run[6]),
            lines=[self._line(r) for r in rows],
        )

    def _line(self, r: Sequence[Any]) -> ReportLine:
        s = self.store
        start, end = s.decode_time(r[3]), s.decode_time(r[4])
        assert start is not None and end is not None
        return ReportLine(
            customer_ref=r[0],
            metric=r[1],
            period=r[2],
            period_start=start,
            period_end=end,
            stripe_customer_id=r[5],
            meter_id=r[6],
            local=int(r[7]),
            stripe=None if r[8] is None else int(r[8]),
            expected=int(r[9]),
            difference=None if r[10] is None else int(r[10]),
            status=r[11],
            cause=r[12],
            closed=bool(r[13]),
            verdict=r[14],
            target=r[15],
        )

    def _row(self, report: Report, line: ReportLine) -> tuple[Any, ...]:
        s = self.store
        return (
            report.run_id,
            str(report.tenant_id),
            report.month,
            line.customer_ref,
            line.metric,
            line.period,
            s.encode_time(line.period_start),
            s.encode_time(line.period_end),
            line.stripe_customer_id,
            line.meter_id,
            line.local,
            line.stripe,
            line.expected,
            line.difference,
            line.status,
            line.cause,
            int(line.closed),
            line.verdict,
        )
