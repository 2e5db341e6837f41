"""The widget and the admin UI in a real browser: Debian's Chromium
(``/usr/bin/chromium``) driven by Playwright. Skipped locally when Chromium is
missing; a failure under CI, where .ci/run installs it. Nothing here downloads a
browser (never ``playwright install``).

Each test module gets its own real service (``service``: uvicorn on a free port,
SQLite, a clock the test moves) and, with ``usage``, the same priced data.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from adapters.settings import Settings, StripeSettings
from api.app import create_app
from domain.meters import Aggregation, MetricDefinition
from domain.tenancy import Scope
from stripe_emulator.testing import TEST_API_KEY, RunningEmulator
from tests.conftest import FakeClock

CHROMIUM = Path("/usr/bin/chromium")
MAPPED = datetime(2026, 3, 10, 12, tzinfo=UTC)  # cus_a's subscription starts
NOW = datetime(2026, 3, 15, 12, tzinfo=UTC)


# Package scope, not session: Playwright's sync API keeps an event loop running
# in this thread while it lives, and every later asyncio.run() would refuse.
@pytest.fixture(scope="package")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("Chromium is required under CI (.ci/run installs Debian's chromium)")
        pytest.skip("Chromium is not installed at /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Service:
    url: str
    app: Any
    clock: FakeClock
    admin: str
    minter: str

    def call(self, method: str, path: str, key: str | None = None, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {key or self.admin}"}
        return httpx.request(method, self.url + path, headers=headers, timeout=10, **kwargs)

    def settle(self) -> None:
        self.app.state.services.stores.views.runner.catch_up()

    def mint(self, customer: str, lifetime: int = 900) -> str:
        answer = self.call(
            "POST",
            "/v1/widget-tokens",
            self.minter,
            json={"customerRef": customer, "lifetimeSeconds": lifetime},
        )
        assert answer.status_code == 201, answer.text
        token: str = answer.json()["token"]
        return token


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, emulator_server: RunningEmulator
) -> Iterator[Service]:
    """The real service on a free port: uvicorn, the HTTP stack a deployment runs, with
    Stripe on the emulator (which prices cus_a's API calls, see ``usage``)."""
    clock = FakeClock(MAPPED)
    emulator_server.reset()
    emulator_server.set_now(int(MAPPED.timestamp()), frozen=True)
    stripe = StripeSettings(
        secret_key=TEST_API_KEY, api_base=emulator_server.url, max_network_retries=0
    )
    settings = Settings(data_dir=tmp_path_factory.mktemp("service") / "data", stripe=stripe)
    settings = dataclasses.replace(settings, embedded_worker=False, writer_mode="thread")
    app = create_app(settings, clock)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the service did not start"
        time.sleep(0.02)
    try:
        stores = app.state.services.stores
        tenant = stores.app.register_tenant("acme", "Acme").id
        stores.app.declare_metric(tenant, MetricDefinition("api_calls", Aggregation.SUM, "calls"))
        stores.app.declare_metric(tenant, MetricDefinition("storage_gb", Aggregation.MAX, "GB"))
        admin = stores.app.issue_api_key(tenant, frozenset({Scope.ADMIN})).secret
        minter = stores.app.issue_api_key(tenant, frozenset({Scope.WIDGET_MINT})).secret
        yield Service(f"http://127.0.0.1:{port}", app, clock, admin, minter)
    finally:
        server.should_exit = True
        thread.join(timeout=20)


@pytest.fixture(scope="module")
def usage(service: Service, emulator_server: RunningEmulator) -> None:
    """cus_a subscribed on Stripe (at MAPPED) to a price per API call, storage unpriced;
    cus_b not on Stripe. Their usage, committed and projected; the clock at NOW."""
    stripe = emulator_server.client()
    mapping = service.call(
        "POST", "/v1/mappings", json={"metric": "api_calls", "createMeter": True}
    )
    assert mapping.status_code == 201, mapping.text
    price = stripe.v1.prices.create(
        {
            "currency": "usd",
            "product_data": {"name": "API calls"},
            "recurring": {
                "interval": "month",
                "usage_type": "metered",
                "meter": mapping.json()["stripeMeterId"],
            },
            "unit_amount_decimal": "0.125",
        }
    )
    customer = stripe.v1.customers.create({"name": "Customer A"}).id
    stripe.v1.subscriptions.create({"customer": customer, "items": [{"price": price.id}]})
    mapped = service.call(
        "POST", "/v1/customers", json={"customerRef": "cus_a", "stripeCustomerId": customer}
    )
    assert mapped.status_code == 201, mapped.text
    service.clock.now = NOW
    emulator_server.set_now(int(NOW.timestamp()), frozen=True)

    def used(customer: str, metric: str, quantity: float, ts: str) -> dict[str, Any]:
        return {"metric": metric, "customerRef": customer, "quantity": quantity, "ts": ts}

    events = [
        used("cus_a", "api_calls", 1200, "2026-03-11T09:00:00Z"),
        used("cus_a", "api_calls", 34.5, "2026-03-14T09:00:00Z"),
        used("cus_a", "storage_gb", 7.25, "2026-03-12T09:00:00Z"),
        used("cus_b", "api_calls", 987654, "2026-03-05T09:00:00Z"),
    ]
    answer = service.call("POST", "/v1/events/ingest", json={"events": events})
    assert answer.status_code == 200 and answer.json()["accepted"] == 4, answer.text
    service.settle()
