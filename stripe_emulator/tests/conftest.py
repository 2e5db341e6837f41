"""One emulator server per test session, reset to a clean account before each test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import stripe

from stripe_emulator import EmulatorConfig
from stripe_emulator.testing import TEST_API_KEY, RunningEmulator, running_emulator

# Fast settings for tests: no rate limit unless a test turns it on, short hangs and
# webhook backoff so nothing sleeps long.
TEST_CONFIG = dict(
    rate_limit=0,
    summary_lag_seconds=0.0,
    invoice_grace_seconds=3600,
    hang_seconds=0.6,
    webhook_retry_base_seconds=0.05,
    webhook_max_attempts=4,
    webhook_timeout_seconds=2.0,
    session_ttl_seconds=900,
    meter_event_latency_seconds=0.0,
)


@pytest.fixture(scope="session")
def server() -> Iterator[RunningEmulator]:
    with running_emulator(EmulatorConfig(**TEST_CONFIG)) as emu:  # type: ignore[arg-type]
        yield emu


@pytest.fixture
def emu(server: RunningEmulator) -> RunningEmulator:
    server.reset()
    server.configure(**TEST_CONFIG)
    server.use_real_time()
    return server


@pytest.fixture
def client(emu: RunningEmulator) -> Any:
    """StripeClient without SDK retries, so each error reaches the test as raised."""
    return emu.client(max_network_retries=0)


@pytest.fixture
def module_stripe(emu: RunningEmulator) -> Iterator[Any]:
    """The SDK's module-level style pointed at the emulator; globals restored after."""
    saved = {
        name: getattr(stripe, name)
        for name in ("api_key", "api_base", "meter_events_api_base", "max_network_retries")
    }
    stripe.api_key = TEST_API_KEY
    stripe.api_base = emu.url
    stripe.meter_events_api_base = emu.url
    stripe.max_network_retries = 0
    try:
        yield stripe
    finally:
        for name, value in saved.items():
            setattr(stripe, name, value)
