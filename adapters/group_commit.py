"""Group commit: many requests' usage events, one event-store transaction.

The event store serialises writers (PostgreSQL's recorder locks the events
table per transaction), so one transaction per request caps ingest near
1,000 events/s. Requests instead hand their events to a single writer thread,
which writes whatever has queued up since its last commit as one batch and
then answers every request of that batch. Each response still goes out only
after its own events are committed.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from adapters.metrics import Metrics
from domain.application import MeteringApp
from domain.ingest import IngestResult, UsageSubmission

log = logging.getLogger(__name__)


class WriterStoppedError(RuntimeError):
    """The writer is shutting down; the request was not written."""


@dataclass
class _Job:
    submissions: Sequence[UsageSubmission]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[list[IngestResult]] = field(repr=False)


class GroupCommitWriter:
    def __init__(
        self,
        app: MeteringApp,
        metrics: Metrics,
        max_events: int = 5_000,
        on_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_events = max_events
        self.on_commit = on_commit
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def start(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish what is queued, then stop."""
        self._stopping = True
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    async def submit(self, submissions: Sequence[UsageSubmission]) -> list[IngestResult]:
        """Write these events (in one batch with others); their results once committed."""
        if self._stopping:
            raise WriterStoppedError("the server is shutting down")
        loop = asyncio.get_running_loop()
        job = _Job(submissions, loop, loop.create_future())
        self._queue.put(job)
        return await job.future

    def _run(self) -> None:
        pending: _Job | None = None
        while True:
            first = pending or self._queue.get()
            pending = None
            if first is None:
                return
            jobs = [first]
            size = len(first.submissions)
            stop_after = False
            while size < self.max_events:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop_after = True
                    break
                if size + len(job.submissions) > self.max_events:
                    pending = job
                    break
                jobs.append(job)
                size += len(job.submissions)
            self._write(jobs, size)
            if stop_after:
                return

    def _write(self, jobs: list[_Job], size: int) -> None:
        batch = [s for job in jobs for s in job.submissions]
        started = time.perf_counter()
        try:
            results = self.app.record_usage(batch)
        except Exception as error:
            log.exception("group commit of %d events from %d requests failed", size, len(jobs))
            for job in jobs:
                job.loop.call_soon_threadsafe(_fail, job.future, error)
            return
        self.metrics.commit_duration.observe(time.perf_counter() - started)
        self.metrics.commit_batch_events.observe(size)
        self.metrics.observe_ingest(results)
        offset = 0
        for job in jobs:
            mine = results[offset : offset + len(job.submissions)]
            offset += len(job.submissions)
            job.loop.call_soon_threadsafe(_resolve, job.future, mine)
        self.on_commit()


def _resolve(future: asyncio.Future[list[IngestResult]], results: list[IngestResult]) -> None:
    if not future.done():
        future.set_result(results)


def _fail(future: asyncio.Future[list[IngestResult]], error: Exception) -> None:
    if not future.done():
        future.set_exception(error)
