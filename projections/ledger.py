"""The pushed-to-Stripe ledger: every push of every period, and each ledger's totals.

Derived from ``StripeLedger`` events only, so dropping and rebuilding it
gives the same answer; ``audit`` joins it with the counters and the usage
events to trace every unit on an invoice back to the events it came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from eventsourcing.dispatch import singledispatchmethod

from domain.ledger import StripeLedger, stripe_expected
from domain.mappings import PUSH_MODE
from domain.meters import Aggregation
from domain.pushing import whole_units
from projections.base import BatchProjection, Positioned, UnhandledEventError, handled_by
from projections.counters import stored_value
from projections.store import Tx


@dataclass(frozen=True)
class PushRow:
    number: int
    target: str
    identifier: str
    value: int
    mode: str
    covers_from: int
    covers_to: int
    stripe_timestamp: datetime
    status: str  # pending, confirmed or abandoned
    how: str | None  # response, duplicate or summary
    reason: str | None
    intended_at: datetime
    settled_at: datetime | None
    purpose: str = "usage"  # the intent's reason: "usage", or who repaired it and why


@dataclass(frozen=True)
class Candidate:
    """A period's counter beside what its ledger says Stripe holds."""

    usage_period_id: UUID
    tenant_id: UUID
    customer_ref: str
    metric: str
    aggregation: str
    value: Decimal
    version: int
    confirmed_total: int
    confirmed_value: int | None
    pending: bool
    blocked_at_version: int
    covered_version: int
    external_total: int = 0
    period: str = ""
    period_start: datetime | None = None
    period_end: datetime | None = None

    def needs_push(self) -> bool:
        """True when Stripe is (or may be) behind this counter in whole units."""
        if self.pending:
            return True
        if self.blocked_at_version and self.blocked_at_version >= self.version:
            return False  # refused for good, and nothing new since
        mode = PUSH_MODE[Aggregation(self.aggregation)].value
        expected = stripe_expected(
            mode, self.confirmed_total, self.external_total, self.confirmed_value
        )
        return whole_units(self.value) != expected


@dataclass(frozen=True)
class LedgerRow:
    ledger_id: UUID
    usage_period_id: UUID
    target: str
    confirmed_total: int
    confirmed_value: int | None
    covered_version: int
    pending_number: int | None
    blocked_reason: str | None
    blocked_at_version: int
    external_total: int


@dataclass(frozen=True)
class RepairRow:
    """A drift an operator accepted on the ledger before a repair push."""

    target: str
    recorded_at: datetime
    stripe_total: int
    expected_total: int
    actor: str
    reason: str


PUSH_COLUMNS = (
    "number, target, identifier, value, mode, covers_from, covers_to, stripe_timestamp,"
    " status, how, reason, intended_at, settled_at, purpose"
)
LEDGER_COLUMNS = (
    "ledger_id, usage_period_id, target, confirmed_total, confirmed_value, covered_version,"
    " pending_number, blocked_reason, blocked_at_version, external_total"
)


