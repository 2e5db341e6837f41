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
from collections.abc import Container, Iterable
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
    """What a usage period had counted from events with a time strictly before ``before``.

    A ``sum`` adds the quantities of its counted events and corrections; a
    ``count`` counts its counted events and adds the events a correction
    stands for. An event moved to another period, or late and not counted,
    is left out, as the counter leaves it out. A correction is placed at the
    time it was applied.
    """
    with store.transaction() as tx:
        rows = tx.execute(
            "SELECT quantity, status, meta FROM sm_usage_events WHERE aggregate_id = ?"
            " AND status IN ('counted', 'correction') AND occurred_at < ?",
            (str(period_id), store.encode_time(before)),
        )
    total = Decimal(0)
    for quantity, status, meta in rows:
        if aggregation is Aggregation.SUM:
            decoded = store.decode_decimal(quantity)
            total = EXACT.add(total, decoded if decoded is not None else Decimal(0))
        elif status == "counted":
            total += 1
        else:
            total += int(json.loads(meta).get("events", 0))
    return total


def _value(store: ViewStore, r: Any) -> Decimal:
    aggregation = Aggregation(r[0])
    return stored_value(store, aggregation, r[1], r[2], r[3], r[4])
