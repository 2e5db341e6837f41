"""The background batcher for threaded code: a bounded queue and one sending thread."""

from __future__ import annotations

import atexit
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from stripemeter._base import in_forked_child
from stripemeter._batching import (
    BatcherOptions,
    BatcherStats,
    Failure,
    Outcomes,
    PendingQueue,
    WhenFull,
    log,
)
from stripemeter._errors import QueueFullError, StripeMeterError
from stripemeter._events import EventLike, Quantity, Timestamp, UsageEvent, as_event

if TYPE_CHECKING:
    from stripemeter._client import StripeMeterClient


class Batcher(PendingQueue):
    """Queues events and sends them from a background thread in batches.

    A batch leaves when ``max_batch_size`` events wait (or the queue is full, if it
    holds fewer), or when the oldest has waited ``flush_interval`` seconds. The
    queue holds at most
    ``max_queue_size`` events; when it is full, ``track`` waits for room
    (``when_full="block"``, at most ``block_timeout`` seconds when given) or
    raises ``QueueFullError`` (``when_full="raise"``). Memory stays bounded
    either way.

    ``senders`` threads send batches side by side (default 1: one batch in
    flight, in queue order); two keep the service busy while the next batch is
    encoded, at the price of batches arriving in any order (counts do not
    depend on it). Each event is keyed when queued, and a batch is retried by
    the client with the same keys, so a retry is a duplicate, never a second
    event.
    Events that are not counted (a conflict, an error, or a request that
    failed after every retry) go to ``on_failure`` when given, are kept in
    ``failures`` (the last 10,000) and counted in ``stats``; nothing is dropped
    silently. ``on_failure`` runs on a sending thread: it may queue an event again, but
    gets ``QueueFullError`` rather than wait when the queue is full (only the sending
    threads make room). ``flush()`` waits until every event queued before it has an
    answer; ``close()`` (and leaving a ``with`` block, and interpreter exit)
    flushes and stops the thread. In a forked child (a pre-forking server's worker)
    the batcher starts its own threads, with an empty queue and fresh ``stats``: what
    was queued before the fork is the parent's to send.
    """

    def __init__(
        self,
        client: StripeMeterClient,
        *,
        max_batch_size: int = 500,
        flush_interval: float = 1.0,
        max_queue_size: int = 10_000,
        when_full: WhenFull = "block",
        block_timeout: float | None = None,
        on_failure: Callable[[Failure], None] | None = None,
        senders: int = 1,
    ) -> None:
        self.options = BatcherOptions(
            max_batch_size, flush_interval, max_queue_size, when_full, block_timeout, senders
        )
        self._client = client
        self._on_failure = on_failure
        self._outcomes = Outcomes()
        self._pending: deque[UsageEvent] = deque()
        self._changed = threading.Condition()
        self._enqueued = 0  # events queued so far: event n (from 0) is the n-th queued
        self._taken = 0  # events handed to a sender so far
        self._in_flight: dict[int, int] = {}  # a batch being sent: its first event -> its size
        self._flush_upto = 0  # send without waiting until this many events were taken
        self._oldest_at = 0.0
        self._closing = False
        self._threads: list[threading.Thread] = []
        self._start_threads()
        atexit.register(self.close)
        in_forked_child(self)

    def _start_threads(self) -> None:
        self._threads = [
            threading.Thread(target=self._run, name=f"stripemeter-batcher-{n}", daemon=True)
            for n in range(self.options.senders)
        ]
        for thread in self._threads:
            thread.start()

    def _forked(self) -> None:
        """In a forked child (a pre-forking server's worker): no sending thread came along,
        the lock may have been held by one, and what was queued is the parent's to send."""
        self._changed = threading.Condition()
        self._pending.clear()
        self._in_flight.clear()
        self._enqueued = self._taken = self._flush_upto = 0
        self._outcomes = Outcomes()
        self._threads = []  # started by the first event: not in the fork hook, which
        # also runs in a child about to exec (subprocess with a preexec_fn)

    @property
    def stats(self) -> BatcherStats:
        return self._outcomes.stats

    @property
    def failures(self) -> list[Failure]:
        return list(self._outcomes.failures)

    def __enter__(self) -> Batcher:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def track(
        self,
        metric: str,
        customer_ref: str,
        quantity: Quantity,
        ts: Timestamp | None = None,
        meta: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> UsageEvent:
        """Queue one event (``ts`` defaults to now, fixed here); returns it with its key."""
        return self.add(
            UsageEvent.create(metric, customer_ref, quantity, ts, meta, idempotency_key)
        )

    def add(self, event: EventLike) -> UsageEvent:
        """Queue an event (a dict or a ``UsageEvent``); returns it with its key."""
        keyed = as_event(event)
        options = self.options
        with self._changed:
            if self._closing:
                raise StripeMeterError("this batcher is closed")
            if len(self._pending) >= options.max_queue_size:
                # A sender (in on_failure) would wait for room that only it can make.
                if options.when_full == "raise" or threading.current_thread() in self._threads:
                    raise QueueFullError(f"the queue holds {options.max_queue_size} events")
                room = self._changed.wait_for(
                    lambda: len(self._pending) < options.max_queue_size or self._closing,
                    options.block_timeout,
                )
                if not room:
                    raise QueueFullError(
                        f"the queue stayed full ({options.max_queue_size} events) for"
                        f" {options.block_timeout} s"
                    )
                if self._closing:
                    raise StripeMeterError("this batcher is closed")
            if not self._threads:  # in a forked child
                self._start_threads()
            if not self._pending:
                self._oldest_at = time.monotonic()
            self._pending.append(keyed)
            self._enqueued += 1
            self._outcomes.stats.queued += 1
            # Wake the sender: a first event starts the interval, a full batch is due now.
            if len(self._pending) == 1 or len(self._pending) >= options.due_at:
                self._changed.notify_all()
        return keyed

    def flush(self, timeout: float | None = None) -> bool:
        """Send what is queued now and wait until each of those events has an answer.

        Returns False when ``timeout`` passed first. Raises from ``on_failure`` (a sending
        thread), which would wait for itself.
        """
        if threading.current_thread() in self._threads:
            raise StripeMeterError("flush() from on_failure would wait for its own thread")
        with self._changed:
            target = self._enqueued
            self._flush_upto = max(self._flush_upto, target)
            self._changed.notify_all()
            return self._changed.wait_for(lambda: self._answered_below(target), timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Flush, then stop the sending thread. Further ``track`` calls raise.

        Returns False when ``timeout`` passed first: what is left is still sent, but
        only while the process lives (interpreter exit does not wait for it then).
        """
        atexit.unregister(self.close)
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        others = [t for t in self._threads if t is not threading.current_thread()]
        for thread in others:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in others):
            stats = self.stats
            log.error(
                "stripemeter: close() timed out with %d events not answered yet",
                stats.queued - stats.answered,
            )
            return False
        return True

    # -- the sending thread -------------------------------------------------------------

    def _run(self) -> None:
        while True:
            taken = self._next_batch()
            if taken is None:
                return
            first, batch = taken
            self._report(self._deliver(batch))  # before flush() can return
            with self._changed:
                del self._in_flight[first]
                self._changed.notify_all()

    def _next_batch(self) -> tuple[int, list[UsageEvent]] | None:
        """Wait until a batch is due; None when closing with nothing left."""
        with self._changed:
            while not self._batch_due():
                if self._closing:
                    return None
                self._changed.wait(self._seconds_until_due())
            taken = self._take_batch()
            self._changed.notify_all()  # room for blocked producers
            return taken

    def _deliver(self, batch: list[UsageEvent]) -> list[Failure]:
        # Request by request: the events of an answered request were counted even when
        # a later request of the same batch fails.
        failed: list[Failure] = []
        size = self._client.max_batch_events
        for start in range(0, len(batch), size):
            chunk = batch[start : start + size]
            try:
                result = self._client.track_batch(chunk)
            except Exception as error:  # every retry failed: report each event, never drop it
                with self._changed:
                    failed += self._outcomes.request_failed(chunk, error)
            else:
                with self._changed:
                    failed += self._outcomes.answered(result)
        return failed

    def _report(self, failed: list[Failure]) -> None:
        if self._on_failure is not None:
            for failure in failed:
                try:
                    self._on_failure(failure)
                except Exception:
                    log.exception("stripemeter: the on_failure callback raised")
