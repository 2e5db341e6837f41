"""The API side of the writer process: send events, await their committed results."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Sequence
from pathlib import Path
from uuid import UUID

from adapters.metrics import Metrics
from adapters.writer_wire import RESPONSES, WriteRequest, frame, read_frame
from domain.ingest import IngestResult, UsageSubmission

log = logging.getLogger(__name__)


class WriterUnavailableError(RuntimeError):
    """The writer process cannot be reached; nothing of the request is acknowledged."""


class ProcessWriterClient:
    """A ``UsageWriter`` that sends events to the writer process and awaits its answers.

    One connection per API process, shared by all its requests; answers matched by id.
    """

    def __init__(self, socket_path: Path, metrics: Metrics) -> None:
        self.socket_path = socket_path
        self.metrics = metrics
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[list[IngestResult]]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._connecting = asyncio.Lock()

    def start(self) -> None:
        return None  # connects on first use, inside the server's event loop

    def stop(self) -> None:
        if self._writer is not None:
            self._writer.close()

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def submit(self, submissions: Sequence[UsageSubmission]) -> list[IngestResult]:
        writer = await self._connection()
        request_id = next(self._ids)
        future: asyncio.Future[list[IngestResult]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            writer.write(frame(WriteRequest(request_id, list(submissions))))
            return await future
        finally:
            self._pending.pop(request_id, None)

    async def tenant_changed(self, tenant_id: UUID) -> None:
        """Have the writer process read the tenant again before its next batch; returns once
        that batch is committed. Unreachable, it still sees the change within its tenant
        cache's lifetime: logged, not raised (the change itself is already stored)."""
        try:
            writer = await self._connection()
            request_id = next(self._ids)
            future: asyncio.Future[list[IngestResult]] = asyncio.get_running_loop().create_future()
            self._pending[request_id] = future
            try:
                writer.write(frame(WriteRequest(request_id, [], [tenant_id])))
                await future
            finally:
                self._pending.pop(request_id, None)
        except WriterUnavailableError as error:
            log.warning("the writer process will see tenant %s's change late: %s", tenant_id, error)

    async def _connection(self) -> asyncio.StreamWriter:
        if self.connected:
            assert self._writer is not None
            return self._writer
        async with self._connecting:
            if not self.connected:
                try:
                    reader, self._writer = await asyncio.open_unix_connection(str(self.socket_path))
                except OSError as error:
                    raise WriterUnavailableError(
                        f"the writer process is not reachable: {error}"
                    ) from None
                self._reader_task = asyncio.create_task(self._read(reader))
        assert self._writer is not None
        return self._writer

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                response = RESPONSES.decode(await read_frame(reader))
                if response.batch_events:
                    self.metrics.observe_commit(response.batch_events, response.commit_seconds)
                future = self._pending.get(response.id)
                if future is None or future.done():
                    continue
                if response.results is None:
                    future.set_exception(
                        WriterUnavailableError(f"the commit failed ({response.error})")
                    )
                else:
                    future.set_result(response.results)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError) as error:
            log.error("lost the writer process connection: %s", error)
        finally:
            if self._writer is not None:
                with contextlib.suppress(Exception):
                    self._writer.close()
            self._writer = None
            # The events of these requests may or may not be committed: the
            # client is told nothing was acknowledged, and its retry is safe
            # (it then sees duplicates for whatever did commit).
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(
                        WriterUnavailableError("the writer process went away mid-request")
                    )
