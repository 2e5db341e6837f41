"""The soak's load: a steady ingest through the Python SDK, and the truth it was told.

Every event has an explicit key and is sent until the service acknowledges
it (``accepted`` or ``duplicate``): a request that fails after the SDK's
own retries is sent again on the next tick with the same bytes. The truth
is the set of acknowledged keys, each counted once with its quantity:

- ``accepted`` for a key already acknowledged is a double count (reported);
- ``duplicate`` for a key never acknowledged is an event that a lost answer
  committed (the process died after the commit): it counts, once;
- ``duplicate`` for a key already acknowledged is the duplicate this load
  sent on purpose (a fraction of every tick resends acknowledged events).

A fraction of events are *late*: stamped minutes to hours in the past, but
inside the current billing period (so they are counted there, in window,
and the truth does not depend on when periods close).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from benchmarks.report import log
from stripemeter import RetryPolicy, StripeMeterClient, StripeMeterError, UsageEvent

# metric -> aggregation: two that push deltas to a Stripe sum meter, one that pushes its value.
METRICS = {"api_calls": "sum", "requests": "count", "seats": "max"}
TICK_S = 0.2


@dataclass
class Truth:
    """What the service acknowledged, and how each answer came."""

    acknowledged: dict[str, UsageEvent] = field(default_factory=dict)
    answers: Counter[str] = field(default_factory=Counter)
    # Events: new, resent on purpose, late; sends of events not yet acknowledged; requests.
    sent: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def expected(self) -> dict[tuple[str, str, str], int]:
        """{(customer, metric, period): the counter the acknowledged events make}, whole units
        (customers are billed in calendar months: no subscription anchors them)."""
        values: dict[tuple[str, str, str], Decimal] = {}
        for event in self.acknowledged.values():
            key = (event.customer_ref, event.metric, event.ts.strftime("%Y-%m"))
            quantity = Decimal(event.quantity)
            kind = METRICS[event.metric]
            if kind == "sum":
                values[key] = values.get(key, Decimal(0)) + quantity
            elif kind == "count":
                values[key] = values.get(key, Decimal(0)) + 1
            else:
                values[key] = max(values.get(key, quantity), quantity)
        return {key: int(value) for key, value in values.items()}


class Load(threading.Thread):
    """Ingest ``rate`` events/s for ``customers`` customers until ``stop()``; then ``drain()``."""

    def __init__(
        self,
        url: str,
        key: str,
        customers: int,
        rate: float,
        duplicate_fraction: float,
        late_fraction: float,
        late_max_s: float,
        seed: int,
    ) -> None:
        super().__init__(name="soak-load", daemon=True)
        self.client = StripeMeterClient(
            key,
            base_url=url,
            timeout=10.0,
            retry=RetryPolicy(max_attempts=4, initial_delay=0.2, max_delay=2.0),
        )
        self.customers = customers
        self.rate = rate
        self.duplicate_fraction = duplicate_fraction
        self.late_fraction = late_fraction
        self.late_max_s = late_max_s
        self.rng = random.Random(seed)
        self.run_id = f"{seed}-{int(time.time())}"
        self.truth = Truth()
        self.pending: list[UsageEvent] = []  # sent, never acknowledged: sent again
        self._keys: list[str] = []  # acknowledged keys, to draw duplicates from
        self._stopping = threading.Event()
        self._made = 0

    def run(self) -> None:
        started = time.monotonic()
        tick = 0
        carry = 0.0
        while not self._stopping.is_set():
            carry += self.rate * TICK_S
            count = int(carry)
            carry -= count
            self._send([*self.pending, *self._batch(count)])
            tick += 1
            self._stopping.wait(max(0.0, started + tick * TICK_S - time.monotonic()))

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=120)

    def drain(self, timeout: float = 300.0) -> None:
        """Send what was never acknowledged until it is (the service is up by now)."""
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline:
            self._send(list(self.pending))
            if self.pending:
                time.sleep(1)
        if self.pending:
            self.truth.problems.append(f"{len(self.pending)} event(s) never acknowledged")
        self.client.close()

    # -- one tick -------------------------------------------------------------------

    def _batch(self, count: int) -> list[UsageEvent]:
        batch = []
        for _ in range(count):
            if self._keys and self.rng.random() < self.duplicate_fraction:
                batch.append(self.truth.acknowledged[self.rng.choice(self._keys)])
                self.truth.sent["resent_on_purpose"] += 1
                continue
            batch.append(self._new_event())
            self.truth.sent["new"] += 1
        return batch

    def _new_event(self) -> UsageEvent:
        metric = self.rng.choice(list(METRICS))
        customer = f"cust-{self.rng.randrange(self.customers)}"
        quantity = 1 if METRICS[metric] == "count" else self.rng.randint(1, 100)
        now = datetime.now(UTC)
        ts = now
        if self.rng.random() < self.late_fraction:
            period_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            room = (now - period_start).total_seconds() - 60
            if room > 60:
                ts = now - timedelta(seconds=self.rng.uniform(60, min(self.late_max_s, room)))
                self.truth.sent["late"] += 1
        self._made += 1
        return UsageEvent.create(
            metric, customer, quantity, ts=ts, idempotency_key=f"soak-{self.run_id}-{self._made}"
        )

    def _send(self, events: list[UsageEvent]) -> None:
        if not events:
            return
        retried = len(self.pending)
        self.truth.sent["requests"] += 1
        self.truth.sent["unacknowledged_sent_again"] += min(retried, len(events))
        try:
            result = self.client.track_batch(events)
        except StripeMeterError as error:
            # Nothing is known of these: send them again (same keys, same bytes).
            self.truth.answers[f"failed:{type(error).__name__}"] += 1
            self.pending = _unique(events)
            return
        self.pending = []
        for event, answer in zip(events, result.results, strict=True):
            self._answered(event, answer.status, answer.late)

    def _answered(self, event: UsageEvent, status: str, late: str | None) -> None:
        key = event.idempotency_key
        assert key is not None
        known = key in self.truth.acknowledged
        if status == "accepted":
            self.truth.answers["accepted"] += 1
            if known:
                self.truth.problems.append(f"{key} was accepted twice (a double count)")
                return
            self._acknowledge(key, event)
            if late is not None:
                self.truth.answers[f"late:{late}"] += 1
        elif status == "duplicate":
            if known:
                self.truth.answers["duplicate"] += 1
            else:
                # Committed by an attempt whose answer was lost (a kill): it counts, once.
                self.truth.answers["duplicate_of_lost_answer"] += 1
                self._acknowledge(key, event)
        else:
            self.truth.answers[status] += 1
            self.truth.problems.append(f"{key}: {status}")
            log(f"soak: event {key} answered {status}")

    def _acknowledge(self, key: str, event: UsageEvent) -> None:
        self.truth.acknowledged[key] = event
        self._keys.append(key)


def _unique(events: list[UsageEvent]) -> list[UsageEvent]:
    """The events once each (a duplicate resent on purpose may share a batch with itself)."""
    seen: dict[str | None, UsageEvent] = {}
    for event in events:
        seen.setdefault(event.idempotency_key, event)
    return list(seen.values())
