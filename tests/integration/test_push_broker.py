"""The push loop for real: Dramatiq workers on Redis and on RabbitMQ, the emulator over HTTP.

Each test runs on both brokers (the ``broker`` fixture), on a queue of its own
that is deleted afterwards.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

import pytest
from litestar.testing import TestClient

from adapters.background import Background
from adapters.metrics import Metrics
from adapters.persistence import Stores, open_stores
from adapters.push_worker import PushWorker, broker_status
from adapters.settings import Settings, StripeSettings
from api.app import create_app
from domain.mappings import MeterMapping
from domain.meters import Aggregation, MetricDefinition
from domain.pushing import Target
from domain.stripe_port import StripeGateway
from stripe_emulator.testing import TEST_API_KEY, RunningEmulator
from tests.conftest import BrokerUnderTest, FakeClock
from tests.helpers import submission

BROKER_CLASSES = {"redis": "RedisBroker", "rabbitmq": "RabbitmqBroker"}


@dataclass
class Deployment:
    stores: Stores
    background: Background
    metrics: Metrics
    gateway: StripeGateway
    meter_id: str
    customers: dict[str, str]  # our reference -> Stripe customer id

    @property
    def worker(self) -> PushWorker:
        assert self.background.push_worker is not None
        return self.background.push_worker

    def stripe_totals(self, clock: FakeClock) -> dict[str, int]:
        tenant = self.stores.app.tenant_by_slug("acme").id
        period = self.stores.app.period_for(tenant, "cus_0", clock.now)
        return {
            ref: self.gateway.meter_total(self.meter_id, stripe_id, period.start, period.end)
            for ref, stripe_id in self.customers.items()
        }


@pytest.fixture
def deployment(
    settings: Settings,
    clock: FakeClock,
    emulator: RunningEmulator,
    broker: BrokerUnderTest,
    request: pytest.FixtureRequest,
) -> Iterator[Deployment]:
    """Stores, projections and a push worker on the broker under test, three mapped customers."""
    clock.now = clock.now.replace(day=10)
    emulator.set_now(int(clock.now.timestamp()), frozen=True)
    overrides = {"push_interval_seconds": 0.2, **getattr(request, "param", {})}
    settings = dataclasses.replace(
        settings,
        **overrides,
        broker_url=broker.url,
        broker_queue=broker.queue,
        stripe=StripeSettings(TEST_API_KEY, emulator.url, max_network_retries=0, timeout_seconds=5),
    )
    stores = open_stores(settings, clock)
    metrics = Metrics()
    background = Background(stores, settings, metrics, clock, run_projections=True, run_pushes=True)
    gateway = background.gateways[Target.LIVE]
    tenant = stores.app.register_tenant("acme", "Acme").id
    stores.app.declare_metric(tenant, MetricDefinition("api_calls", Aggregation.SUM))
    meter = gateway.create_meter("api_calls", "api_calls", "sum")
    stores.app.map_meter(tenant, MeterMapping("api_calls", meter.id, "api_calls", "sum"))
    customers = {}
    for n in range(3):
        customers[f"cus_{n}"] = emulator.client().v1.customers.create({}).id
        stores.app.map_customer(tenant, f"cus_{n}", customers[f"cus_{n}"], None)
    deployed = Deployment(stores, background, metrics, gateway, meter.id, customers)
    # The worker really is on the broker under test, on this test's queue.
    assert type(deployed.worker.broker).__name__ == BROKER_CLASSES[broker.kind]
    assert deployed.worker.actor.queue_name == broker.queue
    background.start()
    try:
        yield deployed
    finally:
        background.stop()
        stores.close()


def test_workers_on_the_broker_bring_stripe_to_the_counter(
    deployment: Deployment, clock: FakeClock
) -> None:
    tenant = deployment.stores.app.tenant_by_slug("acme").id
    for n in range(60):
        deployment.stores.app.usage.record_usage(
            [submission(tenant, Decimal(n % 7), clock.now, key=f"k{n}", customer=f"cus_{n % 3}")]
        )
    expected = {f"cus_{i}": sum(n % 7 for n in range(60) if n % 3 == i) for i in range(3)}
    deadline = time.monotonic() + 30
    while (seen := deployment.stripe_totals(clock)) != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    assert seen == expected


# No timed sweep: one message.
@pytest.mark.parametrize("deployment", [{"push_interval_seconds": 3600.0}], indirect=True)
def test_a_push_stripe_refuses_is_retried_by_the_broker_after_a_delay(
    deployment: Deployment,
    clock: FakeClock,
    emulator: RunningEmulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Only Dramatiq's delayed retry (RabbitMQ: its delay queue) can deliver the push here."""
    caplog.set_level(logging.INFO, logger="dramatiq")
    tenant = deployment.stores.app.tenant_by_slug("acme").id
    deployment.stores.app.usage.record_usage(
        [submission(tenant, 5, clock.now, key="k1", customer="cus_1")]
    )
    emulator.fail_next("503", path="/v1/billing/meter_events", count=2)
    deadline = time.monotonic() + 10
    while deployment.worker.sweep().sent == 0:  # once the views show the usage
        assert time.monotonic() < deadline, "the sweep never saw the usage"
        time.sleep(0.05)
    expected = {"cus_0": 0, "cus_1": 5, "cus_2": 0}
    deadline = time.monotonic() + 20
    while (seen := deployment.stripe_totals(clock)) != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    assert seen == expected
    retries = deployment.metrics.registry.get_sample_value(
        "stripemeter_pushes_total", {"target": "live", "outcome": "retry"}
    )
    assert retries == 2
    assert_retried_quietly(caplog)


