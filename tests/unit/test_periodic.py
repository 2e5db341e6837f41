"""The background-thread helper: runs on time, stops promptly, outlives a failed run."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from adapters.periodic import Periodic, StoppableThread

log = logging.getLogger("test.periodic")


def test_a_periodic_runs_repeatedly_until_stopped_and_stops_promptly() -> None:
    runs: list[float] = []
    enough = threading.Event()

    def run() -> None:
        runs.append(time.monotonic())
        if len(runs) >= 3:
            enough.set()

    periodic = Periodic("test-periodic", 0.01, run, log=log, what="test run")
    periodic.start()
    assert periodic.alive
    assert enough.wait(5)
    # A long interval must not hold up stop(): the wait is interrupted at once.
    periodic.interval = 60
    started = time.monotonic()
    periodic.stop()
    assert time.monotonic() - started < 2
    assert not periodic.alive
    count = len(runs)
    time.sleep(0.05)
    assert len(runs) == count


def test_an_exception_in_one_run_is_logged_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0
    recovered = threading.Event()

    def run() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("the database went away")
        recovered.set()

    periodic = Periodic("test-periodic", 0.01, run, log=log, what="test run")
    with caplog.at_level(logging.ERROR, logger="test.periodic"):
        periodic.start()
        try:
            assert recovered.wait(5)
        finally:
            periodic.stop()
    failures = [r for r in caplog.records if r.name == "test.periodic"]
    assert failures[0].getMessage() == "test run failed; trying again in 0.01 s"
    assert failures[0].exc_info is not None
    assert "the database went away" in str(failures[0].exc_info[1])
    assert calls >= 2


def test_a_stoppable_thread_can_be_started_again_after_a_stop() -> None:
    entered = threading.Semaphore(0)

    def body(stopping: threading.Event) -> None:
        entered.release()
        stopping.wait()

    thread = StoppableThread("test-stoppable", body, join_timeout=5)
    for _ in range(2):
        thread.start()
        assert entered.acquire(timeout=5)
        thread.stop()
        assert not thread.alive
