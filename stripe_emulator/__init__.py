"""A local, stateful Stripe Billing emulator that the official SDK talks to over HTTP.

Public surface:

- :class:`Emulator` — one emulated account; ``emulator.app`` is the ASGI app and
  the object doubles as the control/inspection handle.
- :class:`EmulatorConfig` — start-up settings (all changeable at runtime).
- :func:`serve` / :func:`main` — run it under uvicorn (``python -m stripe_emulator``).
- :func:`serving_in_thread` — serve one beside other work (StripeMeter's embedded default).
- :func:`stripe_emulator.testing.running_emulator` — a server on a free port for tests.

It imports nothing from the rest of the project on purpose: it stands in for
Stripe, so it must not share code with the client it checks.
"""

from stripe_emulator.config import EmulatorConfig
from stripe_emulator.emulator import Emulator
from stripe_emulator.server import main, serve, serving_in_thread

__all__ = ["Emulator", "EmulatorConfig", "main", "serve", "serving_in_thread"]
