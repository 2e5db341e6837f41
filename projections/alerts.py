"""Alert rules and their incidents per tenant, for ``/v1/alerts`` and the evaluator.

The aggregates (domain/alerts.py, domain/alert_incidents.py) hold the truth;
this view lists them, and tells the evaluator (adapters/alert_evaluator.py)
which rules exist and which incidents are open without reading aggregates.
Rules and incidents are few beside usage: one statement per event is enough.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from eventsourcing.dispatch import singledispatchmethod

from domain.alert_incidents import AlertIncident, IncidentStatus, ResolvedBecause, Target
from domain.alerts import AlertKind, AlertRule, AlertSpec, SpendBasis
from projections.base import BatchProjection, Positioned, UnhandledEventError, handled_by
from projections.store import Tx


@dataclass(frozen=True)
class RuleRow:
    alert_id: UUID
    tenant_id: UUID
    spec: AlertSpec
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class IncidentRow:
    incident_id: UUID
    target: Target
    status: IncidentStatus
    occurrences: int
    threshold: Decimal
    observed: Decimal | None
    baseline: Decimal | None
    triggered_at: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_because: ResolvedBecause | None
    version: int


RULE_COLUMNS = (
    "alert_id, tenant_id, metric, customer_ref, kind, threshold, basis, currency, enabled,"
    " cooldown_seconds, created_at, updated_at"
)
INCIDENT_COLUMNS = (
    "incident_id, alert_id, tenant_id, customer_ref, metric, period, period_start, period_end,"
    " kind, status, occurrences, threshold, observed, baseline, triggered_at, acknowledged_at,"
    " acknowledged_by, resolved_at, resolved_because, version"
)
OPEN = (IncidentStatus.TRIGGERED.value, IncidentStatus.ACKNOWLEDGED.value)


class AlertsProjection(BatchProjection):
    name = "alerts"
    tables = ("sm_alert_rules", "sm_alert_incidents")

    def schema(self) -> list[str]:
        return [
            "CREATE TABLE IF NOT EXISTS sm_alert_rules ("
            " alert_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, metric TEXT NOT NULL,"
            " customer_ref TEXT, kind TEXT NOT NULL, threshold {decimal} NOT NULL, basis TEXT,"
            " currency TEXT, enabled {bigint} NOT NULL, cooldown_seconds {bigint} NOT NULL,"
            " deleted {bigint} NOT NULL, created_at {timestamp} NOT NULL,"
            " updated_at {timestamp} NOT NULL)",
            "CREATE INDEX IF NOT EXISTS sm_alert_rules_tenant ON sm_alert_rules (tenant_id)",
            "CREATE TABLE IF NOT EXISTS sm_alert_incidents ("
            " incident_id TEXT PRIMARY KEY, alert_id TEXT NOT NULL, tenant_id TEXT NOT NULL,"
            " customer_ref TEXT NOT NULL, metric TEXT NOT NULL, period TEXT NOT NULL,"
            " period_start {timestamp} NOT NULL, period_end {timestamp} NOT NULL,"
            " kind TEXT NOT NULL, status TEXT NOT NULL, occurrences {bigint} NOT NULL,"
            " threshold {decimal} NOT NULL, observed {decimal}, baseline {decimal},"
            " triggered_at {timestamp}, acknowledged_at {timestamp}, acknowledged_by TEXT,"
            " resolved_at {timestamp}, resolved_because TEXT, version {bigint} NOT NULL)",
            "CREATE INDEX IF NOT EXISTS sm_alert_incidents_alert"
            " ON sm_alert_incidents (alert_id, period_start)",
            "CREATE INDEX IF NOT EXISTS sm_alert_incidents_status ON sm_alert_incidents (status)",
        ]

    def process(self, tx: Tx, events: Sequence[Positioned]) -> None:
        apply = self.apply
        for _, event in events:
            apply(event, tx)

    @singledispatchmethod
    def apply(self, event: object, tx: Tx) -> None:
        raise UnhandledEventError(self.name, event)

    # -- rules ----------------------------------------------------------------

    @apply.register(AlertRule.Created)
    def _created(self, event: AlertRule.Created, tx: Tx) -> None:
        s = self.store
        at = s.encode_time(event.timestamp)
        tx.execute(
            f"INSERT INTO sm_alert_rules ({RULE_COLUMNS}, deleted)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0) ON CONFLICT (alert_id) DO NOTHING",
            (
                str(event.originator_id),
                str(event.tenant_id),
                *self._spec_values(event),
                at,
                at,
            ),
        )

    @apply.register(AlertRule.Replaced)
    def _replaced(self, event: AlertRule.Replaced, tx: Tx) -> None:
        tx.execute(
            "UPDATE sm_alert_rules SET metric = ?, customer_ref = ?, kind = ?, threshold = ?,"
            " basis = ?, currency = ?, enabled = ?, cooldown_seconds = ?, updated_at = ?"
            " WHERE alert_id = ?",
            (
                *self._spec_values(event),
                self.store.encode_time(event.timestamp),
                str(event.originator_id),
            ),
        )

    @apply.register(AlertRule.Deleted)
    def _deleted(self, event: AlertRule.Deleted, tx: Tx) -> None:
        tx.execute(
            "UPDATE sm_alert_rules SET deleted = 1, updated_at = ? WHERE alert_id = ?",
            (self.store.encode_time(event.timestamp), str(event.originator_id)),
        )

    def _spec_values(self, event: AlertRule.Created | AlertRule.Replaced) -> tuple[Any, ...]:
        return (
            event.metric,
            event.customer_ref,
            event.kind,
            self.store.encode_decimal(event.threshold),
            event.basis,
            event.currency,
            1 if event.enabled else 0,
            event.cooldown_seconds,
        )

    # -- incidents ------------------------------------------------------------

    @apply.register(AlertIncident.Opened)
    def _opened(self, event: AlertIncident.Opened, tx: Tx) -> None:
        s = self.store
        tx.execute(
            f"INSERT INTO sm_alert_incidents ({INCIDENT_COLUMNS})"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, NULL, NULL, NULL, NULL, NULL, NULL,"
            " NULL, ?) ON CONFLICT (incident_id) DO NOTHING",
            (
                str(event.originator_id),
                str(event.alert_id),
                str(event.tenant_id),
                event.customer_ref,
                event.metric,
                event.period,
                s.encode_time(event.period_start),
                s.encode_time(event.period_end),
                event.kind,
                IncidentStatus.TRIGGERED.value,
                s.encode_decimal(Decimal(0)),
                event.originator_version,
            ),
        )

    @apply.register(AlertIncident.Triggered)
    def _triggered(self, event: AlertIncident.Triggered, tx: Tx) -> None:
        s = self.store
        tx.execute(
            "UPDATE sm_alert_incidents SET status = ?, occurrences = ?, threshold = ?,"
            " observed = ?, baseline = ?, triggered_at = ?, acknowledged_at = NULL,"
            " acknowledged_by = NULL, resolved_at = NULL, resolved_because = NULL, version = ?"
            " WHERE incident_id = ?",
            (
                IncidentStatus.TRIGGERED.value,
                event.occurrence,
                s.encode_decimal(event.threshold),
                s.encode_decimal(event.observed),
                s.encode_decimal(event.baseline),
                s.encode_time(event.at),
                event.originator_version,
                str(event.originator_id),
            ),
        )

    @apply.register(AlertIncident.Acknowledged)
    def _acknowledged(self, event: AlertIncident.Acknowledged, tx: Tx) -> None:
        tx.execute(
            "UPDATE sm_alert_incidents SET status = ?, acknowledged_at = ?, acknowledged_by = ?,"
            " version = ? WHERE incident_id = ?",
            (
                IncidentStatus.ACKNOWLEDGED.value,
                self.store.encode_time(event.at),
                event.actor,
                event.originator_version,
                str(event.originator_id),
            ),
        )

    @apply.register(AlertIncident.Resolved)
    def _resolved(self, event: AlertIncident.Resolved, tx: Tx) -> None:
        s = self.store
        tx.execute(
            "UPDATE sm_alert_incidents SET status = ?, resolved_at = ?, resolved_because = ?,"
            " observed = COALESCE(?, observed), version = ? WHERE incident_id = ?",
            (
                IncidentStatus.RESOLVED.value,
                s.encode_time(event.at),
                event.reason,
                s.encode_decimal(event.observed),
                event.originator_version,
                str(event.originator_id),
            ),
        )

    handles = handled_by(apply)

    # -- queries --------------------------------------------------------------

    def rules(self, tenant_id: UUID | None = None, alert_id: UUID | None = None) -> list[RuleRow]:
        """The rules not deleted: a tenant's, one rule, or (neither given) every tenant's."""
        where, params = _of(tenant_id, alert_id)
        sql = f"SELECT {RULE_COLUMNS} FROM sm_alert_rules WHERE deleted = 0{where}"
        with self.store.transaction() as tx:
            rows = tx.execute(sql + " ORDER BY created_at, alert_id", params)
        return [self._rule(r) for r in rows]

    def _rule(self, r: Sequence[Any]) -> RuleRow:
        s = self.store
        threshold = s.decode_decimal(r[5])
        created_at, updated_at = s.decode_time(r[10]), s.decode_time(r[11])
        assert threshold is not None and created_at is not None and updated_at is not None
        spec = AlertSpec(
            metric=r[2],
            customer_ref=r[3],
            kind=AlertKind(r[4]),
            threshold=threshold,
            basis=SpendBasis(r[6]) if r[6] else None,
            currency=r[7],
            enabled=bool(r[8]),
            cooldown_seconds=int(r[9]),
        )
        return RuleRow(UUID(r[0]), UUID(r[1]), spec, created_at, updated_at)

    def triggered_counts(self) -> dict[str, int]:
        """How many times incidents of each kind have triggered, all tenants together."""
        with self.store.transaction() as tx:
            rows = tx.execute("SELECT kind, SUM(occurrences) FROM sm_alert_incidents GROUP BY kind")
        return {str(kind): int(total or 0) for kind, total in rows}

    def incidents(
        self,
        tenant_id: UUID | None = None,
        alert_id: UUID | None = None,
        *,
        open_only: bool = False,
        ids: Sequence[UUID] = (),
        limit: int = 1_000,
    ) -> list[IncidentRow]:
        """Incidents, the latest period first: of a tenant, a rule, open ones, or by id."""
        where, params = _of(tenant_id, alert_id)
        sql = f"SELECT {INCIDENT_COLUMNS} FROM sm_alert_incidents WHERE 1 = 1{where}"
        if open_only:
            sql += " AND status IN (?, ?)"
            params += OPEN
        if ids:
            sql += f" AND incident_id IN ({', '.join('?' * len(ids))})"
            params += [str(i) for i in ids]
        sql += " ORDER BY period_start DESC, customer_ref, incident_id LIMIT ?"
        params.append(limit)
        with self.store.transaction() as tx:
            rows = tx.execute(sql, params)
        return [self._incident(r) for r in rows]

    def _incident(self, r: Sequence[Any]) -> IncidentRow:
        s = self.store
        start, end = s.decode_time(r[6]), s.decode_time(r[7])
        threshold = s.decode_decimal(r[11])
        assert start is not None and end is not None and threshold is not None
        return IncidentRow(
            incident_id=UUID(r[0]),
            target=Target(UUID(r[1]), UUID(r[2]), r[3], r[4], r[5], start, end, r[8]),
            status=IncidentStatus(r[9]),
            occurrences=int(r[10]),
            threshold=threshold,
            observed=s.decode_decimal(r[12]),
            baseline=s.decode_decimal(r[13]),
            triggered_at=s.decode_time(r[14]),
            acknowledged_at=s.decode_time(r[15]),
            acknowledged_by=r[16],
            resolved_at=s.decode_time(r[17]),
            resolved_because=ResolvedBecause(r[18]) if r[18] else None,
            version=int(r[19]),
        )


def _of(tenant_id: UUID | None, alert_id: UUID | None) -> tuple[str, list[Any]]:
    """The conditions (and their parameters) for one tenant's rows and one rule's."""
    where, params = "", []
    for column, value in (("tenant_id", tenant_id), ("alert_id", alert_id)):
        if value is not None:
            where += f" AND {column} = ?"
            params.append(str(value))
    return where, params
