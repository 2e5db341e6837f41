"""Retries against a service that fails for real: a writer restart (503), a service
killed outright (connection refused), and a service killed in the middle of a batch."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from sdk_service import Service

from stripemeter import (
    APIConnectionError,
    RetryPolicy,
    ServerError,
    StripeMeterClient,
    UsageEvent,
)

PATIENT = RetryPolicy(max_attempts=60, initial_delay=0.05, max_delay=0.5)
KILL_AT = 0.5  # of a request's usual time: the service dies while reading or committing it


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, str]]:
    """A service of this module's own: its tests kill it."""
    service = Service(tmp_path_factory.mktemp("sdk-resilience") / "data")
    key = service.set_up()["ingest,read,admin"]
    service.start()
    try:
        yield service, key
    finally:
        service.stop()


def kill_writer(service: Service) -> None:
    found = subprocess.run(
        ["pgrep", "-f", f"api.cli writer --socket .*-{service.port}.sock"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert len(found) == 1
    os.kill(int(found[0]), signal.SIGKILL)


def test_a_503_during_a_writer_restart_is_retried_and_counts_once(
    own: tuple[Service, str],
) -> None:
    service, key = own
    statuses: list[int] = []
    sent_at: list[float] = []
    http = httpx.Client(
        timeout=30,
        event_hooks={
            "request": [lambda _: sent_at.append(time.monotonic())],
            "response": [lambda r: statuses.append(r.status_code)],
        },
    )
    event = UsageEvent.create("api_calls", "cus_503", 4, idempotency_key="w-1")
    kill_writer(service)
    once = RetryPolicy(max_attempts=1)
    with (
        StripeMeterClient(key, base_url=service.url, retry=once) as impatient,
        pytest.raises(ServerError) as refused,
    ):
        impatient.track_batch([event])
    assert refused.value.status == 503
    assert "retrying is safe" in refused.value.detail
    with StripeMeterClient(key, base_url=service.url, retry=PATIENT, http_client=http) as client:
        first = client.track_batch([event]).results[0]
        again = client.track_batch([event]).results[0]
    http.close()
    assert statuses[0] == 503  # the writer was still down: the client waited and retried
    # The 503 says Retry-After: 1; the policy alone would have waited at most 0.05 s.
    assert sent_at[1] - sent_at[0] >= 1.0
    assert statuses[-2:] == [200, 200]
    assert (first.status, again.status) == ("accepted", "duplicate")
    assert service.wait_for_count(key, "cus_503", 1)["value"] == "4"


def test_no_answer_is_retried_until_the_service_is_back(own: tuple[Service, str]) -> None:
    service, key = own
    service.kill()
    with (
        StripeMeterClient(
            key, base_url=service.url, retry=RetryPolicy(max_attempts=2, initial_delay=0.01)
        ) as impatient,
        pytest.raises(APIConnectionError),
    ):
        impatient.track("api_calls", "cus_down", 1)
    restarted = threading.Timer(1.0, service.start)
    restarted.start()
    started = time.monotonic()
    try:
        with StripeMeterClient(key, base_url=service.url, retry=PATIENT) as client:
            result = client.track("api_calls", "cus_down", 2)
    finally:
        restarted.join()
    assert time.monotonic() - started >= 1.0  # refused until the service came back
    assert result.status == "accepted"
    assert service.wait_for_count(key, "cus_down", 1)["value"] == "2"


class RecordingTransport(httpx.HTTPTransport):
    """The real HTTP transport, noting each request that got no answer and how it failed."""

    def __init__(self) -> None:
        super().__init__()
        self.failures: list[str] = []
        self.latencies: list[float] = []
        self.on_send: list[object] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for hook in self.on_send:
            hook()  # type: ignore[operator]
        started = time.monotonic()
        try:
            response = super().handle_request(request)
        except httpx.TransportError as error:
            self.failures.append(type(error).__name__)
            raise
        self.latencies.append(time.monotonic() - started)
        return response


def test_a_service_killed_mid_batch_loses_and_doubles_nothing(own: tuple[Service, str]) -> None:
    """SIGKILL to the service's process group while a batch is in flight (the batcher
    sends 3,000 events), a restart on the same port and data: every event counts once."""
    service, key = own
    total = 3_000
    transport = RecordingTransport()
    killed = threading.Event()

    def kill_and_restart() -> None:
        service.kill()
        killed.set()
        time.sleep(0.3)
        service.start()

    chaos: list[threading.Timer] = []

    def kill_while_the_fifth_request_is_in_flight() -> None:
        if len(transport.latencies) == 4 and not chaos:
            usual = sorted(transport.latencies)[1]
            chaos.append(threading.Timer(usual * KILL_AT, kill_and_restart))
            chaos[0].start()

    transport.on_send.append(kill_while_the_fifth_request_is_in_flight)
    http = httpx.Client(transport=transport, timeout=30)
    with StripeMeterClient(key, base_url=service.url, retry=PATIENT, http_client=http) as client:
        batcher = client.batcher(max_batch_size=500, flush_interval=0.05)
        for i in range(total):
            batcher.track("api_calls", "cus_killed", 1, meta={"n": i})
        assert batcher.flush(timeout=120)
        chaos[0].join()
        batcher.close()
    http.close()
    stats = batcher.stats
    print(f"killed mid-batch: {stats}, failed attempts: {transport.failures}")
    assert killed.is_set()
    # The request in flight lost its connection (then the restart refused a few): the
    # client's retries carried the batch, with the same keys.
    assert transport.failures
    assert stats.failed_requests == stats.errors == stats.conflicts == 0
    assert stats.accepted + stats.duplicates == total
    counter = service.wait_for_count(key, "cus_killed", total, within=60)
    assert (counter["count"], counter["value"]) == (total, str(total))


class LosesTheFirstAnswers(httpx.HTTPTransport):
    """The real transport, but the service's first ``lose`` answers never reach the client:
    the service has committed, the client sees a read timeout (as after a slow answer)."""

    def __init__(self, lose: int) -> None:
        super().__init__()
        self.lose = lose

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if self.lose > 0:
            self.lose -= 1
            response.read()
            response.close()
            raise httpx.ReadTimeout("the answer was lost on its way back", request=request)
        return response


def test_a_retry_after_a_lost_answer_is_a_duplicate_never_a_second_event(
    own: tuple[Service, str],
) -> None:
    service, key = own
    retry = RetryPolicy(max_attempts=3, initial_delay=0.01)
    http = httpx.Client(transport=LosesTheFirstAnswers(1), timeout=30)
    with StripeMeterClient(key, base_url=service.url, retry=retry, http_client=http) as client:
        answer = client.track_batch(
            [UsageEvent.create("api_calls", "cus_lost", 1) for _ in range(50)]
        )
    http.close()
    assert [r.status for r in answer.results] == ["duplicate"] * 50
    # Through the batcher: the first batch's answer is lost twice; its third attempt is
    # a duplicate, and the batches after it are accepted.
    http = httpx.Client(transport=LosesTheFirstAnswers(2), timeout=30)
    with StripeMeterClient(key, base_url=service.url, retry=retry, http_client=http) as client:
        batcher = client.batcher(max_batch_size=100)
        for _ in range(250):
            batcher.track("api_calls", "cus_lost", 1)
        batcher.close()
    http.close()
    stats = batcher.stats
    assert (stats.accepted, stats.duplicates, stats.failed_requests) == (150, 100, 0)
    counter = service.wait_for_count(key, "cus_lost", 300)
    assert (counter["count"], counter["value"]) == (300, "300")
