"""Start-up settings of one emulator instance (all changeable at runtime too)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EmulatorConfig:
    rate_limit: int = 100
    """Stripe API requests accepted per second; 0 turns the limiter off."""
    summary_lag_seconds: float = 0.0
    """Wall seconds before a new meter event shows in summaries and previews."""
    invoice_grace_seconds: int = 3600
    """Clock seconds between period end (draft invoice) and finalisation."""
    fault_seed: int | None = None
    """Seed of the RNG behind rate-based faults, for reproducible runs."""
    hang_seconds: float = 5.0
    """How long a timeout-after-write fault holds the connection before dropping it."""
    webhook_retry_base_seconds: float = 1.0
    """First retry delay of a failed webhook delivery; doubles on each attempt."""
    webhook_max_attempts: int = 5
    webhook_timeout_seconds: float = 5.0
    meter_event_latency_seconds: float = 0.0
    """Wall seconds every meter-event call (v1, v2, stream) waits before it is served, so
    that calls a client does not keep apart overlap (counted by ``/_emulator/in_flight``)."""
    session_ttl_seconds: int = 900
    """Lifetime of a v2 meter event session token (Stripe: 15 minutes)."""
    api_keys: tuple[str, ...] | None = None
    """Accepted secret keys; None accepts any ``sk_test_``/``rk_test_`` key."""
