"""The admin customer page's usage charts, one per metric counted in the current period.

Each chart's buckets are the answer of ``GET /v1/usage/history`` (the same function,
api/queries/history.py) for a range this module names: ``hour`` is the 48 hours up
to the end of the current hour, ``day`` the current billing period (capped at the
API's 93 days). The page lays the buckets out as a table and as JSON for the chart
script; nothing here or in the template computes a number of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec

from adapters.persistence import Stores
from api.queries.history import MAX_HISTORY, Granularity, granularity_of, usage_history
from api.queries.usage import when
from api.schemas import CurrentUsage, UsageHistory, parse_time

HOURLY_SPAN = timedelta(hours=48)


@dataclass(frozen=True)
class ChartRange:
    granularity: Granularity
    since: datetime
    until: datetime


@dataclass(frozen=True)
class UsageChart:
    metric: str
    unit: str
    history: UsageHistory


@dataclass(frozen=True)
class UsageCharts:
    range: ChartRange
    charts: list[UsageChart]

    def data(self) -> list[dict[str, Any]]:
        """What the chart script draws: the range and each metric's buckets as the API
        encodes them (the page embeds it as JSON)."""
        return [
            {
                "metric": chart.metric,
                "unit": chart.unit,
                "granularity": self.range.granularity,
                "since": when(self.range.since),
                "until": when(self.range.until),
                "buckets": msgspec.to_builtins(chart.history.buckets),
            }
            for chart in self.charts
        ]


def chart_range(granularity: str, usage: CurrentUsage, now: datetime) -> ChartRange:
    """The range a chart of ``granularity`` shows; a 422 on ``granularity`` otherwise."""
    unit = granularity_of(granularity)
    if unit == "hour":
        until = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        return ChartRange(unit, until - HOURLY_SPAN, until)
    start = parse_time("periodStart", usage.period_start)
    end = parse_time("periodEnd", usage.period_end)
    return ChartRange(unit, max(start, end - MAX_HISTORY), end)


def usage_charts(
    stores: Stores,
    tenant_id: UUID,
    usage: CurrentUsage,
    granularity: str,
    units: dict[str, str],
    now: datetime,
) -> UsageCharts:
    """One chart per metric of ``usage`` (``/v1/usage/current``'s counters)."""
    shown = chart_range(granularity, usage, now)
    charts = [
        UsageChart(
            counter.metric,
            units.get(counter.metric, ""),
            usage_history(
                stores,
                tenant_id,
                usage.customer_ref,
                counter.metric,
                shown.granularity,
                shown.since,
                shown.until,
            ),
        )
        for counter in usage.counters
    ]
    return UsageCharts(shown, charts)
