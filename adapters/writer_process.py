"""The writer process: owns the usage aggregates and commits for every API process.

Ingest's write path is CPU-bound Python; inside an API process it competes
with HTTP handling for the GIL. ``stripemeter serve`` therefore starts this
process beside it: API processes send validated events over a unix socket,
and this process writes whatever has arrived since its last commit as one
transaction (group commit), then answers each request with its own results.
A response is only sent after the commit, so "accepted" still means durable.

In the embedded default it also follows the event log for the projections,
woken after every commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

from adapters.alert_evaluator import AlertSweep
from adapters.batching import Commit, GroupCommitLoop
from adapters.persistence import open_stores
from adapters.price_book import price_book_for
from adapters.push_worker import build_gateways, builtin_emulator_url
from adapters.settings import Settings
from adapters.writer_wire import REQUESTS, WriteRequest, WriteResponse, frame, read_frame
from domain.application import MeteringApp
from domain.errors import NotFoundError
from domain.ingest import IngestResult, UsageSubmission

log = logging.getLogger("stripemeter.writer")


@dataclass
class _Pending:
    request: WriteRequest
    writer: asyncio.StreamWriter

    @property
    def submissions(self) -> list[UsageSubmission]:
        return self.request.submissions


class WriterServer:
    """Reads requests from every API process's connection; commits them in batches.

    The batching loop (adapters/batching.py) runs on its own thread; answers
    are encoded there and written to their connection on the event loop.
    """

    def __init__(
        self, app: MeteringApp, max_events: int, on_commit: Callable[[], None] | None = None
    ) -> None:
        self.on_commit = on_commit
        self._app = app
        # Tenants an API process changed, to read again before the next batch (``_record``).
        self._changed: list[UUID] = []
        self._changed_lock = threading.Lock()
        self._commits: GroupCommitLoop[_Pending] = GroupCommitLoop(
            self._record, max_events, self._committed, self._failed, "writer-process"
        )
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._commits.start()

    def stop(self) -> None:
        """Commit and answer what was already received (blocks: call off the event loop)."""
        self._commits.stop()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await read_frame(reader)
                request = REQUESTS.decode(data)
                if request.tenants_changed:
                    with self._changed_lock:
                        self._changed.extend(request.tenants_changed)
                self._commits.put(_Pending(request, writer))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the API process closed its end
        except asyncio.CancelledError:
            return  # shutting down
        finally:
            writer.close()

    def _record(self, batch: Sequence[UsageSubmission]) -> list[IngestResult]:
        """Record a batch (on the commit thread), first reading again any tenant changed.

        On this thread, so that no tenant read begun before the change can store its
        older copy after it; the request that named the tenant is answered after this
        batch, so the API's next events are decided on the tenant as changed.
        """
        if self._changed:
            with self._changed_lock:
                changed, self._changed = self._changed, []
            for tenant_id in set(changed):
                # Named by an API process, so it exists; if not, there is nothing to refresh.
                with contextlib.suppress(NotFoundError):
                    self._app.tenant(tenant_id)
        return self._app.usage.record_usage(batch)

    def _committed(self, commit: Commit[_Pending]) -> None:
        answers = []
        for position, (item, results) in enumerate(zip(commit.jobs, commit.results, strict=True)):
            # The commit's size and time ride on one response only, so that the
            # API's commit metrics count commits, not requests.
            stats = (commit.events, commit.seconds) if position == 0 else (0, 0.0)
            answers.append((item, WriteResponse(item.request.id, results, None, *stats)))
        self._send(answers)
        if self.on_commit is not None:
            self.on_commit()

    def _failed(self, jobs: list[_Pending], error: Exception) -> None:
        failure = type(error).__name__
        self._send([(item, WriteResponse(item.request.id, None, failure)) for item in jobs])

    def _send(self, answers: list[tuple[_Pending, WriteResponse]]) -> None:
        """Hand a whole commit's answers to the event loop at once: one wake-up per
        commit, not one per request (each wake-up is a write to the loop's pipe)."""
        assert self._loop is not None, "started before any request is read"
        frames = [(item.writer, frame(response)) for item, response in answers]
        self._loop.call_soon_threadsafe(_write_all, frames)


def _write_all(frames: list[tuple[asyncio.StreamWriter, bytes]]) -> None:
    for writer, data in frames:
        if not writer.is_closing():
            writer.write(data)


async def _serve(settings: Settings, socket_path: Path) -> None:
    stores = open_stores(settings)
    runner = stores.views.runner
    server = WriterServer(stores.app, settings.group_commit_max_events, runner.wake)
    # Embedded, this process keeps the views, so it evaluates the usage alerts too.
    sweep = AlertSweep(stores.views.alert_evaluator) if settings.embedded_worker else None
    if settings.embedded_worker:
        # Spend alerts are evaluated here: prices from Stripe, or the API's built-in emulator.
        gateways = build_gateways(settings, builtin_emulator_url(settings))
        stores.views.alert_evaluator.spend = price_book_for(
            stores.app, gateways, settings.price_cache_seconds
        )
        runner.start()
    if sweep is not None:
        sweep.start()
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()
    server.start()
    unix = await asyncio.start_unix_server(server.handle, path=str(socket_path))
    os.chmod(socket_path, 0o600)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("writer process ready on %s (backend=%s)", socket_path, settings.backend)
    try:
        await stop.wait()
    finally:
        unix.close()
        # Finish what was already received before going away; the answers,
        # scheduled on this loop before the stop returns, are written first.
        await asyncio.to_thread(server.stop)
        if sweep is not None:
            sweep.stop()
        runner.stop()
        stores.close()
        with contextlib.suppress(FileNotFoundError):
            socket_path.unlink()


def run_writer(settings: Settings, socket_path: Path) -> None:
    asyncio.run(_serve(settings, socket_path))
