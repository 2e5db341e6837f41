"""The background batchers against the real service: size, interval, flush, close, pressure."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta

import httpx
import pytest
from sdk_service import ROOT, Service, free_port, now

from stripemeter import (
    APIConnectionError,
    AsyncBatcher,
    AsyncStripeMeterClient,
    Batcher,
    Failure,
    QueueFullError,
    RetryPolicy,
    StripeMeterClient,
    StripeMeterError,
)


def wait_until(condition: object, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_a_batch_leaves_when_full_and_the_rest_on_flush(
    service: Service, api_key: str, customer: str
) -> None:
    with StripeMeterClient(api_key, base_url=service.url) as client:
        batcher = client.batcher(max_batch_size=10, flush_interval=60)
        for _ in range(25):
            batcher.track("api_calls", customer, 1)
        # Two full batches go at once; the last 5 wait for the 60 s interval or a flush.
        assert wait_until(lambda: batcher.stats.answered == 20)
        time.sleep(0.3)
        assert batcher.stats.answered == 20
        assert batcher.flush(timeout=10)
        assert (batcher.stats.queued, batcher.stats.accepted) == (25, 25)
        batcher.close()
    assert service.wait_for_count(api_key, customer, 25)["value"] == "25"


def test_a_batch_leaves_after_the_interval_without_a_flush(
    service: Service, api_key: str, customer: str
) -> None:
    with StripeMeterClient(api_key, base_url=service.url) as client:
        batcher = client.batcher(max_batch_size=1_000, flush_interval=0.3)
        started = time.monotonic()
        for _ in range(3):
            batcher.track("api_calls", customer, 2)
        assert wait_until(lambda: batcher.stats.accepted == 3, within=5)
        assert time.monotonic() - started >= 0.25
        batcher.close()


def test_flush_waits_for_every_answer_and_close_flushes_and_refuses_more(
    service: Service, api_key: str, customer: str
) -> None:
    with StripeMeterClient(api_key, base_url=service.url) as client:
        batcher = client.batcher(max_batch_size=64, flush_interval=60)
        keys = [batcher.track("api_calls", customer, 1).idempotency_key for _ in range(300)]
        assert batcher.flush()
        assert batcher.stats.accepted == 300  # answered when flush returns, not later
        assert len(set(keys)) == 300
        with client.batcher(flush_interval=60) as closing:
            for _ in range(7):
                closing.track("api_calls", customer, 1)
        assert closing.stats.accepted == 7  # leaving the block flushed
        with pytest.raises(StripeMeterError, match="closed"):
            closing.track("api_calls", customer, 1)
        batcher.close()
    assert service.wait_for_count(api_key, customer, 307)["count"] == 307


def test_a_full_queue_raises_or_blocks_as_configured(
    service: Service, api_key: str, customer: str
) -> None:
    # Each batcher's first request is held (its request hook waits for the gate), so
    # the queue behind it fills: a full queue is what a producer meets when the
    # service does not keep up.
    gate = threading.Event()
    entered: list[int] = []

    def hold(request: httpx.Request) -> None:
        entered.append(1)
        gate.wait(10)

    def fill(batcher: Batcher) -> None:
        held = len(entered)
        batcher.track("api_calls", customer, 1)
        assert not batcher.flush(timeout=0)  # sent now, and held
        assert wait_until(lambda: len(entered) == held + 1)
        for _ in range(5):
            batcher.track("api_calls", customer, 1)

    http = httpx.Client(timeout=30, event_hooks={"request": [hold]})
    with http, StripeMeterClient(api_key, base_url=service.url, http_client=http) as client:
        options = {"max_queue_size": 5, "max_batch_size": 100, "flush_interval": 60}
        raising = client.batcher(**options, when_full="raise")
        fill(raising)
        with pytest.raises(QueueFullError):
            raising.track("api_calls", customer, 1)

        blocking = client.batcher(**options, block_timeout=0.3)
        fill(blocking)
        started = time.monotonic()
        with pytest.raises(QueueFullError):
            blocking.track("api_calls", customer, 1)
        assert time.monotonic() - started >= 0.25
        # Blocked without a timeout, a producer goes on once the service answers.
        unbounded = client.batcher(**options)
        fill(unbounded)
        done = threading.Event()

        def produce() -> None:
            unbounded.track("api_calls", customer, 1)
            done.set()

        producer = threading.Thread(target=produce)
        producer.start()
        assert not done.wait(0.3)  # still blocked
        gate.set()
        assert done.wait(5)
        producer.join()
        for batcher in (raising, blocking, unbounded):
            batcher.close()
    assert (raising.stats.accepted, blocking.stats.accepted, unbounded.stats.accepted) == (6, 6, 7)


def test_events_that_are_not_counted_are_reported_not_dropped(
    service: Service, api_key: str, customer: str
) -> None:
    seen: list[Failure] = []
    moment = now()
    with StripeMeterClient(api_key, base_url=service.url) as client:
        batcher = client.batcher(on_failure=seen.append, flush_interval=60)
        batcher.track("api_calls", customer, 1, moment, idempotency_key=f"{customer}-x")
        batcher.track("api_calls", customer, 2, moment, idempotency_key=f"{customer}-x")
        batcher.track("api_calls", customer, 1, now() + timedelta(hours=1))
        batcher.close()
    assert [(f.result.status, f.result.field) for f in seen if f.result] == [
        ("conflict", "idempotencyKey"),
        ("error", "ts"),
    ]
    assert [f.event.quantity for f in seen] == [2, 1]
    assert batcher.failures == seen
    stats = batcher.stats
    assert (stats.accepted, stats.conflicts, stats.errors) == (1, 1, 1)


def test_a_request_that_fails_every_retry_reports_each_event() -> None:
    seen: list[Failure] = []
    nowhere = f"http://127.0.0.1:{free_port()}"
    retry = RetryPolicy(max_attempts=2, initial_delay=0.01)
    with StripeMeterClient("k", base_url=nowhere, retry=retry) as client:
        batcher = client.batcher(on_failure=seen.append)
        for _ in range(3):
            batcher.track("api_calls", "cus_1", 1)
        batcher.close()
    assert len(seen) == 3
    assert all(isinstance(f.error, APIConnectionError) for f in seen)
    assert batcher.stats.failed_requests == 3


def test_events_still_queued_at_interpreter_exit_are_sent(
    service: Service, api_key: str, customer: str
) -> None:
    script = textwrap.dedent(
        f"""
        from stripemeter import StripeMeterClient
        client = StripeMeterClient({api_key!r}, base_url={service.url!r})
        batcher = client.batcher(flush_interval=60)
        for _ in range(5):
            batcher.track("api_calls", {customer!r}, 1)
        # no flush, no close: the atexit hook sends them
        """
    )
    subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**service.env, "PYTHONPATH": str(ROOT / "sdk" / "python" / "src")},
        check=True,
        timeout=60,
    )
    assert service.wait_for_count(api_key, customer, 5)["count"] == 5


def test_the_async_batcher_flushes_by_size_interval_flush_and_close(
    service: Service, api_key: str, customer: str
) -> None:
    async def scenario() -> dict[str, object]:
        async with AsyncStripeMeterClient(api_key, base_url=service.url) as client:
            batcher = client.batcher(max_batch_size=10, flush_interval=60)
            for _ in range(25):
                await batcher.track("api_calls", customer, 1)
            for _ in range(200):
                if batcher.stats.answered == 20:
                    break
                await asyncio.sleep(0.02)
            by_size = batcher.stats.answered
            flushed = await batcher.flush(timeout=10)
            after_flush = batcher.stats.accepted
            await batcher.close()

            ticking = client.batcher(flush_interval=0.2)
            await ticking.track("api_calls", customer, 1)
            for _ in range(200):
                if ticking.stats.accepted == 1:
                    break
                await asyncio.sleep(0.02)
            by_interval = ticking.stats.accepted
            await ticking.close()

            async with client.batcher(flush_interval=60) as closing:
                for _ in range(4):
                    await closing.track("api_calls", customer, 1)
            raising = client.batcher(
                max_queue_size=2, max_batch_size=10, flush_interval=60, when_full="raise"
            )
            await raising.track("api_calls", customer, 1)
            await raising.track("api_calls", customer, 1)
            try:
                await raising.track("api_calls", customer, 1)
                full = False
            except QueueFullError:
                full = True
            await raising.close()
        # The first request held (its hook waits for the gate), so the queue fills.
        gate = asyncio.Event()
        entered: list[int] = []

        async def hold(request: httpx.Request) -> None:
            entered.append(1)
            await gate.wait()

        async with (
            httpx.AsyncClient(event_hooks={"request": [hold]}) as http,
            AsyncStripeMeterClient(api_key, base_url=service.url, http_client=http) as held,
        ):
            blocking = held.batcher(
                max_queue_size=1, max_batch_size=10, flush_interval=60, block_timeout=0.2
            )
            await blocking.track("api_calls", customer, 1)
            while not entered:
                await asyncio.sleep(0.01)
            await blocking.track("api_calls", customer, 1)  # the queue is full
            try:
                await blocking.track("api_calls", customer, 1)
                blocked = False
            except QueueFullError:
                blocked = True
            gate.set()
            await blocking.close()
            return {
                "by_size": by_size,
                "flushed": (flushed, after_flush),
                "by_interval": by_interval,
                "closed": closing.stats.accepted,
                "full": (full, raising.stats.accepted),
                "blocked": (blocked, blocking.stats.accepted),
            }

    assert asyncio.run(scenario()) == {
        "by_size": 20,
        "flushed": (True, 25),
        "by_interval": 1,
        "closed": 4,
        "full": (True, 2),
        "blocked": (True, 2),
    }
    assert service.wait_for_count(api_key, customer, 34)["count"] == 34


def test_two_senders_send_side_by_side_and_flush_still_waits_for_every_answer(
    service: Service, api_key: str, customer: str
) -> None:
    in_flight: list[int] = []
    most = [0]

    def started(request: object) -> None:
        in_flight.append(1)
        most[0] = max(most[0], len(in_flight))

    def answered(response: object) -> None:
        in_flight.pop()

    http = httpx.Client(timeout=30, event_hooks={"request": [started], "response": [answered]})
    with StripeMeterClient(api_key, base_url=service.url, http_client=http) as client:
        batcher = client.batcher(max_batch_size=100, flush_interval=60, senders=2)
        for _ in range(3_000):
            batcher.track("api_calls", customer, 1)
        assert batcher.flush(timeout=60)
        assert batcher.stats.accepted == 3_000  # every batch answered, whichever sender
        batcher.close()

        async def with_tasks() -> int:
            async with AsyncStripeMeterClient(api_key, base_url=service.url) as aclient:
                abatcher = aclient.batcher(max_batch_size=50, flush_interval=60, senders=3)
                for _ in range(500):
                    await abatcher.track("api_calls", customer, 1)
                assert await abatcher.flush(timeout=60)
                accepted = abatcher.stats.accepted
                await abatcher.close()
                return accepted

        assert asyncio.run(with_tasks()) == 500
    http.close()
    assert most[0] == 2  # two requests were in flight at once
    assert service.wait_for_count(api_key, customer, 3_500)["count"] == 3_500


def test_closing_the_client_first_sends_what_its_batcher_still_holds(
    service: Service, api_key: str, customer: str
) -> None:
    # The batcher made inside the client's ``with`` but never closed there: its events
    # must go before the client's connections close, not fail later at interpreter exit.
    with StripeMeterClient(api_key, base_url=service.url) as client:
        batcher = client.batcher(flush_interval=60)
        for _ in range(5):
            batcher.track("api_calls", customer, 1)
    batcher.close()  # what the atexit hook does
    assert (batcher.stats.accepted, batcher.stats.failed_requests) == (5, 0)
    with pytest.raises(StripeMeterError, match="closed"):
        batcher.track("api_calls", customer, 1)

    async def main() -> AsyncBatcher:
        async with AsyncStripeMeterClient(api_key, base_url=service.url) as client:
            batcher = client.batcher(flush_interval=60)
            for _ in range(5):
                await batcher.track("api_calls", customer, 1)
        return batcher

    closed = asyncio.run(main())
    assert (closed.stats.accepted, closed.stats.failed_requests) == (5, 0)
    assert service.wait_for_count(api_key, customer, 10)["count"] == 10


def test_a_key_that_cannot_be_sent_is_refused_when_queued_not_with_its_whole_batch(
    service: Service, api_key: str, customer: str
) -> None:
    # A lone surrogate (text decoded with errors="surrogateescape") has no UTF-8 form: it
    # must not reach the batch, whose encoding would then fail for every event in it.
    with StripeMeterClient(api_key, base_url=service.url) as client:
        batcher = client.batcher(flush_interval=60)
        batcher.track("api_calls", customer, 1)
        with pytest.raises(ValueError, match="idempotency_key"):
            batcher.track("api_calls", customer, 1, idempotency_key="order-\udcff")
        batcher.track("api_calls", customer, 1)
        batcher.close()
    assert (batcher.stats.accepted, batcher.stats.failed_requests) == (2, 0)


def test_a_batcher_inherited_by_a_forked_child_sends_the_childs_events(
    service: Service, api_key: str, customer: str
) -> None:
    # A pre-forking server (gunicorn --preload) makes the batcher in the parent; each
    # worker is a child without the parent's sending thread.
    script = textwrap.dedent(
        f"""
        import json, os
        from stripemeter import StripeMeterClient
        client = StripeMeterClient({api_key!r}, base_url={service.url!r})
        batcher = client.batcher(flush_interval=60)
        batcher.track("api_calls", {customer!r}, 1)  # the parent's, still queued at the fork
        pid = os.fork()
        if pid == 0:
            for _ in range(3):
                batcher.track("api_calls", {customer!r}, 1)
            flushed = batcher.flush(timeout=10)
            stats = batcher.stats
            print(json.dumps([flushed, stats.queued, stats.accepted]), flush=True)
            batcher.close()
            os._exit(0)
        os.waitpid(pid, 0)
        batcher.close()
        print(json.dumps([batcher.stats.queued, batcher.stats.accepted]), flush=True)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**service.env, "PYTHONPATH": str(ROOT / "sdk" / "python" / "src")},
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    )
    child, parent = done.stdout.splitlines()
    assert json.loads(child) == [True, 3, 3]
    assert json.loads(parent) == [1, 1]
    assert service.wait_for_count(api_key, customer, 4)["count"] == 4
