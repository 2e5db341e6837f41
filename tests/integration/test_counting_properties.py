"""Property: whatever the stream, counters equal the sum over unique events.

Random streams mix duplicates (a key sent again with its same content),
arbitrary order of event times, events for a past period inside and past the
lateness window (carried into the open period), and restarts (new app and
runner over the same files, part-way through). Runs on SQLite, a fresh folder per example.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.persistence import open_stores
from adapters.settings import Settings
from domain.ingest import UsageSubmission
from domain.meters import Aggregation, MetricDefinition
from domain.periods import period_of
from tests.conftest import FakeClock
from tests.helpers import submission

NOW = datetime(2026, 4, 1, 20, 0, tzinfo=UTC)  # March ended 20 h ago

content = st.tuples(
    st.sampled_from(["c1", "c2"]),
    st.integers(-3 * 24, 0),  # hours before NOW: reaches back into March
    st.decimals(min_value=0, max_value=1000, places=3, allow_nan=False, allow_infinity=False),
)
step = st.one_of(st.integers(0, 11), st.just("restart"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    contents=st.lists(content, min_size=12, max_size=12),
    steps=st.lists(step, min_size=1, max_size=40),
    batch=st.integers(1, 7),
    window_hours=st.sampled_from([0, 48]),
)
def test_counters_equal_the_sum_over_unique_events(
    contents: list[tuple[str, int, Decimal]],
    steps: list[int | str],
    batch: int,
    window_hours: int,
) -> None:
    folder = Path(tempfile.mkdtemp())
    clock = FakeClock(NOW)
    stores = open_stores(Settings(data_dir=folder), clock)
    try:
        tenant = stores.app.register_tenant("acme", "Acme").id
        stores.app.declare_metric(
            tenant,
            MetricDefinition("api_calls", Aggregation.SUM, lateness_seconds=window_hours * 3600),
        )
        expected: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
        seen: set[int] = set()
        pending: list[UsageSubmission] = []
        for item in steps:
            if item == "restart":
                stores.app.usage.record_usage(pending)
                pending = []
                stores.views.runner.run_once()
                stores.close()
                stores = open_stores(Settings(data_dir=folder), clock)
                continue
            assert isinstance(item, int)
            customer, hours, quantity = contents[item]
            occurred_at = NOW + timedelta(hours=hours)
            pending.append(
                submission(tenant, quantity, occurred_at, key=f"k{item}", customer=customer)
            )
            if item not in seen:
                seen.add(item)
                period = period_of(occurred_at)
                if period.end + timedelta(hours=window_hours) > NOW:
                    expected[(customer, period.key)] += quantity
                else:  # carried into the open period as a correction (default policy)
                    expected[(customer, period_of(NOW).key)] += quantity
            if len(pending) >= batch:
                stores.app.usage.record_usage(pending)
                pending = []
        stores.app.usage.record_usage(pending)
        stores.views.runner.catch_up()
        counted = {
            (c.customer_ref, c.period): c.value
            for c in stores.views.counters.counters(tenant)
            if c.tally.event_count
        }
        assert counted == dict(expected)
    finally:
        stores.close()
        shutil.rmtree(folder, ignore_errors=True)
