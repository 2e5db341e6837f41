"""An API per backend, with two tenants and keys of each scope."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from litestar.testing import TestClient

from adapters.persistence import open_stores
from adapters.settings import Settings, StripeSettings
from api.app import create_app
from domain.meters import Aggregation, MetricDefinition
from domain.tenancy import Scope
from stripe_emulator.testing import TEST_API_KEY, RunningEmulator
from tests.conftest import FakeClock


@dataclass
class Api:
    client: TestClient[Any]
    keys: dict[str, str]
    clock: FakeClock

    def call(self, method: str, path: str, key: str = "acme-all", **kwargs: Any) -> Any:
        headers = kwargs.pop("headers", {})
        if key:
            headers["Authorization"] = f"Bearer {self.keys[key]}"
        return self.client.request(method, path, headers=headers, **kwargs)

    def ingest(self, *events: dict[str, Any], key: str = "acme-all", **kwargs: Any) -> Any:
        return self.call("POST", "/v1/events/ingest", key, json={"events": list(events)}, **kwargs)

    def settle(self) -> None:
        """Wait until the projections have applied everything committed so far."""
        runner = self.client.app.state.services.stores.views.runner
        runner.catch_up()


def event(**fields: Any) -> dict[str, Any]:
    base = {
        "metric": "api_calls",
        "customerRef": "cus_1",
        "quantity": 1,
        "ts": "2026-03-15T11:00:00Z",
    }
    base.update(fields)
    return base


@pytest.fixture
def api(settings: Settings, clock: FakeClock) -> Iterator[Api]:
    yield from _api(settings, clock)


@pytest.fixture
def stripe_api(settings: Settings, clock: FakeClock, emulator: RunningEmulator) -> Iterator[Api]:
    """The API with Stripe (live and shadow) pointed at two accounts of the emulator."""
    clock.now = clock.now.replace(day=10)
    emulator.set_now(int(clock.now.timestamp()), frozen=True)
    stripe = StripeSettings(
        secret_key=TEST_API_KEY,
        api_base=emulator.url,
        test_secret_key="sk_test_shadow",
        test_api_base=emulator.url,
        max_network_retries=0,
        timeout_seconds=5,
    )
    yield from _api(dataclasses.replace(settings, stripe=stripe), clock)


WEBHOOK_SECRET = "whsec_test_reconciliation"


def stripe_signature(body: bytes, secret: str = WEBHOOK_SECRET) -> str:
    """The ``Stripe-Signature`` header Stripe would send with ``body``."""
    stamp = int(time.time())
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256)
    return f"t={stamp},v1={mac.hexdigest()}"


@pytest.fixture
def webhook_api(settings: Settings, clock: FakeClock, emulator: RunningEmulator) -> Iterator[Api]:
    """The API with live Stripe on the emulator and signed webhooks configured."""
    clock.now = clock.now.replace(day=10)
    emulator.set_now(int(clock.now.timestamp()), frozen=True)
    stripe = StripeSettings(
        secret_key=TEST_API_KEY,
        api_base=emulator.url,
        max_network_retries=0,
        timeout_seconds=5,
        webhook_secret=WEBHOOK_SECRET,
    )
    yield from _api(dataclasses.replace(settings, stripe=stripe), clock)


def _api(settings: Settings, clock: FakeClock) -> Iterator[Api]:
    stores = open_stores(settings, clock)
    keys: dict[str, str] = {}
    for slug in ("acme", "globex"):
        tenant = stores.app.register_tenant(slug, slug.title()).id
        stores.app.declare_metric(tenant, MetricDefinition("api_calls", Aggregation.SUM))
        keys[f"{slug}-all"] = stores.app.issue_api_key(tenant, frozenset({Scope.ADMIN})).secret
        keys[f"{slug}-ingest"] = stores.app.issue_api_key(tenant, frozenset({Scope.INGEST})).secret
        keys[f"{slug}-read"] = stores.app.issue_api_key(tenant, frozenset({Scope.READ})).secret
    stores.close()
    # The test drives the projection itself (settle), so that reads are deterministic.
    # In-process writer thread; the test drives projections and pushes itself.
    embedded = dataclasses.replace(settings, embedded_worker=False, writer_mode="thread")
    with TestClient(app=create_app(embedded, clock)) as client:
        yield Api(client, keys, clock)
