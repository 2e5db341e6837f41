"""Stress switches: the rate limiter and injected faults.

Faults come from two sources, checked in order: scripted rules ("the next N
requests matching P get X") and per-kind random rates drawn from a seeded RNG,
so a failing reliability run can be replayed exactly.

Fault kinds:
- ``500`` / ``503``: a Stripe ``api_error`` with ``Stripe-Should-Retry: true``;
  the request is not applied.
- ``reset``: the connection is dropped without any response; not applied.
- ``timeout_after_write``: the request *is* applied (and its idempotent result
  saved), then the connection hangs past the client's timeout and is dropped —
  the case that makes a naive client count twice.
- ``partial_then_500``: a v2 stream call applies the first half of its events
  (rounded up), then answers 500 with ``Stripe-Should-Retry: true`` — a call
  that failed halfway, so that a client cannot tell which of its events count.
  Any other request has nothing to split: it answers 500 and is not applied.
"""

from __future__ import annotations

import random
import re
import threading
import time
from dataclasses import dataclass

FAULT_KINDS = ("500", "503", "reset", "timeout_after_write", "partial_then_500")


@dataclass
class FaultRule:
    kind: str
    path: str | None = None
    """Regular expression searched in the request path; None matches every path."""
    method: str | None = None
    remaining: int | None = 1
    """Requests still to hit; None keeps the rule until faults are cleared."""

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method:
            return False
        return self.path is None or re.search(self.path, path) is not None

    def to_json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "path": self.path,
            "method": self.method,
            "remaining": self.remaining,
        }


class Faults:
    def __init__(self, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self.rules: list[FaultRule] = []
        self.rates: dict[str, float] = {}
        self.injected: list[dict[str, str]] = []

    def script(
        self,
        kind: str,
        *,
        path: str | None = None,
        method: str | None = None,
        count: int | None = 1,
    ) -> FaultRule:
        _check_kind(kind)
        rule = FaultRule(kind, path, method, count)
        with self._lock:
            self.rules.append(rule)
        return rule

    def set_rates(self, rates: dict[str, float], *, seed: int | None = None) -> None:
        for kind, rate in rates.items():
            _check_kind(kind)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"fault rate must be within [0, 1], got {rate}")
        with self._lock:
            self.rates = dict(rates)
            if seed is not None:
                self._rng = random.Random(seed)

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self.rates = {}

    def decide(self, method: str, path: str) -> str | None:
        """The fault to inject into this request, if any (consumes scripted rules)."""
        with self._lock:
            kind = self._scripted(method, path) or self._random()
            if kind is not None:
                self.injected.append({"kind": kind, "method": method, "path": path})
            return kind

    def _scripted(self, method: str, path: str) -> str | None:
        for rule in self.rules:
            if rule.matches(method, path):
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        self.rules.remove(rule)
                return rule.kind
        return None

    def _random(self) -> str | None:
        for kind, rate in self.rates.items():
            if rate > 0 and self._rng.random() < rate:
                return kind
        return None

    def describe(self) -> dict[str, object]:
        with self._lock:
            return {
                "rules": [rule.to_json() for rule in self.rules],
                "rates": dict(self.rates),
                "injected": list(self.injected),
            }


def _check_kind(kind: str) -> None:
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")


class RateLimiter:
    """At most ``limit`` requests per wall-clock second (fixed window); 0 = off."""

    def __init__(self, limit: int) -> None:
        self._lock = threading.Lock()
        self.limit = limit
        self._window = 0
        self._count = 0
        self.rejected = 0

    def allow(self) -> bool:
        with self._lock:
            if self.limit <= 0:
                return True
            window = int(time.monotonic())
            if window != self._window:
                self._window, self._count = window, 0
            self._count += 1
            if self._count > self.limit:
                self.rejected += 1
                return False
            return True
