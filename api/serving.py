"""The long-running processes: the API with its writer process, the writer, the worker."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

from adapters.background import Background
from adapters.lifeline import die_with_parent
from adapters.metrics import Metrics
from adapters.metrics_server import serve_worker_metrics
from adapters.persistence import open_stores
from adapters.settings import Settings, SettingsError
from adapters.stripe_target import check_stripe_target
from adapters.writer_process import run_writer
from api.app import asgi_factory, create_app
from api.config_start import check_before_serving
from domain.errors import StripeMeterError

log = logging.getLogger("stripemeter")

# How long an API process may take to answer uvicorn's supervisor before it is killed as hung.
API_PROCESS_HEALTHCHECK_SECONDS = 30


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    """The HTTP API; unless STRIPEMETER_WRITER=thread, with a writer process beside it."""
    check_stripe_target(settings, pushes=settings.embedded_worker)
    port = args.port or settings.port
    check_before_serving(settings)  # STRIPEMETER_CONFIG_FILE: refused before anything starts
    if settings.writer_mode == "process":
        socket_path = Path(tempfile.gettempdir()) / f"stripemeter-writer-{os.getpid()}-{port}.sock"
        supervisor = WriterSupervisor(socket_path)
        supervisor.start()
        settings = dataclasses.replace(settings, writer_socket=socket_path)
        try:
            return _serve(settings, args.host or settings.host, port)
        finally:
            supervisor.stop()
    return _serve(settings, args.host or settings.host, port)


def _serve(settings: Settings, host: str, port: int) -> int:
    if settings.api_processes == 1:
        uvicorn.run(
            create_app(settings),
            host=host,
            port=port,
            log_level=settings.log_level.lower(),
            access_log=False,
        )
        return 0
    if settings.embedded_worker or settings.writer_socket is None:
        raise SettingsError(
            "STRIPEMETER_API_PROCESSES > 1 needs STRIPEMETER_EMBEDDED_WORKER=false (run"
            " `stripemeter worker` beside it) and the writer process (STRIPEMETER_WRITER=process)"
        )
    # The API processes are fresh interpreters that read their settings from the
    # environment: hand them the writer's socket and a shared metrics folder.
    metrics_dir = tempfile.mkdtemp(prefix="stripemeter-metrics-")
    os.environ["STRIPEMETER_WRITER_SOCKET"] = str(settings.writer_socket)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        uvicorn.run(
            "api.serving:api_process_app",
            factory=True,
            workers=settings.api_processes,
            # uvicorn kills and restarts an API process that has not answered its
            # supervisor's ping within this time, and a fresh interpreter importing the
            # app takes longer than uvicorn's 5 s on a busy 2-core host: every start was
            # thrown away and begun again (seen in the tests' logs: "Child process died").
            timeout_worker_healthcheck=API_PROCESS_HEALTHCHECK_SECONDS,
            host=host,
            port=port,
            log_level=settings.log_level.lower(),
            access_log=False,
        )
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


class WriterSupervisor:
    """Runs `stripemeter writer` as a child process and restarts it if it dies."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # A writer killed by a signal while starting is started again, this many times; one
    # that exits with a status of its own (a bad setting, no database) stops `serve`.
    START_KILLS = 3

    def start(self, timeout: float = 60.0) -> None:
        self._spawn()
        deadline = time.monotonic() + timeout
        kills = 0
        while not self.socket_path.exists():
            assert self.process is not None
            code = self.process.poll()
            if code is not None and (code >= 0 or kills >= self.START_KILLS):
                raise StripeMeterError(f"the writer process exited with status {code}")
            if code is not None:
                kills += 1
                log.error("the writer process was killed while starting (status %s); again", code)
                self._spawn()
            if time.monotonic() > deadline:
                raise StripeMeterError("the writer process did not start")
            time.sleep(0.05)
        self._thread = threading.Thread(target=self._watch, name="writer-supervisor", daemon=True)
        self._thread.start()

    def _spawn(self) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "api.cli",
                "writer",
                "--socket",
                str(self.socket_path),
                "--parent",
                str(os.getpid()),
            ]
        )

    def _watch(self) -> None:
        while not self._stopping.is_set():
            assert self.process is not None
            code = self.process.wait()
            if self._stopping.is_set():
                return
            log.error("the writer process exited with status %s; restarting it in 1 s", code)
            if self._stopping.wait(1.0):
                return
            self._spawn()

    def stop(self) -> None:
        self._stopping.set()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def api_process_app() -> Any:
    """The app of one of uvicorn's API processes (``--factory``), which dies with `serve`.

    uvicorn starts them with multiprocessing's spawn; `serve` is their parent."""
    parent = multiprocessing.parent_process()
    if parent is not None and parent.pid is not None:
        die_with_parent(parent.pid)
    return asgi_factory()


def cmd_writer(settings: Settings, args: argparse.Namespace) -> int:
    """The writer process (started by `serve`; not meant to be run by hand)."""
    if args.parent:
        # A `kill -9` of `serve` runs none of its code; uvicorn also ends by re-raising
        # the signal it caught, so `serve` cannot always stop its writer itself.
        die_with_parent(args.parent)
    run_writer(settings, Path(args.socket))
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    """Keep the views current and push to Stripe until stopped; metrics on their own port."""
    check_stripe_target(settings, pushes=not args.no_pushes)
    metrics = Metrics()
    # First, so that a taken port stops the worker before it opens anything.
    metrics_port = serve_worker_metrics(
        metrics.registry,
        settings.host,
        settings.worker_metrics_port,
        settings.worker_metrics_port_last,
    )
    stores = open_stores(settings)
    background = Background(
        stores,
        settings,
        metrics,
        stores.app.clock,
        run_projections=not args.no_projections,
        run_pushes=not args.no_pushes,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    background.start()
    log.info(
        "worker running: projections and Stripe pushes (%s); metrics on %s",
        settings.backend,
        f"{settings.host}:{metrics_port}" if metrics_port else "no port",
    )
    stop.wait()
    background.stop()
    stores.close()
    return 0
