"""Group commit's one loop, shared by the writer thread and the writer process.

The event store serialises writers (PostgreSQL's recorder locks the events
table per transaction), so one transaction per request caps ingest near
1,000 events/s. Requests instead queue their events for a single committing
thread, which takes whatever has queued up since its last commit — up to
``max_events`` — writes it as one batch, and hands each request its own
results. A new commit starts as soon as the previous one ends.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from domain.ingest import IngestResult, UsageSubmission

log = logging.getLogger(__name__)


class Job(Protocol):
    """One request's events."""

    @property
    def submissions(self) -> Sequence[UsageSubmission]: ...


J = TypeVar("J", bound=Job)


@dataclass(frozen=True)
class Commit(Generic[J]):
    """One committed batch: its jobs with their results, in order, and what it cost."""

    jobs: list[J]
    results: list[list[IngestResult]]
    events: int
    seconds: float


class GroupCommitLoop(Generic[J]):
    """A thread that commits queued jobs in batches and reports each batch once.

    ``committed`` receives every batch written; ``failed`` the jobs of a batch
    whose commit raised (nothing of it was written). Both run on this thread.
    """

    def __init__(
        self,
        record: Callable[[list[UsageSubmission]], list[IngestResult]],
        max_events: int,
        committed: Callable[[Commit[J]], None],
        failed: Callable[[list[J], Exception], None],
        name: str = "group-commit",
    ) -> None:
        self.record = record
        self.max_events = max_events
        self.committed = committed
        self.failed = failed
        self.name = name
        self._queue: queue.SimpleQueue[J | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def put(self, job: J) -> None:
        self._queue.put(job)

    def stop(self, timeout: float = 30) -> None:
        """Commit what is already queued, then stop."""
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None

    def _run(self) -> None:
        held: J | None = None
        while True:
            first = held or self._queue.get()
            if first is None:
                return
            jobs, held, stop = self._batch(first)
            self._commit(jobs)
            if stop:
                return

    def _batch(self, first: J) -> tuple[list[J], J | None, bool]:
        """The jobs queued behind ``first``, up to ``max_events``; the job held for the next
        batch (it would overflow this one); and whether a stop came after them."""
        jobs = [first]
        size = len(first.submissions)
        while size < self.max_events:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return jobs, None, True
            if size + len(job.submissions) > self.max_events:
                return jobs, job, False
            jobs.append(job)
            size += len(job.submissions)
        return jobs, None, False

    def _commit(self, jobs: list[J]) -> None:
        batch = [s for job in jobs for s in job.submissions]
        started = time.perf_counter()
        try:
            results = self.record(batch)
        except Exception as error:
            log.exception(
                "group commit of %d events from %d requests failed", len(batch), len(jobs)
            )
            self.failed(jobs, error)
            return
        seconds = time.perf_counter() - started
        per_job: list[list[IngestResult]] = []
        offset = 0
        for job in jobs:
            per_job.append(results[offset : offset + len(job.submissions)])
            offset += len(job.submissions)
        self.committed(Commit(jobs, per_job, len(batch), seconds))
