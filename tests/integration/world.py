"""The world of the push and reconciliation tests: one "process" against the emulator.

"Crashes" are a process dying between two steps: the test raises an
exception no code catches (``Crash``) at that step, drops every object of
that "process", and restarts from the stores alone.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import UUID

from adapters.persistence import Stores, open_stores
from adapters.settings import Settings
from adapters.stripe_gateway import SdkStripeGateway
from domain.ledger import StripeLedger, ledger_id_for
from domain.mappings import MeterMapping
from domain.meters import Aggregation, MetricDefinition
from domain.pushing import PushOutcome, PushService, Target
from domain.stripe_port import MeterEventRequest
from domain.usage import usage_period_id
from stripe_emulator.testing import TEST_API_KEY, RunningEmulator
from tests.conftest import FakeClock
from tests.helpers import submission


class Crash(BaseException):
    """The process dies here: nothing catches a BaseException on purpose."""


class CrashingGateway(SdkStripeGateway):
    """The real gateway, but the process dies just before or just after the Stripe call."""

    def __init__(self, url: str, when: str) -> None:
        super().__init__(TEST_API_KEY, url, max_network_retries=0, timeout_seconds=5)
        self.when = when

    def send_meter_event(self, request: MeterEventRequest) -> None:
        if self.when == "before":
            raise Crash
        super().send_meter_event(request)
        raise Crash


class World:
    """One "process": stores, a push service, the tenant it serves."""

    def __init__(self, settings: Settings, clock: FakeClock, emulator: RunningEmulator) -> None:
        self.settings, self.clock, self.emulator = settings, clock, emulator
        self.stores: Stores = open_stores(settings, clock)
        self.gateway = SdkStripeGateway(
            TEST_API_KEY, emulator.url, max_network_retries=0, timeout_seconds=5
        )
        self.pusher = PushService(self.stores.app, {Target.LIVE: self.gateway}, clock)

    def restart(self, gateway: SdkStripeGateway | None = None) -> None:
        self.stores.close()
        self.stores = open_stores(self.settings, self.clock)
        self.pusher = PushService(
            self.stores.app, {Target.LIVE: gateway or self.gateway}, self.clock
        )

    @property
    def tenant(self) -> UUID:
        return self.stores.app.tenant_by_slug("acme").id

    def ingest(
        self, quantity: Any, key: str, customer: str = "cus_a", metric: str = "api_calls"
    ) -> None:
        [result] = self.stores.app.usage.record_usage(
            [
                submission(
                    self.tenant,
                    Decimal(quantity),
                    self.clock.now,
                    key=key,
                    customer=customer,
                    metric=metric,
                )
            ]
        )
        assert result.outcome.value == "accepted", result

    def period_id(self, customer: str = "cus_a", metric: str = "api_calls") -> UUID:
        period = self.stores.app.period_for(self.tenant, customer, self.clock.now)
        return usage_period_id(self.tenant, customer, metric, period.key)

    def push(self, customer: str = "cus_a", metric: str = "api_calls") -> PushOutcome:
        return self.pusher.push(self.period_id(customer, metric))

    def stripe_total(self, customer: str = "cus_a", meter: str = "api_calls") -> int:
        stripe_id = self.stores.app.customer(self.tenant, customer).stripe_customer_id  # type: ignore[union-attr]
        mapping = self.stores.app.tenant(self.tenant).mappings[meter]
        period = self.stores.app.period_for(self.tenant, customer, self.clock.now)
        return self.gateway.meter_total(
            mapping.stripe_meter_id, stripe_id, period.start, period.end
        )

    def counter(self, customer: str = "cus_a", metric: str = "api_calls") -> Decimal:
        return self.stores.app.repository.get(self.period_id(customer, metric)).value  # type: ignore[no-any-return]

    def ledger(self, customer: str = "cus_a") -> StripeLedger:
        return self.stores.app.repository.get(ledger_id_for(self.period_id(customer), "live"))  # type: ignore[no-any-return]

    def map_metric(
        self, metric: str, aggregation: Aggregation, formula: str, **kwargs: Any
    ) -> None:
        app = self.stores.app
        app.declare_metric(self.tenant, MetricDefinition(metric, aggregation, **kwargs))
        meter = self.gateway.create_meter(metric, f"sm_{metric}", formula)
        app.map_meter(self.tenant, MeterMapping(metric, meter.id, meter.event_name, meter.formula))

    def map_customer(self, customer: str) -> str:
        stripe_customer = self.emulator.client().v1.customers.create({"name": customer})
        self.stores.app.map_customer(self.tenant, customer, stripe_customer.id, None)
        return str(stripe_customer.id)
