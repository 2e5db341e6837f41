"""GroupCommitLoop: the one batching loop of the writer thread and the writer process."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import uuid4

from adapters.batching import Commit, GroupCommitLoop
from domain.ingest import IngestResult, Outcome, UsageSubmission
from tests.helpers import submission

TENANT = uuid4()
NOW = datetime(2026, 3, 15, tzinfo=UTC)


@dataclass
class Job:
    submissions: Sequence[UsageSubmission]


@dataclass
class Recorder:
    """Records nothing; answers each event as accepted, holding the first commit until told."""

    entered: threading.Event = field(default_factory=threading.Event)
    gate: threading.Event = field(default_factory=threading.Event)
    batches: list[list[str]] = field(default_factory=list)
    fail_next: bool = False

    def __call__(self, batch: list[UsageSubmission]) -> list[IngestResult]:
        self.entered.set()
        self.gate.wait(timeout=10)
        self.batches.append([s.idempotency_key for s in batch])
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("the database went away")
        return [IngestResult(Outcome.ACCEPTED, s.idempotency_key) for s in batch]


def job(*keys: str) -> Job:
    return Job([submission(TENANT, 1, NOW, key=key) for key in keys])


def run(record: Recorder, jobs: list[Job], max_events: int) -> tuple[list[Commit[Job]], list[Job]]:
    """Queue ``jobs`` while the first commit is held, then let every commit through and stop."""
    commits: list[Commit[Job]] = []
    failed: list[Job] = []
    loop: GroupCommitLoop[Job] = GroupCommitLoop(
        record, max_events, commits.append, lambda jobs, _: failed.extend(jobs)
    )
    loop.start()
    loop.put(jobs[0])
    assert record.entered.wait(timeout=10)  # the first commit has begun, alone
    for queued in jobs[1:]:
        loop.put(queued)
    record.gate.set()
    loop.stop()
    return commits, failed


def test_what_queues_during_a_commit_is_the_next_batch_and_each_job_gets_its_own_results() -> None:
    record = Recorder()
    commits, failed = run(record, [job("a"), job("b", "c"), job("d")], max_events=10)

    assert record.batches == [["a"], ["b", "c", "d"]]
    assert failed == []
    second = commits[1]
    assert (second.events, len(second.jobs)) == (3, 2)
    assert [[r.idempotency_key for r in mine] for mine in second.results] == [["b", "c"], ["d"]]
    assert second.seconds >= 0


def test_a_batch_stops_before_a_job_that_would_pass_max_events_and_that_job_comes_next() -> None:
    record = Recorder()
    commits, _ = run(record, [job("a"), job("b", "c"), job("d", "e"), job("f")], max_events=3)

    assert record.batches == [["a"], ["b", "c"], ["d", "e", "f"]]
    assert [c.events for c in commits] == [1, 2, 3]


def test_a_failed_commit_fails_its_jobs_only_and_the_loop_goes_on() -> None:
    record = Recorder(fail_next=True)
    commits, failed = run(record, [job("a"), job("b")], max_events=10)

    assert [j.submissions[0].idempotency_key for j in failed] == ["a"]
    assert [[r.idempotency_key for r in c.results[0]] for c in commits] == [["b"]]


def test_stop_commits_what_was_already_queued() -> None:
    record = Recorder()
    record.gate.set()
    commits: list[Commit[Job]] = []
    loop: GroupCommitLoop[Job] = GroupCommitLoop(record, 10, commits.append, lambda *_: None)
    loop.start()
    for key in "abc":
        loop.put(job(key))
    loop.stop()
    assert sorted(k for batch in record.batches for k in batch) == ["a", "b", "c"]
    assert sum(c.events for c in commits) == 3
