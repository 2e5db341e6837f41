"""The emulator's in-memory account: every object, behind one lock.

Handlers run while holding ``State.lock`` so each request sees and leaves a
consistent account; the webhook thread only reads queued, already-serialised
events.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stripe_emulator.clock import EmulatorClock
from stripe_emulator.config import EmulatorConfig
from stripe_emulator.ids import new_id

Obj = dict[str, Any]
API_VERSION = "2026-10-28.endive"


@dataclass
class MeterEventRecord:
    """A meter event as stored, with the times the emulator needs to judge it."""

    identifier: str
    event_name: str
    meter_id: str
    customer_id: str
    value: int
    timestamp: int
    received_at: int
    """Receipt in the customer's time (test clock or wall clock): dedup and cancel windows."""
    visible_after: float
    """Monotonic wall time from which summaries and previews may count it."""
    payload: dict[str, str]
    source: str
    cancelled: bool = False

    def to_json(self) -> Obj:
        return {
            "identifier": self.identifier,
            "event_name": self.event_name,
            "meter": self.meter_id,
            "customer": self.customer_id,
            "value": self.value,
            "timestamp": self.timestamp,
            "received_at": self.received_at,
            "payload": self.payload,
            "source": self.source,
            "cancelled": self.cancelled,
        }


@dataclass
class State:
    config: EmulatorConfig
    clock: EmulatorClock = field(default_factory=EmulatorClock)
    lock: threading.RLock = field(default_factory=threading.RLock)
    customers: dict[str, Obj] = field(default_factory=dict)
    products: dict[str, Obj] = field(default_factory=dict)
    prices: dict[str, Obj] = field(default_factory=dict)
    meters: dict[str, Obj] = field(default_factory=dict)
    test_clocks: dict[str, Obj] = field(default_factory=dict)
    subscriptions: dict[str, Obj] = field(default_factory=dict)
    invoices: dict[str, Obj] = field(default_factory=dict)
    invoice_plans: dict[str, Obj] = field(default_factory=dict)
    """Per invoice, what it bills (periods, items) and when it finalises: not API fields."""
    webhook_endpoints: dict[str, Obj] = field(default_factory=dict)
    events: dict[str, Obj] = field(default_factory=dict)
    sessions: dict[str, Obj] = field(default_factory=dict)
    meter_events: list[MeterEventRecord] = field(default_factory=list)
    by_identifier: dict[str, MeterEventRecord] = field(default_factory=dict)
    error_reports: list[Obj] = field(default_factory=list)
    listeners: list[Callable[[Obj], None]] = field(default_factory=list)

    def reset(self) -> None:
        """Forget every object; configuration, clock and listeners stay."""
        for store in (
            self.customers, self.products, self.prices, self.meters, self.test_clocks,
            self.subscriptions, self.invoices, self.invoice_plans, self.webhook_endpoints,
            self.events, self.sessions, self.by_identifier,
        ):  # fmt: skip
            store.clear()
        self.meter_events.clear()
        self.error_reports.clear()

    def now_on(self, test_clock: str | None) -> int:
        """The current time of a test clock, or the wall clock for ``None``."""
        if test_clock is not None and test_clock in self.test_clocks:
            return int(self.test_clocks[test_clock]["frozen_time"])
        return self.clock.now()

    def now_for_customer(self, customer_id: str | None) -> int:
        customer = self.customers.get(customer_id or "")
        return self.now_on(customer.get("test_clock") if customer else None)

    def emit(
        self,
        event_type: str,
        obj: Obj,
        *,
        test_clock: str | None = None,
        previous_attributes: Obj | None = None,
    ) -> Obj:
        """Record a Stripe ``Event`` and hand it to listeners (webhook delivery).

        ``previous_attributes``: for an ``*.updated`` event, the changed fields' old values.
        """
        data: Obj = {"object": obj}
        if previous_attributes is not None:
            data["previous_attributes"] = previous_attributes
        event: Obj = {
            "id": new_id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": self.now_on(test_clock),
            "data": data,
            "livemode": False,
            "pending_webhooks": 0,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
        }
        self.events[event["id"]] = event
        for listener in self.listeners:
            listener(event)
        return event


def monotonic() -> float:
    return time.monotonic()
