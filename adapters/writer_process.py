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
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from adapters.persistence import open_stores
from adapters.settings import Settings
from adapters.writer_wire import REQUESTS, WriteRequest, WriteResponse, frame, read_frame
from domain.application import MeteringApp
from domain.ingest import UsageSubmission

log = logging.getLogger("stripemeter.writer")


@dataclass
class _Pending:
    request: WriteRequest
    writer: asyncio.StreamWriter


class WriterServer:
    def __init__(
        self, app: MeteringApp, max_events: int, on_commit: Callable[[], None] | None = None
    ) -> None:
        self.app = app
        self.max_events = max_events
        self.on_commit = on_commit
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self.busy = False

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await read_frame(reader)
                await self.queue.put(_Pending(REQUESTS.decode(data), writer))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the API process closed its end
        except asyncio.CancelledError:
            return  # shutting down
        finally:
            writer.close()

    async def commit_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            size = len(batch[0].request.submissions)
            while size < self.max_events and not self.queue.empty():
                item = self.queue.get_nowait()
                batch.append(item)
                size += len(item.request.submissions)
            submissions: list[UsageSubmission] = [
                s for item in batch for s in item.request.submissions
            ]
            started = time.perf_counter()
            self.busy = True
            try:
                results = await loop.run_in_executor(None, self.app.record_usage, submissions)
            except Exception as error:
                self.busy = False
                log.exception("group commit of %d events failed; nothing was written", size)
                for item in batch:
                    self._send(item, WriteResponse(item.request.id, None, type(error).__name__))
                continue
            self.busy = False
            elapsed = time.perf_counter() - started
            offset = 0
            for position, item in enumerate(batch):
                count = len(item.request.submissions)
                mine = results[offset : offset + count]
                offset += count
                # The commit's size and time ride on one response only, so that the
                # API's commit metrics count commits, not requests.
                stats = (size, elapsed) if position == 0 else (0, 0.0)
                self._send(item, WriteResponse(item.request.id, mine, None, *stats))
            if self.on_commit is not None:
                self.on_commit()

    @staticmethod
    def _send(item: _Pending, response: WriteResponse) -> None:
        if not item.writer.is_closing():
            item.writer.write(frame(response))


async def _serve(settings: Settings, socket_path: Path) -> None:
    stores = open_stores(settings)
    runner = stores.views.runner
    server = WriterServer(stores.app, settings.group_commit_max_events, runner.wake)
    if settings.embedded_worker:
        runner.start()
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()
    unix = await asyncio.start_unix_server(server.handle, path=str(socket_path))
    os.chmod(socket_path, 0o600)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    committer = asyncio.create_task(server.commit_forever())
    log.info("writer process ready on %s (backend=%s)", socket_path, settings.backend)
    try:
        await stop.wait()
    finally:
        unix.close()
        # Finish what was already received before going away.
        while server.busy or not server.queue.empty():
            await asyncio.sleep(0.01)
        committer.cancel()
        runner.stop()
        stores.close()
        with contextlib.suppress(FileNotFoundError):
            socket_path.unlink()


def run_writer(settings: Settings, socket_path: Path) -> None:
    asyncio.run(_serve(settings, socket_path))
