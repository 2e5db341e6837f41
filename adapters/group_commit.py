"""The writer thread: group commit inside the API process.

Requests hand their events to one committing thread (adapters/batching.py),
which writes whatever has queued up since its last commit as one batch and
then answers every request of that batch. Each response still goes out only
after its own events are committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from uuid import UUID

from adapters.batching import Commit, GroupCommitLoop
from adapters.metrics import Metrics
from domain.application import MeteringApp
from domain.ingest import IngestResult, UsageSubmission


class WriterStoppedError(RuntimeError):
    """The writer is shutting down; the request was not written."""


@dataclass
class _Job:
    submissions: Sequence[UsageSubmission]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[list[IngestResult]] = field(repr=False)


class GroupCommitWriter:
    """A ``UsageWriter`` that commits on a thread of this process."""

    def __init__(
        self,
        app: MeteringApp,
        metrics: Metrics,
        max_events: int = 5_000,
        on_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self.metrics = metrics
        self.on_commit = on_commit
        self._commits: GroupCommitLoop[_Job] = GroupCommitLoop(
            app.usage.record_usage, max_events, self._committed, self._failed
        )
        self._stopping = False

    def start(self) -> None:
        self._stopping = False
        self._commits.start()

    def stop(self) -> None:
        """Finish what is queued, then stop."""
        self._stopping = True
        self._commits.stop()

    async def submit(self, submissions: Sequence[UsageSubmission]) -> list[IngestResult]:
        """Write these events (in one batch with others); their results once committed."""
        if self._stopping:
            raise WriterStoppedError("the server is shutting down")
        loop = asyncio.get_running_loop()
        job = _Job(submissions, loop, loop.create_future())
        self._commits.put(job)
        return await job.future

    async def tenant_changed(self, tenant_id: UUID) -> None:
        """Nothing to do: the writer thread shares the app whose change refreshed its cache.

        A tenant read the writer had in flight during the change is not cached over it
        (``TtlCache.get_or_load``), so the next batch reads the tenant as changed.
        """

    def _committed(self, commit: Commit[_Job]) -> None:
        self.metrics.observe_commit(commit.events, commit.seconds)
        for job, results in zip(commit.jobs, commit.results, strict=True):
            job.loop.call_soon_threadsafe(_resolve, job.future, results)
        self.on_commit()

    @staticmethod
    def _failed(jobs: list[_Job], error: Exception) -> None:
        for job in jobs:
            job.loop.call_soon_threadsafe(_fail, job.future, error)


def _resolve(future: asyncio.Future[list[IngestResult]], results: list[IngestResult]) -> None:
    if not future.done():
        future.set_result(results)


def _fail(future: asyncio.Future[list[IngestResult]], error: Exception) -> None:
    if not future.done():
        future.set_exception(error)
