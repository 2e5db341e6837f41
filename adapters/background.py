"""The work beside ingest: following the log for the views, and pushing to Stripe.

One place builds and runs it, for the two processes that may host it: the API
in the embedded default, and ``stripemeter worker`` in production.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import datetime

from adapters.alert_evaluator import AlertSweep
from adapters.metrics import Metrics
from adapters.periodic import Periodic
from adapters.persistence import Stores
from adapters.price_book import price_book_for
from adapters.push_worker import PushWorker, build_broker, build_gateways, start_builtin_emulator
from adapters.reconciler import Reconciliation, Scope
from adapters.settings import Settings
from adapters.webhooks import Webhooks
from domain.ownership_report import ownership_report
from domain.pushing import Target
from domain.stripe_mapping import StripeMappingService
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
        # Alerts are evaluated where the views are kept: after each batch, and by this sweep.
        self.alert_sweep = AlertSweep(stores.views.alert_evaluator) if run_projections else None
        self._stack = ExitStack()
        self.emulator_url: str | None = None
        if run_pushes and not settings.stripe.secret_key:
            self.emulator_url = start_builtin_emulator(self._stack, settings.emulator_port)
        self.gateways: dict[Target, StripeGateway] = build_gateways(settings, self.emulator_url)
        # One cache of Stripe prices for the projection endpoint and the spend alerts.
        self.price_book = price_book_for(stores.app, self.gateways, settings.price_cache_seconds)
        stores.views.alert_evaluator.spend = self.price_book
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
                settings.broker_queue,
                settings.stream_min_batch,
            )
        if run_pushes and Target.SHADOW not in self.gateways:
            log.info("STRIPE_TEST_SECRET_KEY is not set: shadow pushes are skipped")
        # Outbound webhooks are sent by the process that pushes (docs/webhooks.md).
        self.webhooks = Webhooks(stores, settings, clock) if run_pushes else None
        self.reconciliation: Reconciliation | None = None
        self._ownership: threading.Thread | None = None
        self._schedule: ReconcileSchedule | None = None
        if self.push_worker is not None:
            self.reconciliation = Reconciliation.build(
                stores,
                settings.reconcile,
                self.gateways[Target.LIVE],
                self.push_worker.pusher,
                metrics,
                clock,
            )
            self._schedule = ReconcileSchedule(
                self.reconciliation,
                close_every=settings.push_interval_seconds,
                reconcile_every=settings.reconcile.interval_seconds,
            )

    def start(self) -> None:
        if self.run_projections:
            self.stores.views.runner.start()
        if self.alert_sweep is not None:
            self.alert_sweep.start()
        if self.push_worker is not None:
            self.push_worker.start()
            self._ownership = threading.Thread(
                target=self.check_ownership, name="ownership-check", daemon=True
            )
            self._ownership.start()
        if self._schedule is not None:
            self._schedule.start()
        if self.webhooks is not None:
            self.webhooks.start()

    def check_ownership(self) -> None:
        """Say, once at start, if mappings made before ownership claims need an operator.

        Nothing is changed here: a conflict is the operator's to resolve.
        """
        service = StripeMappingService(
            self.stores.app, self.gateways[Target.LIVE], self.gateways.get(Target.SHADOW)
        )
        try:
            report = ownership_report(service)
        except Exception as error:  # a check at start must never stop the service
            log.warning("could not check the ownership of Stripe objects: %s", error)
            return
        if report.conflicts:
            log.error(
                "%d Stripe objects are mapped by more than one tenant or mapping (or claimed by"
                " another than their mapping): their pushes"
                " go on as before, but each will bill the other's invoice; run `stripemeter"
                " stripe ownership` to see them, unmap the wrong mappings, then"
                " `stripemeter stripe ownership --apply`",
                len(report.conflicts),
            )
        if report.unclaimed:
            log.error(
                "%d mapped Stripe objects have no ownership claim (mapped before claims"
                " existed): run `stripemeter stripe ownership --apply` to record them",
                len(report.unclaimed),
            )

    def stop(self) -> None:
        if self.webhooks is not None:
            self.webhooks.stop()
        if self._ownership is not None:
            self._ownership.join(timeout=30)
            self._ownership = None
        if self._schedule is not None:
            self._schedule.stop()
        if self.push_worker is not None:
            self.push_worker.stop()
        if self.alert_sweep is not None:
            self.alert_sweep.stop()
        if self.run_projections:
            self.stores.views.runner.stop()
        self._stack.close()


class ReconcileSchedule:
    """Closes due periods every few seconds and reconciles every ``reconcile_every`` seconds."""

    def __init__(
        self, reconciliation: Reconciliation, close_every: float, reconcile_every: int
    ) -> None:
        self.reconciliation = reconciliation
        self.close_every = close_every
        self.reconcile_every = reconcile_every
        self._next_run = 0.0
        self._thread: Periodic | None = None

    def start(self) -> None:
        self._next_run = time.monotonic() + min(self.reconcile_every, 60)
        self._thread = Periodic(
            "reconcile", self.close_every, self._tick, log=log, what="reconciliation"
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.stop()
            self._thread = None

    def _tick(self) -> None:
        self.reconciliation.closer.close_due()
        if self.reconcile_every and time.monotonic() >= self._next_run:
            self._next_run = time.monotonic() + self.reconcile_every
            self.reconciliation.reconciler.run(Scope(), actor="system:schedule", trigger="schedule")
