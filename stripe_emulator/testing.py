"""Running an emulator inside a test: a real server on a free port, in a thread.

    with running_emulator() as emu:
        client = emu.client()          # or StripeClient(key, base_addresses=emu.base_addresses)
        emu.fail_next("503", path="/v1/billing/meter_events")
        emu.advance(3600)

``RunningEmulator`` is the :class:`~stripe_emulator.emulator.Emulator` handle
plus the server's ``url``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from stripe_emulator.config import EmulatorConfig
from stripe_emulator.emulator import Emulator
from stripe_emulator.server import serving_in_thread

TEST_API_KEY = "sk_test_emulator"


class RunningEmulator(Emulator):
    """An emulator served over HTTP; ``url`` is its base address for both APIs."""

    url: str

    @property
    def base_addresses(self) -> dict[str, str]:
        """``base_addresses`` for ``stripe.StripeClient``: v1, v2 and the event stream."""
        return {"api": self.url, "meter_events": self.url}

    def client(self, api_key: str = TEST_API_KEY, **options: Any) -> Any:
        """A ``stripe.StripeClient`` pointed at this emulator (SDK imported lazily)."""
        import stripe  # noqa: PLC0415 - the emulator itself does not need the SDK

        addresses: Any = self.base_addresses
        return stripe.StripeClient(api_key, base_addresses=addresses, **options)


@contextlib.contextmanager
def running_emulator(
    config: EmulatorConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> Iterator[RunningEmulator]:
    """Start an emulator on ``host:port`` (0 = a free port); stop it on exit."""
    emulator = RunningEmulator(config)
    with serving_in_thread(emulator, host=host, port=port) as url:
        emulator.url = url
        yield emulator
