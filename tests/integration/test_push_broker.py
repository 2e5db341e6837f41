"""The push loop for real: Dramatiq workers on Redis, a timed sweep, the emulator over HTTP."""

from __future__ import annotations

import dataclasses
import os
import time
from decimal import Decimal

import pytest
import redis

from adapters.background import Background
from adapters.metrics import Metrics
from adapters.persistence import open_stores
from adapters.settings import Settings, StripeSettings
from domain.mappings import MeterMapping
from domain.meters import Aggregation, MetricDefinition
from domain.pushing import Target
from stripe_emulator.testing import TEST_API_KEY, RunningEmulator
from tests.conftest import FakeClock
from tests.helpers import submission

REDIS_URL = os.environ.get("STRIPEMETER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
def redis_url() -> str:
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        client.flushdb()
        client.close()
    except redis.ConnectionError as error:
        if os.environ.get("CI"):
            pytest.fail(f"Redis is required under CI and is unreachable: {error}")
        pytest.skip(f"Redis unreachable: {error}")
    return REDIS_URL


def test_workers_on_redis_bring_stripe_to_the_counter(
    settings: Settings, clock: FakeClock, emulator: RunningEmulator, redis_url: str
) -> None:
    clock.now = clock.now.replace(day=10)
    emulator.set_now(int(clock.now.timestamp()), frozen=True)
    settings = dataclasses.replace(
        settings,
        broker_url=redis_url,
        push_interval_seconds=0.2,
        stripe=StripeSettings(TEST_API_KEY, emulator.url, max_network_retries=0, timeout_seconds=5),
    )
    stores = open_stores(settings, clock)
    background = Background(
        stores, settings, Metrics(), clock, run_projections=True, run_pushes=True
    )
    gateway = background.gateways[Target.LIVE]
    tenant = stores.app.register_tenant("acme", "Acme").id
    stores.app.declare_metric(tenant, MetricDefinition("api_calls", Aggregation.SUM))
    meter = gateway.create_meter("api_calls", "api_calls", "sum")
    stores.app.map_meter(tenant, MeterMapping("api_calls", meter.id, "api_calls", "sum"))
    customers = {}
    for n in range(3):
        customers[f"cus_{n}"] = emulator.client().v1.customers.create({}).id
        stores.app.map_customer(tenant, f"cus_{n}", customers[f"cus_{n}"], None)
    background.start()
    try:
        for n in range(60):
            stores.app.usage.record_usage(
                [
                    submission(
                        tenant, Decimal(n % 7), clock.now, key=f"k{n}", customer=f"cus_{n % 3}"
                    )
                ]
            )
        expected = {c: sum(n % 7 for n in range(60) if n % 3 == i) for i, c in enumerate(customers)}
        period = stores.app.period_for(tenant, "cus_0", clock.now)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            seen = {
                ref: gateway.meter_total(meter.id, stripe_id, period.start, period.end)
                for ref, stripe_id in customers.items()
            }
            if seen == expected:
                break
            time.sleep(0.2)
        assert seen == expected
    finally:
        background.stop()
        stores.close()