def assert_retried_quietly(caplog: pytest.LogCaptureFixture) -> None:
    """A retry Stripe's refusal asks for is a retry, not an error with a traceback."""
    dramatiq_records = [r for r in caplog.records if r.name.startswith("dramatiq")]
    assert any("Retrying message" in r.getMessage() for r in dramatiq_records)
    assert [r.getMessage() for r in dramatiq_records if r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize(
    "deployment", [{"push_interval_seconds": 3600.0, "stream_min_batch": 2}], indirect=True
)
def test_many_periods_behind_go_as_one_stream_message_that_the_broker_retries(
    deployment: Deployment,
    clock: FakeClock,
    emulator: RunningEmulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="dramatiq")
    tenant = deployment.stores.app.tenant_by_slug("acme").id
    deployment.stores.app.usage.record_usage(
        [submission(tenant, n + 1, clock.now, key=f"k{n}", customer=f"cus_{n}") for n in range(3)]
    )
    emulator.fail_next("503", path="/v2/billing/meter_event_stream")
    deadline = time.monotonic() + 10
    while deployment.worker.sweep().sent == 0:  # once the views show the usage
        assert time.monotonic() < deadline, "the sweep never saw the usage"
        time.sleep(0.05)
    expected = {"cus_0": 1, "cus_1": 2, "cus_2": 3}
    deadline = time.monotonic() + 20
    while (seen := deployment.stripe_totals(clock)) != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    assert seen == expected
    # One message for the three periods: its stream call failed, Dramatiq retried it.
    sample = deployment.metrics.registry.get_sample_value
    assert sample("stripemeter_pushes_total", {"target": "live", "outcome": "retry"}) == 3
    assert sample("stripemeter_stream_calls_total", {"target": "live"}) == 2
    assert emulator.meter_event_calls["/v2/billing/meter_event_stream"] == 2
    assert "/v1/billing/meter_events" not in emulator.meter_event_calls
    assert_retried_quietly(caplog)


def test_readiness_says_the_broker_answers(
    settings: Settings, clock: FakeClock, emulator: RunningEmulator, broker: BrokerUnderTest
) -> None:
    settings = dataclasses.replace(
        settings,
        broker_url=broker.url,
        broker_queue=broker.queue,
        writer_mode="thread",
        stripe=StripeSettings(TEST_API_KEY, emulator.url, max_network_retries=0, timeout_seconds=5),
    )
    with TestClient(app=create_app(settings, clock)) as client:
        response = client.get("/health/ready")
    assert response.status_code == 200
    assert response.json()["checks"]["broker"] == {"status": "ok", "broker": broker.kind}


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    ("scheme", "kind", "error"),
    [
        ("redis://127.0.0.1:{port}/0", "redis", "ConnectionError"),
        ("amqp://guest:guest@127.0.0.1:{port}/%2F", "rabbitmq", "AMQPConnectionError"),
    ],
)
def test_a_broker_that_does_not_answer_is_down(scheme: str, kind: str, error: str) -> None:
    started = time.monotonic()
    status = broker_status(scheme.format(port=closed_port()), timeout_seconds=1)
    assert status == {"status": "down", "broker": kind, "error": error}
    assert time.monotonic() - started < 5


def test_the_in_process_broker_is_always_up() -> None:
    assert broker_status(None) == {"status": "ok", "broker": "in-process"}
