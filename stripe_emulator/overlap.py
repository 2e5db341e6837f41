"""Meter-event calls in flight at once, per customer × event name.

Stripe allows one concurrent meter-event call per customer and meter. The
emulator counts rather than refuses, so that a test or a benchmark can tell
whether a client (several worker processes, say) ever overlapped two calls
for the same customer and meter: a call is in flight from the moment its
request arrives until its answer leaves, whatever the answer. A stream call
names every (customer, event name) among its events; each counts once per
call.

``EmulatorConfig.meter_event_latency_seconds`` makes every such call take
that long, so that calls a client fails to keep apart really do overlap.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from typing import Any

from stripe_emulator.meters import active_meter_for
from stripe_emulator.state import State

METER_EVENT_PATHS = frozenset(
    ("/v1/billing/meter_events", "/v2/billing/meter_events", "/v2/billing/meter_event_stream")
)

CallKey = tuple[str, str]  # (customer id, event name)


def call_keys(state: State, path: str, params: Any) -> set[CallKey]:
    """The (customer, event name) pairs a meter-event call names, as the meters map them.

    Events whose meter or customer cannot be told are left out: Stripe refuses
    them, and they write nothing.
    """
    if not isinstance(params, dict):
        return set()
    raw = params.get("events") if path.endswith("_stream") else [params]
    events = raw if isinstance(raw, list) else []
    keys: set[CallKey] = set()
    with state.lock:
        for event in events:
            if not isinstance(event, dict):
                continue
            event_name = str(event.get("event_name") or "")
            meter = active_meter_for(state, event_name)
            payload = event.get("payload")
            if meter is None or not isinstance(payload, dict):
                continue
            customer = payload.get(meter["customer_mapping"]["event_payload_key"])
            if customer not in (None, ""):
                keys.add((str(customer), event_name))
    return keys


class InFlightCalls:
    """How many calls each key has in flight, the most it ever had, and how often it overlapped."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: Counter[CallKey] = Counter()
        self._peak: Counter[CallKey] = Counter()
        self._overlaps: Counter[CallKey] = Counter()
        self._calls = 0

    def enter(self, keys: Iterable[CallKey]) -> None:
        with self._lock:
            self._calls += 1
            for key in keys:
                self._current[key] += 1
                if self._current[key] > 1:
                    self._overlaps[key] += 1  # this call started while another was in flight
                self._peak[key] = max(self._peak[key], self._current[key])

    def leave(self, keys: Iterable[CallKey]) -> None:
        with self._lock:
            for key in keys:
                self._current[key] -= 1
                if self._current[key] <= 0:
                    del self._current[key]

    def reset(self) -> None:
        with self._lock:
            self._peak.clear()
            self._overlaps.clear()
            self._calls = 0  # calls in flight now still leave; their keys are forgotten

    def summary(self) -> dict[str, int]:
        with self._lock:
            return {
                "calls": self._calls,
                "keys": len(self._peak),
                "max_concurrent": max(self._peak.values(), default=0),
                "overlaps": sum(self._overlaps.values()),
            }

    def describe(self) -> dict[str, Any]:
        """The summary, and every key that ever had two calls in flight at once."""
        summary: dict[str, Any] = self.summary()
        with self._lock:
            summary["overlapping"] = [
                {
                    "customer": customer,
                    "event_name": event_name,
                    "max_concurrent": self._peak[(customer, event_name)],
                    "overlaps": count,
                }
                for (customer, event_name), count in sorted(self._overlaps.items())
            ]
        return summary
