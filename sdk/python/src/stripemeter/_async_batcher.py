"""The background batcher for asyncio code: a bounded queue and one sending task."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import (
    TYPE_CHECKING,
    Any,
)

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
    from stripemeter._async_client import AsyncStripeMeterClient

FailureCallback = Callable[[Failure], Awaitable[None] | None]


class AsyncBatcher(PendingQueue):
    """``Batcher`` for asyncio: the same options and guarantees, tasks instead of threads.

    The sending tasks start with the first event (or ``async with``). There is
    no flush at interpreter exit (no event loop runs then): ``await close()``,
    or leave the ``async with`` block, before the loop ends. ``on_failure`` may
    be a plain function or a coroutine function.
    """

    def __init__(
        self,
        client: AsyncStripeMeterClient,
        *,
        max_batch_size: int = 500,
        flush_interval: float = 1.0,
        max_queue_size: int = 10_000,
        when_full: WhenFull = "block",
        block_timeout: float | None = None,
        on_failure: FailureCallback | None = None,
        senders: int = 1,
    ) -> None:
        self.options = BatcherOptions(
            max_batch_size, flush_interval, max_queue_size, when_full, block_timeout, senders
        )
        self._client = client
        self._on_failure = on_failure
        self._outcomes = Outcomes()
        self._pending: deque[UsageEvent] = deque()
        self._changed: asyncio.Condition | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._enqueued = 0
        self._taken = 0
        self._in_flight: dict[int, int] = {}  # a batch being sent: its first event -> its size
        self._flush_upto = 0
        self._oldest_at = 0.0
        self._closing = False

    @property
    def stats(self) -> BatcherStats:
        return self._outcomes.stats

    @property
    def failures(self) -> list[Failure]:
        return list(self._outcomes.failures)

    async def __aenter__(self) -> AsyncBatcher:
        self._start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def _start(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._run()) for _ in range(self.options.senders)]
        return self._changed

    async def track(
        self,
        metric: str,
        customer_ref: str,
        quantity: Quantity,
        ts: Timestamp | None = None,
        meta: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> UsageEvent:
        """Queue one event (``ts`` defaults to now, fixed here); returns it with its key."""
        event = UsageEvent.create(metric, customer_ref, quantity, ts, meta, idempotency_key)
        return await self.add(event)

    async def add(self, event: EventLike) -> UsageEvent:
        """Queue an event (a dict or a ``UsageEvent``); waits for room or raises when full."""
        keyed = as_event(event)
        options = self.options
        changed = self._start()
        async with changed:
            if self._closing:
                raise StripeMeterError("this batcher is closed")
            if len(self._pending) >= options.max_queue_size:
                # A sender (in on_failure) would wait for room that only it can make.
                if options.when_full == "raise" or asyncio.current_task() in self._tasks:
                    raise QueueFullError(f"the queue holds {options.max_queue_size} events")
                try:
                    await asyncio.wait_for(
                        changed.wait_for(
                            lambda: len(self._pending) < options.max_queue_size or self._closing
                        ),
                        options.block_timeout,
                    )
                except asyncio.TimeoutError:
                    raise QueueFullError(
                        f"the queue stayed full ({options.max_queue_size} events) for"
                        f" {options.block_timeout} s"
                    ) from None
                if self._closing:
                    raise StripeMeterError("this batcher is closed")
            if not self._pending:
                self._oldest_at = time.monotonic()
            self._pending.append(keyed)
            self._enqueued += 1
            self._outcomes.stats.queued += 1
            # Wake the sender: a first event starts the interval, a full batch is due now.
            if len(self._pending) == 1 or len(self._pending) >= options.due_at:
                changed.notify_all()
        return keyed

    async def flush(self, timeout: float | None = None) -> bool:
        """Send what is queued now and wait until each of those events has an answer.

        Returns False when ``timeout`` passed first. Raises from ``on_failure`` (a sending
        task), which would wait for itself.
        """
        if asyncio.current_task() in self._tasks:
            raise StripeMeterError("flush() from on_failure would wait for its own task")
        changed = self._start()
        async with changed:
            target = self._enqueued
            self._flush_upto = max(self._flush_upto, target)
            changed.notify_all()
            try:
                await asyncio.wait_for(
                    changed.wait_for(lambda: self._answered_below(target)), timeout
                )
            except asyncio.TimeoutError:
                return False
            return True

    async def close(self) -> None:
        """Flush, then stop the sending task. Further ``track`` calls raise.

        Cancelled (``asyncio.wait_for(close(), t)`` timing out), it stops waiting and the
        sends go on, as long as the loop runs."""
        if self._changed is None:
            self._closing = True
            return
        async with self._changed:
            self._closing = True
            self._changed.notify_all()
        # From on_failure, close() runs in a sending task: that one ends when it returns.
        current = asyncio.current_task()
        others = [task for task in self._tasks if task is not current]
        if others:
            # wait(), not gather(): a caller that stops waiting (wait_for's timeout)
            # must not cancel the sends with it.
            await asyncio.wait(others)

    # -- the sending task -----------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            taken = await self._next_batch()
            if taken is None:
                return
            first, batch = taken
            await self._deliver(batch)
            assert self._changed is not None
            async with self._changed:
                del self._in_flight[first]
                self._changed.notify_all()

    async def _next_batch(self) -> tuple[int, list[UsageEvent]] | None:
        changed = self._changed
        assert changed is not None
        async with changed:
            while not self._batch_due():
                if self._closing:
                    return None
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(changed.wait(), self._seconds_until_due())
            taken = self._take_batch()
            changed.notify_all()
            return taken

    async def _deliver(self, batch: list[UsageEvent]) -> None:
        # Request by request: the events of an answered request were counted even when
        # a later request of the same batch fails.
        failed: list[Failure] = []
        size = self._client.max_batch_events
        for start in range(0, len(batch), size):
            chunk = batch[start : start + size]
            try:
                result = await self._client.track_batch(chunk)
            except Exception as error:  # every retry failed: report each event, never drop it
                failed += self._outcomes.request_failed(chunk, error)
            else:
                failed += self._outcomes.answered(result)
        if self._on_failure is not None:
            for failure in failed:
                try:
                    outcome = self._on_failure(failure)
                    if inspect.isawaitable(outcome):
                        await outcome
                except Exception:
                    log.exception("stripemeter: the on_failure callback raised")
