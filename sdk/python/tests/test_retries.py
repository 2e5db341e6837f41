"""Retries against a real local HTTP server that answers from a script."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from scripted_server import Answer, scripted
from sdk_service import ROOT

from stripemeter import (
    APIError,
    AsyncStripeMeterClient,
    Failure,
    QueueFullError,
    RetryPolicy,
    StripeMeterClient,
    StripeMeterError,
)
from stripemeter._config import NO_RETRIES

INGESTED = {
    "accepted": 1,
    "duplicates": 0,
    "conflicts": 0,
    "errors": 0,
    "results": [{"index": 0, "status": "accepted"}],
}
TWO_ACCEPTED = {
    "accepted": 2,
    "duplicates": 0,
    "conflicts": 0,
    "errors": 0,
    "results": [{"index": 0, "status": "accepted"}, {"index": 1, "status": "accepted"}],
}
NO_JITTER = RetryPolicy(max_attempts=3, initial_delay=0.0, max_delay=0.0)


def test_a_retry_after_given_as_an_http_date_is_honoured() -> None:
    # RFC 9110 allows either form; a proxy or load balancer in front of the service may
    # send the date. It has whole seconds: two ahead of this second is at least one from now.
    later = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=2)
    busy = Answer(503, {"title": "busy"}, {"Retry-After": format_datetime(later, usegmt=True)})
    with scripted([busy, Answer(200, INGESTED)]) as server:
        with StripeMeterClient("k", base_url=server.url, retry=NO_JITTER) as client:
            assert client.track("api_calls", "cus_1", 1).status == "accepted"
        first, second = server.seen
        assert second.at - first.at >= 0.9


REFUSED = Answer(400, {"title": "Malformed JSON", "detail": "no", "status": 400}, delay=0.3)


def test_an_on_failure_callback_that_queues_again_into_a_full_queue_does_not_hang() -> None:
    # Queueing a failed event again is the natural callback; the queue is full exactly
    # when sends fail. The sender must not wait for room only it can make.
    raised: list[BaseException] = []

    with (
        scripted([REFUSED]) as server,
        StripeMeterClient("k", base_url=server.url, retry=NO_RETRIES) as client,
    ):

        def again(failure: Failure) -> None:
            try:
                batcher.add(failure.event)
            except QueueFullError as error:
                raised.append(error)

        batcher = client.batcher(
            max_queue_size=1, max_batch_size=1, flush_interval=0.01, on_failure=again
        )
        batcher.track("api_calls", "cus_1", 1)
        time.sleep(0.1)  # the first event is in flight, answered in 0.3 s
        batcher.track("api_calls", "cus_1", 2)  # the queue is full again
        assert batcher.flush(timeout=3)
        batcher.close(timeout=3)
    assert raised and isinstance(raised[0], QueueFullError)


def test_an_async_on_failure_callback_that_queues_again_into_a_full_queue_does_not_hang() -> None:
    raised: list[BaseException] = []

    async def main() -> bool:
        async with AsyncStripeMeterClient("k", base_url=server.url, retry=NO_RETRIES) as client:

            async def again(failure: Failure) -> None:
                try:
                    await batcher.add(failure.event)
                except QueueFullError as error:
                    raised.append(error)

            batcher = client.batcher(
                max_queue_size=1, max_batch_size=1, flush_interval=0.01, on_failure=again
            )
            await batcher.track("api_calls", "cus_1", 1)
            await asyncio.sleep(0.1)
            await batcher.track("api_calls", "cus_1", 2)
            flushed = await batcher.flush(timeout=3)
            await asyncio.wait_for(batcher.close(), 3)
            return flushed

    with scripted([REFUSED]) as server:
        assert asyncio.run(main())
    assert raised and isinstance(raised[0], QueueFullError)


def test_a_batch_sent_in_two_requests_reports_only_the_failed_requests_events() -> None:
    # The batcher's batch is larger than one request may be: the first request is
    # answered (both events accepted), the second refused. Only the second's two
    # events were not counted.
    seen: list[Failure] = []
    with (
        scripted([Answer(200, TWO_ACCEPTED), Answer(400, {"title": "no"})]) as server,
        StripeMeterClient("k", base_url=server.url, retry=NO_RETRIES, max_batch_events=2) as client,
    ):
        batcher = client.batcher(max_batch_size=4, flush_interval=60, on_failure=seen.append)
        events = [batcher.track("api_calls", "cus_1", n) for n in range(1, 5)]
        batcher.close()
    assert (batcher.stats.accepted, batcher.stats.failed_requests) == (2, 2)
    assert [f.event for f in seen] == events[2:]


def test_the_async_batcher_reports_only_the_failed_requests_events() -> None:
    async def main() -> tuple[int, int]:
        async with AsyncStripeMeterClient(
            "k", base_url=server.url, retry=NO_RETRIES, max_batch_events=2
        ) as client:
            batcher = client.batcher(max_batch_size=4, flush_interval=60)
            for n in range(1, 5):
                await batcher.track("api_calls", "cus_1", n)
            await batcher.close()
            return batcher.stats.accepted, batcher.stats.failed_requests

    with scripted([Answer(200, TWO_ACCEPTED), Answer(400, {"title": "no"})]) as server:
        assert asyncio.run(main()) == (2, 2)


def test_an_async_on_failure_callback_may_close_the_batcher_as_the_sync_one_may() -> None:
    # "Stop at the first failure": close() from the callback runs in the sending task,
    # which must not wait for itself to end.
    async def main() -> tuple[int, int]:
        async with AsyncStripeMeterClient("k", base_url=server.url, retry=NO_RETRIES) as client:

            async def stop(failure: Failure) -> None:
                await batcher.close()

            batcher = client.batcher(flush_interval=60, on_failure=stop)
            for n in range(1, 3):
                await batcher.track("api_calls", "cus_1", n)
            await asyncio.wait_for(batcher.close(), 3)
            return batcher.stats.queued, batcher.stats.failed_requests

    with scripted([Answer(400, {"title": "no"})]) as server:
        assert asyncio.run(main()) == (2, 2)


def test_flush_from_an_on_failure_callback_raises_rather_than_wait_for_itself() -> None:
    raised: list[BaseException] = []
    with (
        scripted([Answer(400, {"title": "no"})]) as server,
        StripeMeterClient("k", base_url=server.url, retry=NO_RETRIES) as client,
    ):

        def flush(failure: Failure) -> None:
            try:
                batcher.flush()
            except StripeMeterError as error:
                raised.append(error)

        batcher = client.batcher(flush_interval=60, on_failure=flush)
        batcher.track("api_calls", "cus_1", 1)
        assert batcher.flush(timeout=3)
        batcher.close(timeout=3)
    assert len(raised) == 1

    async def main() -> bool:
        async with AsyncStripeMeterClient("k", base_url=server.url, retry=NO_RETRIES) as client:

            async def flush(failure: Failure) -> None:
                try:
                    await batcher.flush()
                except StripeMeterError as error:
                    raised.append(error)

            batcher = client.batcher(flush_interval=60, on_failure=flush)
            await batcher.track("api_calls", "cus_1", 1)
            flushed = await batcher.flush(timeout=3)
            await asyncio.wait_for(batcher.close(), 3)
            return flushed

    with scripted([Answer(400, {"title": "no"})]) as server:
        assert asyncio.run(asyncio.wait_for(main(), 10))
    assert len(raised) == 2


def test_giving_up_waiting_for_an_async_close_does_not_cancel_the_sends() -> None:
    # ``wait_for(batcher.close(), t)`` gives up waiting, like the sync close(timeout);
    # the batch in flight and the events queued behind it still go.
    async def main() -> int:
        async with AsyncStripeMeterClient("k", base_url=server.url, retry=NO_RETRIES) as client:
            batcher = client.batcher(max_batch_size=1, flush_interval=60)
            await batcher.track("api_calls", "cus_1", 1)
            await batcher.track("api_calls", "cus_1", 2)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(batcher.close(), 0.1)
            await asyncio.wait_for(batcher.close(), 5)
            return batcher.stats.accepted

    with scripted([Answer(200, INGESTED, delay=0.3)]) as server:
        assert asyncio.run(main()) == 2


def test_a_forked_child_opens_its_own_connections() -> None:
    # A connection the parent pooled before the fork is one socket in both processes:
    # two workers writing on it would read each other's answers.
    script = textwrap.dedent(
        """
        import os, sys
        from stripemeter import StripeMeterClient
        client = StripeMeterClient("k", base_url=sys.argv[1])
        client.get_usage("parent")
        pid = os.fork()
        if pid == 0:
            client.get_usage("child")
            os._exit(0)
        os.waitpid(pid, 0)
        client.get_usage("parent")
        """
    )
    usage = {"customerRef": "c", "counters": []}
    with scripted([Answer(200, usage)]) as server:
        subprocess.run(
            [sys.executable, "-c", script, server.url],
            env={**os.environ, "PYTHONPATH": str(ROOT / "sdk" / "python" / "src")},
            check=True,
            timeout=30,
        )
        parent, child, parent_again = (seen.peer for seen in server.seen)
    assert parent == parent_again  # the parent keeps its connection
    assert child != parent


def test_a_close_that_times_out_says_so_and_the_sends_go_on() -> None:
    with (
        scripted([Answer(200, INGESTED, delay=0.3)]) as server,
        StripeMeterClient("k", base_url=server.url, retry=NO_RETRIES) as client,
    ):
        batcher = client.batcher(flush_interval=60)
        batcher.track("api_calls", "cus_1", 1)
        assert batcher.close(timeout=0.05) is False  # still in flight: the caller must know
        assert batcher.close() is True
        assert batcher.stats.accepted == 1


def test_a_full_queue_is_sent_at_once_even_below_the_batch_size() -> None:
    # max_queue_size below max_batch_size: a full queue will not grow to a batch, so it
    # is due now; waiting for the interval would only keep producers blocked.
    five = {**INGESTED, "results": [{"index": i, "status": "accepted"} for i in range(5)]}
    with (
        scripted([Answer(200, five)]) as server,
        StripeMeterClient("k", base_url=server.url, retry=NO_RETRIES) as client,
    ):
        batcher = client.batcher(max_queue_size=5, flush_interval=60, block_timeout=2)
        for n in range(1, 11):
            batcher.track("api_calls", "cus_1", n)
        assert batcher.flush(timeout=2)
        assert batcher.stats.accepted == 10

    async def main() -> int:
        async with AsyncStripeMeterClient("k", base_url=server.url, retry=NO_RETRIES) as client:
            batcher = client.batcher(max_queue_size=5, flush_interval=60, block_timeout=2)
            for n in range(1, 11):
                await batcher.track("api_calls", "cus_1", n)
            assert await batcher.flush(timeout=2)
            return batcher.stats.accepted

    with scripted([Answer(200, five)]) as server:
        assert asyncio.run(main()) == 10


def test_an_ingest_answer_that_is_not_the_services_raises_a_typed_error() -> None:
    # A proxy's 200, or results that do not match the events sent: callers catching
    # StripeMeterError must see it, not a KeyError or a ValueError.
    answers = [
        Answer(200, {"ok": True}),
        Answer(200, {**INGESTED, "results": []}),
        Answer(200, [1, 2]),
    ]
    for answer in answers:
        with (
            scripted([answer]) as server,
            StripeMeterClient("k", base_url=server.url, retry=NO_RETRIES) as client,
            pytest.raises(APIError, match="answer"),
        ):
            client.track("api_calls", "cus_1", 1)
