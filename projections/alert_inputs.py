"""What alert rules are compared with, read from the committed views.

- ``touched_counters``: the counters a projection batch changed (by usage
  period id), as committed — one lookup per period, one read for all;
- ``current_counters``: every counter of a tenant's metric (one customer's,
  or all) whose period contains ``now``, for a rule's full evaluation;
- ``usage_until``: a period's usage with an event time before a moment, from
  the per-event view (projections/usage_events.py): a spike's baseline.
"""

from __future__ import annotations

import json
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from domain.meters import Aggregation
from domain.usage import EXACT
from projections.counters import COUNTER_KEY, stored_value
from projections.store import ViewStore
from projections.usage_periods import PeriodInfo, UsagePeriodDirectory

VALUE_COLUMNS = "aggregation, total, event_count, maximum, last_value"
CHUNK = 100


@dataclass(frozen=True)
class CounterValue:
    info: PeriodInfo
    value: Decimal


def touched_counters(
    store: ViewStore,
    directory: UsagePeriodDirectory,
    period_ids: Iterable[UUID],
    tenants: Container[UUID],
) -> list[CounterValue]:
    """The committed counters of these usage periods, for the tenants in ``tenants`` only."""
    with store.transaction() as tx:
        infos = {}
        for period_id in period_ids:
            info = directory.lookup(tx, period_id)
            if info.tenant_id in tenants:
                infos[(str(info.tenant_id), info.customer_ref, info.metric, info.period)] = info
        if not infos:
            return []
        rows = tx.select_keys("sm_counters", COUNTER_KEY, VALUE_COLUMNS, list(infos))
    return [CounterValue(infos[tuple(r[:4])], _value(store, r[4:])) for r in rows]


def current_counters(
    store: ViewStore, tenant_id: UUID, metric: str, customer_ref: str | None, now: datetime
) -> list[CounterValue]:
    """The tenant's counters of ``metric`` (of one customer, or all) in periods holding ``now``."""
    sql = (
        "SELECT p.aggregate_id, p.customer_ref, p.period, p.period_start, p.period_end,"
        " c.aggregation, c.total, c.event_count, c.maximum, c.last_value"
        " FROM sm_counters c JOIN sm_usage_periods p ON p.tenant_id = c.tenant_id"
        " AND p.customer_ref = c.customer_ref AND p.metric = c.metric AND p.period = c.period"
        " WHERE c.tenant_id = ? AND c.metric = ? AND p.period_start <= ? AND p.period_end > ?"
    )
    at = store.encode_time(now)
    params: list[Any] = [str(tenant_id), metric, at, at]
    if customer_ref is not None:
        sql += " AND c.customer_ref = ?"
        params.append(customer_ref)
    with store.transaction() as tx:
        rows = tx.execute(sql, params)
    found = []
    for r in rows:
        start, end = store.decode_time(r[3]), store.decode_time(r[4])
        assert start is not None and end is not None
        info = PeriodInfo(UUID(r[0]), tenant_id, r[1], metric, r[2], start, end, Aggregation(r[5]))
        found.append(CounterValue(info, _value(store, r[5:])))
    return found


def usage_until(
    store: ViewStore, period_id: UUID, aggregation: Aggregation, before: datetime
) -> Decimal:
    """What a usage period had counted from events with a time strictly before ``before``."""
    return usages_until(store, [(period_id, aggregation, before)])[(period_id, before)]


def usages_until(
    store: ViewStore, wanted: Sequence[tuple[UUID, Aggregation, datetime]]
) -> dict[tuple[UUID, datetime], Decimal]:
    """What each usage period had counted from events with a time strictly before its moment.

    A ``sum`` adds the quantities of its counted events and corrections; a
    ``count`` counts its counted events and adds the events a correction
    stands for. An event moved to another period, or late and not counted,
    is left out, as the counter leaves it out. A correction is placed at the
    time it was applied. One statement per ``CHUNK`` periods.
    """
    found: dict[tuple[UUID, datetime], Decimal] = {}
    for start in range(0, len(wanted), CHUNK):
        chunk = wanted[start : start + CHUNK]
        where = " OR ".join("(aggregate_id = ? AND occurred_at < ?)" for _ in chunk)
        params: list[Any] = []
        for period_id, _, before in chunk:
            params += [str(period_id), store.encode_time(before)]
            found[(period_id, before)] = Decimal(0)
        with store.transaction() as tx:
            rows = tx.execute(
                "SELECT aggregate_id, occurred_at, quantity, status, meta FROM sm_usage_events"
                f" WHERE status IN ('counted', 'correction') AND ({where})",
                params,
            )
        per_period = {period_id: (aggregation, before) for period_id, aggregation, before in chunk}
        for aggregate_id, _, quantity, status, meta in rows:
            aggregation, before = per_period[UUID(aggregate_id)]
            key = (UUID(aggregate_id), before)
            if aggregation is Aggregation.SUM:
                decoded = store.decode_decimal(quantity)
                found[key] = EXACT.add(found[key], decoded if decoded is not None else 0)
            elif status == "counted":
                found[key] += 1
            else:
                found[key] += int(json.loads(meta).get("events", 0))
    return found


def _value(store: ViewStore, r: Any) -> Decimal:
    aggregation = Aggregation(r[0])
    return stored_value(store, aggregation, r[1], r[2], r[3], r[4])
