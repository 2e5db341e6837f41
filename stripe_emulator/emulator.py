"""The composition root: one emulated Stripe account and its control handle.

``Emulator`` wires state, router, stress switches and webhook delivery
together, exposes the ASGI app (``emulator.app``) and is also the Python-side
handle tests use to steer faults, clocks and lag and to inspect raw state. The
``/_emulator`` HTTP API calls the same methods.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

from stripe_emulator import (
    account,
    billing_cycle,
    catalog,
    customers,
    expand,
    invoices,
    meter_events,
    meters,
    streams,
    subscriptions,
    summaries,
    test_clocks,
    webhooks,
)
from stripe_emulator.app import EmulatorApp
from stripe_emulator.config import EmulatorConfig
from stripe_emulator.delivery import WebhookDispatcher
from stripe_emulator.faults import Faults, RateLimiter
from stripe_emulator.idempotency import IdempotencyStore
from stripe_emulator.overlap import InFlightCalls
from stripe_emulator.request_log import RequestLog
from stripe_emulator.routing import ApiRequest, ApiResponse, Router
from stripe_emulator.state import Obj, State

_MODULES = (
    account, customers, catalog, meters, meter_events, streams, summaries,
    subscriptions, invoices, billing_cycle, test_clocks, webhooks,
)  # fmt: skip


def build_router() -> Router:
    router = Router()
    for module in _MODULES:
        module.register(router)
    return router


class Emulator:
    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.state = State(self.config)
        self.router = build_router()
        self.faults = Faults(self.config.fault_seed)
        self.rate_limiter = RateLimiter(self.config.rate_limit)
        self.idempotency = IdempotencyStore()
        # Requests received by the meter-event endpoints (v1 calls, v2 sessions and stream
        # calls), whatever their answer: what a push costs in Stripe calls.
        self.meter_event_calls: collections.Counter[str] = collections.Counter()
        self.in_flight = InFlightCalls()
        # Requests per rate-limit window and route, and how many got 429 (request_log.py).
        self.requests = RequestLog()
        self.webhooks = WebhookDispatcher(self.state, self.config)
        self.state.listeners.append(self.webhooks.on_event)
        self.app = EmulatorApp(self)

    def dispatch(self, request: ApiRequest) -> Obj | ApiResponse:
        """Run one Stripe API request against the account, clocks brought up to date first."""
        handler, args = self.router.match(request.method, request.path)
        request.args = args
        wanted = expand.expansions(request.params) if request.path.startswith("/v1/") else None
        with self.state.lock:
            billing_cycle.tick(self.state)
            result = handler(self.state, request)
            if wanted is None:
                return result
            # Shaped under the lock: a copy of the state as it is, includable fields left out.
            if isinstance(result, ApiResponse):
                return dataclasses.replace(result, body=expand.shaped(result.body, wanted))
            shaped: Obj = expand.shaped(result, wanted)
            return shaped

    # -- stress switches -------------------------------------------------------------
    def set_rate_limit(self, per_second: int) -> None:
        """Requests per second before 429s; 0 turns the limiter off."""
        self.config.rate_limit = per_second
        self.rate_limiter.limit = per_second

    def set_summary_lag(self, seconds: float) -> None:
        """Delay (wall seconds) before new meter events show in summaries/previews."""
        self.config.summary_lag_seconds = seconds

    def fail_next(
        self, kind: str, *, path: str | None = None, method: str | None = None, count: int = 1
    ) -> None:
        """Script a fault for the next ``count`` requests whose path matches ``path``."""
        self.faults.script(kind, path=path, method=method, count=count)

    def set_fault_rates(self, rates: dict[str, float], *, seed: int | None = None) -> None:
        """Inject each fault kind into that fraction of requests (seeded RNG)."""
        self.faults.set_rates(rates, seed=seed)

    def clear_faults(self) -> None:
        self.faults.clear()

    def configure(self, **changes: Any) -> EmulatorConfig:
        """Change any :class:`EmulatorConfig` field at runtime."""
        names = {f.name for f in dataclasses.fields(EmulatorConfig)}
        unknown = set(changes) - names
        if unknown:
            raise ValueError(f"unknown settings: {sorted(unknown)}")
        for name, value in changes.items():
            setattr(self.config, name, value)
        self.rate_limiter.limit = self.config.rate_limit
        return self.config

    # -- time ------------------------------------------------------------------------
    def now(self) -> int:
        return self.state.clock.now()

    def set_now(self, timestamp: int, *, frozen: bool = False) -> None:
        """Move the wall clock (objects without a test clock) and bill what came due."""
        self.state.clock.set(timestamp, frozen=frozen)
        self.tick()

    def advance(self, seconds: int) -> None:
        self.state.clock.advance(seconds)
        self.tick()

    def use_real_time(self) -> None:
        """Put the wall clock back on real time (undo ``set_now``/``advance``)."""
        self.state.clock.reset()

    def tick(self) -> None:
        with self.state.lock:
            billing_cycle.tick(self.state)

    # -- inspection ------------------------------------------------------------------
    def meter_events(
        self, *, customer: str | None = None, meter: str | None = None
    ) -> list[dict[str, Any]]:
        """Every stored meter event (cancelled ones too), oldest first."""
        with self.state.lock:
            return [
                r.to_json()
                for r in self.state.meter_events
                if (customer is None or r.customer_id == customer)
                and (meter is None or r.meter_id == meter)
            ]

    def totals(self) -> list[dict[str, Any]]:
        """Per customer and meter: the aggregate of all live events, ignoring lag."""
        with self.state.lock:
            groups: dict[tuple[str, str], list[Any]] = {}
            for record in self.state.meter_events:
                groups.setdefault((record.customer_id, record.meter_id), []).append(record)
            result = []
            for (customer, meter_id), records in groups.items():
                meter = self.state.meters[meter_id]
                formula = meter["default_aggregation"]["formula"]
                live = [r for r in records if not r.cancelled]
                result.append(
                    {
                        "customer": customer,
                        "meter": meter_id,
                        "event_name": meter["event_name"],
                        "formula": formula,
                        "value": summaries.aggregate(live, formula),
                        "events": len(live),
                        "cancelled": len(records) - len(live),
                    }
                )
            return result

    def error_reports(self) -> list[Obj]:
        with self.state.lock:
            return list(self.state.error_reports)

    def meter_event_overlaps(self) -> dict[str, Any]:
        """Meter-event calls in flight at once per customer × event name (see overlap.py)."""
        return self.in_flight.describe()

    def webhook_attempts(self) -> list[Obj]:
        return list(self.webhooks.attempts)

    def reset(self) -> None:
        """Empty the account and forget idempotency keys and faults; settings stay."""
        with self.state.lock:
            self.state.reset()
        self.idempotency.clear()
        self.meter_event_calls.clear()
        self.in_flight.reset()
        self.requests.clear()
        self.faults.clear()
        self.webhooks.clear()

    def describe(self) -> dict[str, Any]:
        with self.state.lock:
            counts = {
                name: len(getattr(self.state, name))
                for name in (
                    "customers", "products", "prices", "meters", "meter_events",
                    "subscriptions", "invoices", "test_clocks", "webhook_endpoints", "events",
                )
            }  # fmt: skip
        return {
            "clock": self.state.clock.describe(),
            "config": dataclasses.asdict(self.config),
            "counts": counts,
            "faults": self.faults.describe(),
            "rate_limited": self.rate_limiter.rejected,
            "meter_event_calls": dict(self.meter_event_calls),
            "meter_event_calls_in_flight": self.in_flight.summary(),
            "webhooks_pending": self.webhooks.pending(),
        }

    def close(self) -> None:
        self.webhooks.stop()
