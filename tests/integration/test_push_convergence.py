"""Parity under faults: Stripe errors, timeouts after writes, lost and repeated messages.

A randomized workload over several customers and metrics is pushed through
the real sweep and actor (the broker's queue drained by hand, so that the
test decides which messages are lost and which arrive twice), while the
emulator fails 30% of meter event calls. It must converge: Stripe's total
equals the counter for every customer × meter × period — with one v1 call per
push, and with the sweep's batches over the v2 stream (whose faults include
calls that time out after Stripe applied them).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from dramatiq import Message
from dramatiq.brokers.stub import StubBroker

from adapters.metrics import Metrics
from adapters.persistence import Stores, open_stores
from adapters.push_worker import QUEUE, PushRetryError, PushWorker
from adapters.settings import Settings
from adapters.stripe_gateway import SdkStripeGateway
from domain.mappings import MeterMapping
from domain.meters import Aggregation, MetricDefinition
from domain.pushing import Target
from stripe_emulator.testing import TEST_API_KEY, RunningEmulator
from tests.conftest import FakeClock
from tests.helpers import submission

CUSTOMERS = [f"cus_{n}" for n in range(6)]
METRICS = {"api_calls": (Aggregation.SUM, "sum"), "seats": (Aggregation.MAX, "last")}


@pytest.fixture(params=["v1", "stream"])
def setup(
    request: pytest.FixtureRequest,
    settings: Settings,
    clock: FakeClock,
    emulator: RunningEmulator,
) -> Iterator[tuple[Stores, PushWorker, StubBroker, dict[tuple[str, str], tuple[str, str]]]]:
    clock.now = clock.now.replace(day=10)
    emulator.set_now(int(clock.now.timestamp()), frozen=True)
    stores = open_stores(settings, clock)
    gateway = SdkStripeGateway(TEST_API_KEY, emulator.url, max_network_retries=0, timeout_seconds=5)
    tenant = stores.app.register_tenant("acme", "Acme").id
    meters: dict[tuple[str, str], tuple[str, str]] = {}
    for metric, (aggregation, formula) in METRICS.items():
        stores.app.declare_metric(
            tenant, MetricDefinition(metric, aggregation, allow_negative=True)
        )
        meter = gateway.create_meter(metric, f"sm_{metric}", formula)
        stores.app.map_meter(tenant, MeterMapping(metric, meter.id, meter.event_name, formula))
        for customer in CUSTOMERS:
            meters[(customer, metric)] = (meter.id, "")
    for customer in CUSTOMERS:
        stripe_id = emulator.client().v1.customers.create({"name": customer}).id
        stores.app.map_customer(tenant, customer, stripe_id, None)
        for metric in METRICS:
            meters[(customer, metric)] = (meters[(customer, metric)][0], stripe_id)
    broker = StubBroker()
    # 12 periods: the stream variant batches any sweep that finds 2 or more behind.
    min_batch = 10**9 if request.param == "v1" else 2
    worker = PushWorker(
        stores, {Target.LIVE: gateway}, Metrics(), broker, clock=clock, stream_min_batch=min_batch
    )
    # Lost messages are re-sent once the guard time passes; here it passes at once.
    worker.resend_after = 0
    yield stores, worker, broker, meters
    stores.close()


def drain(broker: StubBroker, worker: PushWorker, rng: random.Random) -> None:
    """Deliver the queued messages, losing 20% and repeating 20% of them."""
    queue = broker.queues[QUEUE]
    messages: list[Any] = []
    while not queue.empty():
        messages.append(queue.get_nowait())
    for raw in messages:
        message = Message.decode(raw)
        roll = rng.random()
        if roll < 0.2:
            continue
        for _ in range(2 if roll > 0.8 else 1):
            # On a retry error Dramatiq would retry; the next sweep finds it anyway.
            with contextlib.suppress(PushRetryError):
                broker.get_actor(message.actor_name).fn(*message.args)


def test_a_faulty_world_converges_to_parity(
    setup: Any, emulator: RunningEmulator, clock: FakeClock
) -> None:
    stores, worker, broker, meters = setup
    rng = random.Random(20261125)
    emulator.set_fault_rates(
        {
            "500": 0.06,
            "503": 0.06,
            "timeout_after_write": 0.08,
            "reset": 0.05,
            "partial_then_500": 0.05,
        },
        seed=7,
    )
    tenant = stores.app.tenant_by_slug("acme").id
    key = 0
    for _round in range(12):
        batch = []
        for _ in range(rng.randint(5, 25)):
            key += 1
            customer = rng.choice(CUSTOMERS)
            metric = rng.choice(list(METRICS))
            quantity = (
                Decimal(rng.randint(-20, 400)) / 10
                if metric == "api_calls"
                else Decimal(rng.randint(0, 50))
            )
            batch.append(
                submission(
                    tenant, quantity, clock.now, key=f"k{key}", customer=customer, metric=metric
                )
            )
        stores.app.usage.record_usage(batch)
        stores.views.runner.catch_up()
        worker.sweep()
        drain(broker, worker, rng)
        clock.advance(seconds=30)
        emulator.set_now(int(clock.now.timestamp()), frozen=True)

    retried = worker.metrics.registry.get_sample_value(
        "stripemeter_pushes_total", {"target": "live", "outcome": "retry"}
    )
    assert retried and retried > 3  # the faults really hit the pushes
    stream_calls = worker.metrics.registry.get_sample_value(
        "stripemeter_stream_calls_total", {"target": "live"}
    )
    if worker.stream_min_batch > len(meters):
        assert stream_calls is None
    else:
        assert stream_calls and stream_calls > 3
        faulted = {f["path"] for f in emulator.faults.describe()["injected"]}  # type: ignore[union-attr]
        assert "/v2/billing/meter_event_stream" in faulted

    emulator.clear_faults()
    for _ in range(10):  # faults over: the sweep must finish the job by itself
        stores.views.runner.catch_up()
        if worker.sweep().sent == 0:
            break
        drain(broker, worker, random.Random(0))
    assert worker.sweep().unpushed == 0

    gateway: SdkStripeGateway = worker.pusher.gateways[Target.LIVE]  # type: ignore[assignment]
    for (customer, metric), (meter_id, stripe_id) in meters.items():
        period = stores.app.period_for(tenant, customer, clock.now)
        counters = stores.views.counters.counters(tenant, customer_ref=customer, metric=metric)
        local = int(counters[0].value) if counters else 0  # whole units, toward zero
        stripe_total = gateway.meter_total(meter_id, stripe_id, period.start, period.end)
        assert stripe_total == local, (customer, metric)
