"""``create_app``: the composition root of the HTTP service."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from litestar import Litestar
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from adapters.background import Background
from adapters.group_commit import GroupCommitWriter
from adapters.metrics import Metrics
from adapters.persistence import open_stores
from adapters.settings import Settings
from adapters.usage_writer import UsageWriter
from adapters.writer_client import ProcessWriterClient
from api import fast_ingest, problems, widget_preflight
from api.admin import admin_router, template_config
from api.admin.sessions import AdminSessions
from api.auth import DEPENDENCIES
from api.config_start import apply_at_start
from api.openapi import openapi_config
from api.routes.alerts import AlertsController
from api.routes.caps import CapsController
from api.routes.health import HealthController
from api.routes.ingest import IngestController
from api.routes.meters import MetersController
from api.routes.reconciliation import (
    AdjustmentsController,
    ReconciliationController,
    WebhooksController,
)
from api.routes.replay import ReplayController
from api.routes.stripe import AuditController, CustomersController, MappingsController
from api.routes.usage import UsageController
from api.routes.webhooks import WebhookEndpointsController
from api.routes.widget import (
    WidgetOriginsController,
    WidgetTokensController,
    WidgetUsageController,
    widget_script,
)
from api.services import Services
from domain.application import utc_now

log = logging.getLogger("stripemeter")


def timing_middleware(metrics: Metrics) -> Callable[[ASGIApp], ASGIApp]:
    """Observe every HTTP request's latency by route template and status."""

    def middleware(app: ASGIApp) -> ASGIApp:
        async def timed(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP:
                await app(scope, receive, send)
                return
            # A request the ingest path read first and handed on is timed from its arrival.
            started = scope.get("state", {}).get(fast_ingest.RECEIVED_AT) or time.perf_counter()
            method = str(scope["method"])
            status = 500

            async def send_wrapper(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await app(scope, receive, send_wrapper)
            finally:
                # The route's full template (a controller's path and the handler's).
                route = scope.get("path_template") or "unmatched"
                metrics.observe_http(method, route, status, time.perf_counter() - started)

        return timed

    return middleware


class MeteringAPI(Litestar):
    """Litestar, with ingest requests tried first on the path in api/fast_ingest.py, and
    the widget's CORS preflight answered in api/widget_preflight.py."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if fast_ingest.handles(scope):
            await fast_ingest.ingest(self, scope, receive, send, super().__call__)
        elif widget_preflight.handles(scope):
            await widget_preflight.answer(self, scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def create_app(
    settings: Settings | None = None, clock: Callable[[], datetime] = utc_now
) -> Litestar:
    """Build the API: stores, group-commit writer, projection runner (when embedded)."""
    settings = settings or Settings.from_env()
    metrics = Metrics(multiprocess=settings.metrics_multiprocess_dir is not None)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        stores = open_stores(settings, clock)
        runner = stores.views.runner
        metrics.watch_usage_alerts(stores.views.alerts.triggered_counts)
        writer: UsageWriter
        # With a writer process, it commits and (embedded) runs the projections.
        runs_projections = settings.embedded_worker and settings.writer_socket is None
        if settings.writer_socket is not None:
            writer = ProcessWriterClient(settings.writer_socket, metrics)
        else:
            writer = GroupCommitWriter(
                stores.app,
                metrics,
                max_events=settings.group_commit_max_events,
                on_commit=runner.wake,
            )
        background = Background(
            stores,
            settings,
            metrics,
            clock,
            run_projections=runs_projections,
            run_pushes=settings.embedded_worker,
        )
        apply_at_start(settings, stores, background.gateways)  # STRIPEMETER_CONFIG_FILE
        app.state.services = Services(
            settings,
            stores,
            metrics,
            writer,
            background.gateways,
            background.push_worker,
            background.emulator_url,
            background.reconciliation,
            clock,
            background_price_book=background.price_book,
        )
        app.state.admin_sessions = AdminSessions(stores.views.admin_sessions, clock)
        writer.start()
        background.start()
        log.info(
            "stripemeter ready: backend=%s embedded_worker=%s writer=%s stripe=%s",
            settings.backend,
            settings.embedded_worker,
            "process" if settings.writer_socket else "thread",
            background.emulator_url or settings.stripe.api_base or "api.stripe.com",
        )
        try:
            yield
        finally:
            writer.stop()
            background.stop()
            stores.close()

    return MeteringAPI(
        route_handlers=[
            IngestController,
            UsageController,
            MetersController,
            CapsController,
            MappingsController,
            CustomersController,
            AuditController,
            ReconciliationController,
            AdjustmentsController,
            WebhooksController,
            WebhookEndpointsController,
            ReplayController,
            AlertsController,
            WidgetTokensController,
            WidgetOriginsController,
            WidgetUsageController,
            widget_script,
            HealthController,
            admin_router,
        ],
        dependencies=DEPENDENCIES,
        lifespan=[lifespan],
        exception_handlers={Exception: problems.handle},
        middleware=[timing_middleware(metrics)],
        openapi_config=openapi_config(),
        template_config=template_config(),
        debug=False,
    )


def asgi_factory() -> Any:
    """For ``uvicorn --factory api.app:asgi_factory``: settings from the environment."""
    return create_app()
