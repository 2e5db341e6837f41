"""The work beside ingest: following the log for the views, and pushing to Stripe.

One place builds and runs it, for the two processes that may host it: the API
in the embedded default, and ``stripemeter worker`` in production.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import ExitStack
from datetime import datetime

from adapters.metrics import Metrics
from adapters.persistence import Stores
from adapters.push_worker import PushWorker, build_broker, build_gateways, start_builtin_emulator
from adapters.settings import Settings
from domain.pushing import Target
from domain.stripe_port import StripeGateway

log = logging.getLogger("stripemeter")


class Background:
    def __init__(
        self,
        stores: Stores,
        settings: Settings,
        metrics: Metrics,
        clock: Callable[[], datetime],
        *,
        run_projections: bool,
        run_pushes: bool,
    ) -> None:
        self.stores = stores
        self.run_projections = run_projections
        self._stack = ExitStack()
        self.emulator_url: str | None = None
        if run_pushes and not settings.stripe.secret_key:
            self.emulator_url = start_builtin_emulator(self._stack, settings.emulator_port)
        self.gateways: dict[Target, StripeGateway] = build_gateways(settings, self.emulator_url)
        self.push_worker: PushWorker | None = None
        if run_pushes and Target.LIVE in self.gateways:
            self.push_worker = PushWorker(
                stores,
                self.gateways,
                metrics,
                build_broker(settings),
                settings.push_interval_seconds,
                settings.push_threads,
                clock,
            )
        if run_pushes and Target.SHADOW not in self.gateways:
            log.info("STRIPE_TEST_SECRET_KEY is not set: shadow pushes are skipped")

    def start(self) -> None:
        if self.run_projections:
            self.stores.views.runner.start()
        if self.push_worker is not None:
            self.push_worker.start()

    def stop(self) -> None:
        if self.push_worker is not None:
            self.push_worker.stop()
        if self.run_projections:
            self.stores.views.runner.stop()
        self._stack.close()
