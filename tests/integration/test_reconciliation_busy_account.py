"""A reconciliation run keeps to its pace, measured by the emulator, and outlasts a busy account.

Stripe limits the whole account, and another client of it (the worker
pushing, or its own scheduled reconciliation) can take a second's budget
while a run reads: the run's reads then meet 429s. The SDK would retry them
at once, ignoring Retry-After and going around the pace, and give up after
its retries; so today such lines end ``pending``. Every read of a run, and
every retry of one, must take a token of the run's pace instead, a 429 hold
the pace for Stripe's Retry-After, and the read be tried again: then a run
that met a busy account for a few seconds still reads every line, and the
emulator never sees more of its reads in one of its seconds than the pace
lets start (rate + burst).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from adapters.metrics import Metrics
from adapters.reconciler import Reconciler, Scope
from adapters.stripe_gateway import SdkStripeGateway
from domain.pacing import TokenBucket
from domain.stripe_port import StripeRateLimitedError
from stripe_emulator.testing import TEST_API_KEY, RunningEmulator
from tests.integration.test_reconciliation import NO_LAG
from tests.integration.test_reconciliation_pace import customers_pushed
from tests.integration.world import World

LINES = 8
LIMIT = 3  # the emulator's requests per second, for the whole account
PACE = 2  # the run's reads per second, burst 1: at most 3 start in any second
BUSY_SECONDS = 2.5  # another client takes every second's budget this long
SUMMARIES = "GET /v1/billing/meters/{id}/event_summaries"


def _busy_account(emulator: RunningEmulator) -> threading.Thread:
    """Another client of the same account, asking as fast as it can for ``BUSY_SECONDS``."""

    def ask() -> None:
        with httpx.Client(base_url=emulator.url, auth=(TEST_API_KEY, ""), timeout=5) as client:
            until = time.monotonic() + BUSY_SECONDS
            while time.monotonic() < until:
                client.get("/v1/customers")

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    return thread


def test_a_run_outlasts_a_busy_account_and_keeps_its_pace(
    world: World, emulator: RunningEmulator
) -> None:
    customers_pushed(world, LINES)
    emulator.configure(rate_limit=LIMIT)
    # The gateway as the product builds it by default: the SDK retries twice.
    gateway = SdkStripeGateway(TEST_API_KEY, emulator.url, max_network_retries=2, timeout_seconds=5)
    reconciler = Reconciler(
        world.stores,
        gateway,
        world.pusher,
        Metrics(),
        NO_LAG,
        world.clock,
        threads=4,
        pace=TokenBucket(PACE, burst=1),
    )
    since = httpx.get(f"{emulator.url}/_emulator/requests").json()["now"]

    busy = _busy_account(emulator)
    reports = reconciler.run(Scope(world.tenant), actor="ops@acme", trigger="test")
    busy.join()

    lines = [line for report in reports for line in report.lines]
    assert [(line.status, line.cause) for line in lines] == [("ok", "")] * LINES
    assert sorted(line.stripe or 0 for line in lines) == list(range(1, LINES + 1))
    # Measured on the emulator's side, in its own one-second windows.
    rows = httpx.get(f"{emulator.url}/_emulator/requests", params={"since": since}).json()["data"]
    reads = Counter({row["second"]: row["count"] for row in rows if row["route"] == SUMMARIES})
    refused = sum(row["limited"] for row in rows if row["route"] == SUMMARIES)
    assert refused > 0, "the busy account never refused a read: the test tests nothing"
    assert max(reads.values()) <= PACE + 1, sorted(reads.items())


def test_a_read_without_retries_meets_the_429_once_with_its_retry_after(
    emulator: RunningEmulator,
) -> None:
    gateway = SdkStripeGateway(TEST_API_KEY, emulator.url, max_network_retries=2, timeout_seconds=5)
    meter = gateway.create_meter("Calls", "calls", "sum")
    customer = emulator.client().v1.customers.create({"name": "x"}).id
    start = datetime(2026, 1, 1, tzinfo=UTC)
    emulator.configure(rate_limit=1)
    time.sleep(1 - time.monotonic() % 1)  # a fresh one-second window of the emulator
    assert gateway.meter_total(meter.id, customer, start, start + timedelta(days=1)) == 0
    refused = emulator.rate_limiter.rejected
    with pytest.raises(StripeRateLimitedError) as raised:
        gateway.meter_total(meter.id, customer, start, start + timedelta(days=1), retry=False)
    assert raised.value.retry_after == 1.0
    assert emulator.rate_limiter.rejected - refused == 1  # sent once: no SDK retry
