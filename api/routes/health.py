"""Liveness, readiness (checked for real) and Prometheus metrics."""

from __future__ import annotations

import contextlib
import socket
from typing import Any

from litestar import Controller, Response, get
from litestar.openapi.datastructures import ResponseSpec
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from adapters.build_info import version
from adapters.push_worker import broker_status
from api.auth import ServicesDep
from api.schemas import Readiness
from api.services import Services


def readiness(svc: Services) -> tuple[bool, dict[str, Any]]:
    checks: dict[str, Any] = {}
    ready = True
    try:
        head = svc.stores.app.recorder.max_notification_id() or 0
        checks["eventStore"] = {"status": "ok", "backend": svc.settings.backend, "head": head}
    except Exception as error:
        checks["eventStore"] = {"status": "down", "error": type(error).__name__}
        return False, checks
    socket_path = svc.settings.writer_socket
    if socket_path is not None:
        try:
            with socket.socket(socket.AF_UNIX) as probe:
                probe.settimeout(1)
                probe.connect(str(socket_path))
            checks["writer"] = {"status": "ok", "mode": "process"}
        except OSError as error:
            checks["writer"] = {"status": "down", "mode": "process", "error": str(error)}
            ready = False
    if svc.push_worker is not None:  # only a process that pushes uses the broker
        checks["broker"] = broker_status(svc.settings.broker_url)
        ready = ready and checks["broker"]["status"] == "ok"
    try:
        positions = svc.stores.views.runner.positions()
    except Exception as error:
        checks["projections"] = {"status": "down", "error": type(error).__name__}
        return False, checks
    limit = svc.settings.ready_max_lag_events
    runner_error = svc.stores.views.runner.last_error
    for name, position in positions.items():
        lag = max(head - position, 0)
        svc.metrics.projection_lag.labels(name).set(lag)
        status = "ok" if lag <= limit else "lagging"
        checks[f"projection:{name}"] = {"status": status, "lagEvents": lag, "maxLagEvents": limit}
        ready = ready and status == "ok"
    if runner_error is not None:
        checks["projectionRunner"] = {"status": "failing", "error": str(runner_error)[:200]}
        ready = False
    return ready, checks


class HealthController(Controller):
    """For probes and scrapers: no API key."""

    path = "/"
    tags = ["health"]

    @get("/health/live", sync_to_thread=False)
    def live(self) -> dict[str, str]:
        """The process answers; says nothing about its dependencies."""
        return {"status": "ok"}

    @get(
        "/health/ready",
        sync_to_thread=True,
        responses={503: ResponseSpec(Readiness, description="Not ready: see checks")},
    )
    def ready(self, svc: ServicesDep) -> Response[Readiness]:
        """200 when the event store (and, where pushes run, the broker) answers and every
        projection is within the lag limit."""
        ok, checks = readiness(svc)
        return Response(
            Readiness("ready" if ok else "unready", checks, version()),
            status_code=200 if ok else 503,
        )

    @get("/health", sync_to_thread=True)
    def health(self, svc: ServicesDep) -> Readiness:
        """Always 200: ``healthy``, or ``degraded`` with the failing checks."""
        ok, checks = readiness(svc)
        return Readiness("healthy" if ok else "degraded", checks, version())

    @get("/metrics", sync_to_thread=True, media_type=CONTENT_TYPE_LATEST)
    def metrics(self, svc: ServicesDep) -> bytes:
        """Prometheus metrics (text exposition format)."""
        # Refreshes the projection lag gauges; a scrape must not fail because a check did.
        with contextlib.suppress(Exception):
            readiness(svc)
        return generate_latest(svc.metrics.exposed)