class LedgerProjection(BatchProjection):
    name = "ledger"
    tables = ("sm_ledgers", "sm_pushes", "sm_ledger_repairs")

    def schema(self) -> list[str]:
        return [
            "CREATE TABLE IF NOT EXISTS sm_ledgers ("
            " ledger_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, usage_period_id TEXT NOT NULL,"
            " target TEXT NOT NULL, confirmed_total {bigint} NOT NULL, confirmed_value {bigint},"
            " covered_version {bigint} NOT NULL, pending_number {bigint}, blocked_reason TEXT,"
            " blocked_at_version {bigint} NOT NULL, external_total {bigint} NOT NULL)",
            "CREATE INDEX IF NOT EXISTS sm_ledgers_period ON sm_ledgers (usage_period_id)",
            "CREATE TABLE IF NOT EXISTS sm_pushes ("
            " ledger_id TEXT NOT NULL, number {bigint} NOT NULL, usage_period_id TEXT NOT NULL,"
            " target TEXT NOT NULL, identifier TEXT NOT NULL, value {bigint} NOT NULL,"
            " mode TEXT NOT NULL, covers_from {bigint} NOT NULL, covers_to {bigint} NOT NULL,"
            " stripe_timestamp {timestamp} NOT NULL, status TEXT NOT NULL, how TEXT, reason TEXT,"
            " intended_at {timestamp} NOT NULL, settled_at {timestamp}, purpose TEXT NOT NULL,"
            " PRIMARY KEY (ledger_id, number))",
            "CREATE INDEX IF NOT EXISTS sm_pushes_period ON sm_pushes (usage_period_id, number)",
            "CREATE TABLE IF NOT EXISTS sm_ledger_repairs ("
            " ledger_id TEXT NOT NULL, version {bigint} NOT NULL, usage_period_id TEXT NOT NULL,"
            " target TEXT NOT NULL, recorded_at {timestamp} NOT NULL,"
            " stripe_total {bigint} NOT NULL, expected_total {bigint} NOT NULL, mode TEXT NOT NULL,"
            " actor TEXT NOT NULL, reason TEXT NOT NULL, PRIMARY KEY (ledger_id, version))",
            "CREATE INDEX IF NOT EXISTS sm_ledger_repairs_period"
            " ON sm_ledger_repairs (usage_period_id)",
        ]

    def process(self, tx: Tx, events: Sequence[Positioned]) -> None:
        apply = self.apply  # bound once per batch: binding is the costly part
        for _, event in events:
            apply(event, tx)

    @singledispatchmethod
    def apply(self, event: object, tx: Tx) -> None:
        raise UnhandledEventError(self.name, event)

    @apply.register(StripeLedger.Opened)
    def _opened(self, event: StripeLedger.Opened, tx: Tx) -> None:
        tx.execute(
            f"INSERT INTO sm_ledgers (tenant_id, {LEDGER_COLUMNS})"
            " VALUES (?, ?, ?, ?, 0, NULL, 0, NULL, NULL, 0, 0)",
            (
                str(event.tenant_id),
                str(event.originator_id),
                str(event.usage_period_id),
                event.target,
            ),
        )

    @apply.register(StripeLedger.PushIntended)
    def _intended(self, event: StripeLedger.PushIntended, tx: Tx) -> None:
        ledger = str(event.originator_id)
        period, target = tx.execute(
            "SELECT usage_period_id, target FROM sm_ledgers WHERE ledger_id = ?", (ledger,)
        )[0]
        s = self.store
        tx.execute(
            f"INSERT INTO sm_pushes (ledger_id, usage_period_id, {PUSH_COLUMNS})"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', NULL, NULL, ?, NULL, ?)",
            (
                ledger,
                period,
                event.number,
                target,
                event.identifier,
                event.value,
                event.mode,
                event.covers_from,
                event.covers_to,
                s.encode_time(event.stripe_timestamp),
                s.encode_time(event.recorded_at),
                event.reason,
            ),
        )
        tx.execute(
            "UPDATE sm_ledgers SET pending_number = ? WHERE ledger_id = ?", (event.number, ledger)
        )

    @apply.register(StripeLedger.PushConfirmed)
    def _confirmed(self, event: StripeLedger.PushConfirmed, tx: Tx) -> None:
        ledger = str(event.originator_id)
        value, mode, covers_to = tx.execute(
            "SELECT value, mode, covers_to FROM sm_pushes WHERE ledger_id = ? AND number = ?",
            (ledger, event.number),
        )[0]
        tx.execute(
            "UPDATE sm_pushes SET status = 'confirmed', how = ?, settled_at = ?"
            " WHERE ledger_id = ? AND number = ?",
            (
                event.how,
                self.store.encode_time(event.confirmed_at or event.timestamp),
                ledger,
                event.number,
            ),
        )
        tx.execute(
            "UPDATE sm_ledgers SET confirmed_total = confirmed_total + ?, confirmed_value = ?,"
            " covered_version = ?, pending_number = NULL, blocked_reason = NULL,"
            " blocked_at_version = 0 WHERE ledger_id = ?",
            (value if mode == "delta" else 0, value, covers_to, ledger),
        )

    @apply.register(StripeLedger.DriftRecorded)
    def _drift(self, event: StripeLedger.DriftRecorded, tx: Tx) -> None:
        ledger = str(event.originator_id)
        period, target = tx.execute(
            "SELECT usage_period_id, target FROM sm_ledgers WHERE ledger_id = ?", (ledger,)
        )[0]
        if event.mode == "delta":
            tx.execute(
                "UPDATE sm_ledgers SET external_total = external_total + ? WHERE ledger_id = ?",
                (event.stripe_total - event.expected_total, ledger),
            )
        else:
            tx.execute(
                "UPDATE sm_ledgers SET confirmed_value = ? WHERE ledger_id = ?",
                (event.stripe_total, ledger),
            )
        tx.execute(
            "INSERT INTO sm_ledger_repairs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                ledger,
                event.originator_version,
                period,
                target,
                self.store.encode_time(event.timestamp),
                event.stripe_total,
                event.expected_total,
                event.mode,
                event.actor,
                event.reason,
            ),
        )

    @apply.register(StripeLedger.PushAbandoned)
    def _abandoned(self, event: StripeLedger.PushAbandoned, tx: Tx) -> None:
        ledger = str(event.originator_id)
        (covers_to,) = tx.execute(
            "SELECT covers_to FROM sm_pushes WHERE ledger_id = ? AND number = ?",
            (ledger, event.number),
        )[0]
        tx.execute(
            "UPDATE sm_pushes SET status = 'abandoned', reason = ?, settled_at = ?"
            " WHERE ledger_id = ? AND number = ?",
            (event.reason, self.store.encode_time(event.timestamp), ledger, event.number),
        )
        tx.execute(
            "UPDATE sm_ledgers SET pending_number = NULL, blocked_reason = ?,"
            " blocked_at_version = ? WHERE ledger_id = ?",
            (
                event.reason if event.permanent else None,
                covers_to if event.permanent else 0,
                ledger,
            ),
        )

    handles = handled_by(apply)

    # -- queries ----------------------------------------------------------

    def candidates(self, target: str, open_after: datetime) -> list[Candidate]:
        """Periods ending after ``open_after`` with their counter and this target's ledger."""
        s = self.store
        with s.transaction() as tx:
            rows = tx.execute(
                "SELECT p.aggregate_id, p.tenant_id, p.customer_ref, p.metric, c.aggregation,"
                " c.total, c.event_count, c.maximum, c.last_value, c.version,"
                " l.confirmed_total, l.confirmed_value, l.pending_number, l.blocked_at_version,"
                " l.covered_version, l.external_total, p.period, p.period_start, p.period_end"
                " FROM sm_usage_periods p"
                " JOIN sm_counters c ON c.tenant_id = p.tenant_id AND c.customer_ref ="
                " p.customer_ref AND c.metric = p.metric AND c.period = p.period"
                " LEFT JOIN sm_ledgers l ON l.usage_period_id = p.aggregate_id AND l.target = ?"
                " WHERE p.period_end > ? AND p.verdict IS NULL",
                (target, s.encode_time(open_after)),
            )
        result = []
        for r in rows:
            result.append(
                Candidate(
                    usage_period_id=UUID(r[0]),
                    tenant_id=UUID(r[1]),
                    customer_ref=r[2],
                    metric=r[3],
                    aggregation=r[4],
                    value=stored_value(s, Aggregation(r[4]), r[5], r[6], r[7], r[8]),
                    version=int(r[9]),
                    confirmed_total=int(r[10] or 0),
                    confirmed_value=None if r[11] is None else int(r[11]),
                    pending=r[12] is not None,
                    blocked_at_version=int(r[13] or 0),
                    covered_version=int(r[14] or 0),
                    external_total=int(r[15] or 0),
                    period=r[16],
                    period_start=s.decode_time(r[17]),
                    period_end=s.decode_time(r[18]),
                )
            )
        return result

    def oldest_unpushed(self, behind: Sequence[Candidate]) -> datetime | None:
        """When the oldest counted event not yet covered by a confirmed push was recorded."""
        oldest: datetime | None = None
        with self.store.transaction() as tx:
            for start in range(0, len(behind), 400):
                chunk = behind[start : start + 400]
                clauses = " OR ".join("(aggregate_id = ? AND version > ?)" for _ in chunk)
                params: list[Any] = []
                for candidate in chunk:
                    params += [str(candidate.usage_period_id), candidate.covered_version]
                rows = tx.execute(
                    "SELECT MIN(recorded_at) FROM sm_usage_events WHERE status = 'counted'"
                    f" AND ({clauses})",
                    params,
                )
                found = self.store.decode_time(rows[0][0]) if rows else None
                if found is not None and (oldest is None or found < oldest):
                    oldest = found
        return oldest

    def ledgers(self, usage_period_ids: Sequence[UUID] | None = None) -> list[LedgerRow]:
        sql = f"SELECT {LEDGER_COLUMNS} FROM sm_ledgers"
        params: list[Any] = []
        if usage_period_ids is not None:
            if not usage_period_ids:
                return []
            sql += f" WHERE usage_period_id IN ({', '.join('?' * len(usage_period_ids))})"
            params = [str(i) for i in usage_period_ids]
        with self.store.transaction() as tx:
            rows = tx.execute(sql + " ORDER BY ledger_id", params)
        return [
            LedgerRow(
                UUID(r[0]),
                UUID(r[1]),
                r[2],
                int(r[3]),
                r[4],
                int(r[5]),
                r[6],
                r[7],
                int(r[8]),
                int(r[9]),
            )
            for r in rows
        ]

    def pushed_open_periods(self, tenant_id: UUID, metric: str, target: str) -> list[str]:
        """The open periods (keys) of a metric, any customer, with pushes Stripe holds or may hold.

        A push counts while confirmed or still pending (its call may have
        reached Stripe); an abandoned one never did. A period is open until it
        is closed (``closed_at``) or settled (``verdict``).
        """
        with self.store.transaction() as tx:
            rows = tx.execute(
                "SELECT DISTINCT p.period FROM sm_usage_periods p"
                " JOIN sm_pushes s ON s.usage_period_id = p.aggregate_id"
                " WHERE p.tenant_id = ? AND p.metric = ? AND s.target = ?"
                " AND s.status IN ('confirmed', 'pending')"
                " AND p.closed_at IS NULL AND p.verdict IS NULL ORDER BY p.period",
                (str(tenant_id), metric, target),
            )
        return [r[0] for r in rows]

    def customer_pushed_open_periods(
        self, tenant_id: UUID, customer_ref: str, target: str
    ) -> list[str]:
        """The open periods (``metric period``) of a customer, any metric, with pushes
        Stripe holds or may hold, as ``pushed_open_periods`` counts them."""
        with self.store.transaction() as tx:
            rows = tx.execute(
                "SELECT DISTINCT p.metric, p.period FROM sm_usage_periods p"
                " JOIN sm_pushes s ON s.usage_period_id = p.aggregate_id"
                " WHERE p.tenant_id = ? AND p.customer_ref = ? AND s.target = ?"
                " AND s.status IN ('confirmed', 'pending')"
                " AND p.closed_at IS NULL AND p.verdict IS NULL ORDER BY p.metric, p.period",
                (str(tenant_id), customer_ref, target),
            )
        return [f"{r[0]} {r[1]}" for r in rows]

    def pushes(self, usage_period_id: UUID) -> list[PushRow]:
        with self.store.transaction() as tx:
            rows = tx.execute(
                f"SELECT {PUSH_COLUMNS} FROM sm_pushes WHERE usage_period_id = ?"
                " ORDER BY target, number",
                (str(usage_period_id),),
            )
        return [self._push(r) for r in rows]

    def repairs(self, usage_period_id: UUID) -> list[RepairRow]:
        with self.store.transaction() as tx:
            rows = tx.execute(
                "SELECT target, recorded_at, stripe_total, expected_total, actor, reason"
                " FROM sm_ledger_repairs WHERE usage_period_id = ? ORDER BY target, version",
                (str(usage_period_id),),
            )
        result = []
        for r in rows:
            recorded_at = self.store.decode_time(r[1])
            assert recorded_at is not None
            result.append(RepairRow(r[0], recorded_at, int(r[2]), int(r[3]), r[4], r[5]))
        return result

    def _push(self, r: Sequence[Any]) -> PushRow:
        s = self.store
        stripe_timestamp = s.decode_time(r[7])
        intended_at = s.decode_time(r[11])
        assert stripe_timestamp is not None and intended_at is not None
        return PushRow(
            int(r[0]),
            r[1],
            r[2],
            int(r[3]),
            r[4],
            int(r[5]),
            int(r[6]),
            stripe_timestamp,
            r[8],
            r[9],
            r[10],
            intended_at,
            s.decode_time(r[12]),
            r[13],
        )
