"""What the sync and the async batcher share: options, failures and counts."""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from stripemeter._events import UsageEvent
from stripemeter._results import EventResult, IngestResult

log = logging.getLogger("stripemeter")

WhenFull = Literal["block", "raise"]
MAX_KEPT_FAILURES = 10_000


@dataclass(frozen=True)
class Failure:
    """An event that was not counted: the service's answer (``conflict``/``error``), or the
    exception that ended every retry of its request (``error``, with ``result`` None)."""

    event: UsageEvent
    result: EventResult | None = None
    error: BaseException | None = None


@dataclass
class BatcherStats:
    """Counts since the batcher started, by what became of each event."""

    queued: int = 0
    accepted: int = 0
    duplicates: int = 0
    conflicts: int = 0
    errors: int = 0
    failed_requests: int = 0  # events whose request failed after every retry

    @property
    def answered(self) -> int:
        return self.accepted + self.duplicates + self.conflicts + self.errors + self.failed_requests


@dataclass
class BatcherOptions:
    max_batch_size: int = 500
    flush_interval: float = 1.0
    max_queue_size: int = 10_000
    when_full: WhenFull = "block"
    block_timeout: float | None = None
    senders: int = 1

    @property
    def due_at(self) -> int:
        """How many queued events make a batch due: a full batch, or a full queue (which
        cannot grow to a batch, and keeps producers waiting)."""
        return min(self.max_batch_size, self.max_queue_size)

    def __post_init__(self) -> None:
        if not 1 <= self.senders <= 16:
            raise ValueError("senders must be between 1 and 16")
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if self.max_queue_size < 1:
            raise ValueError("max_queue_size must be at least 1")
        if self.flush_interval <= 0:
            raise ValueError("flush_interval must be positive")
        if self.when_full not in ("block", "raise"):
            raise ValueError("when_full must be 'block' or 'raise'")


@dataclass
class Outcomes:
    """Counts and the last failures (kept even when a callback sees them too)."""

    stats: BatcherStats = field(default_factory=BatcherStats)
    failures: deque[Failure] = field(default_factory=lambda: deque(maxlen=MAX_KEPT_FAILURES))

    def answered(self, result: IngestResult) -> list[Failure]:
        failed = []
        for item in result.results:
            if item.status == "accepted":
                self.stats.accepted += 1
            elif item.status == "duplicate":
                self.stats.duplicates += 1
            else:
                if item.status == "conflict":
                    self.stats.conflicts += 1
                else:
                    self.stats.errors += 1
                assert item.event is not None
                failed.append(Failure(item.event, result=item))
        self.failures.extend(failed)
        return failed

    def request_failed(self, events: list[UsageEvent], error: BaseException) -> list[Failure]:
        self.stats.failed_requests += len(events)
        failed = [Failure(e, error=error) for e in events]
        self.failures.extend(failed)
        log.error("stripemeter: %d events not sent after every retry: %s", len(events), error)
        return failed


class PendingQueue:
    """What the sync and async batchers decide alike, on state they keep under their lock.

    Positions count every event ever queued: ``_taken`` of them were handed to a
    sender, ``_in_flight`` maps each batch being sent (its first position) to
    its size, and a ``flush()`` asks for everything before ``_flush_upto``.
    """

    options: BatcherOptions
    _pending: deque[UsageEvent]
    _taken: int
    _in_flight: dict[int, int]
    _flush_upto: int
    _oldest_at: float
    _closing: bool

    def _batch_due(self) -> bool:
        """Whether a batch goes now: full, closing, flushed, or its oldest event waited enough."""
        if not self._pending:
            return False
        return (
            len(self._pending) >= self.options.due_at
            or self._closing
            or self._flush_upto > self._taken
            or self._seconds_until_due() == 0
        )

    def _seconds_until_due(self) -> float | None:
        """How long a sender waits before the queued events are due (None: until woken)."""
        if not self._pending:
            return None
        return max(0.0, self._oldest_at + self.options.flush_interval - time.monotonic())

    def _take_batch(self) -> tuple[int, list[UsageEvent]]:
        """The next batch (its first position and events), now in flight."""
        count = min(self.options.max_batch_size, len(self._pending))
        batch = [self._pending.popleft() for _ in range(count)]
        first = self._taken
        self._in_flight[first] = count
        self._taken += count
        self._oldest_at = time.monotonic()
        return first, batch

    def _answered_below(self, target: int) -> bool:
        """Whether every event queued before position ``target`` has its answer."""
        return self._taken >= target and all(first >= target for first in self._in_flight)
