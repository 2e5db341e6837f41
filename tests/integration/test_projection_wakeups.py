"""How the projection runner learns that the log grew: woken by a commit, not by its poll.

Every runner here polls only every 30 s (or has a 30 s safety poll), so a
counter that shows up within a few seconds was brought by a wake: the
in-process writer's ``on_commit``, or (PostgreSQL) the LISTEN connection that
hears the event store's NOTIFY from another process. The reconnect tests
kill that connection from the server side, as a restarted PostgreSQL or a
dropped network would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from uuid import UUID

import psycopg
import pytest

from adapters.group_commit import GroupCommitWriter
from adapters.log_listener import PostgresLogListener
from adapters.metrics import Metrics
from adapters.persistence import Stores, open_stores
from adapters.settings import Settings
from projections.runner import BatchProjectionRunner
from tests.conftest import FakeClock
from tests.helpers import setup_tenant, submission

LONG = 30.0  # seconds: a poll that never comes within a test
QUICK = 5.0  # seconds: the most a woken runner may take here, on a loaded machine


def counted(stores: Stores, tenant: UUID) -> Decimal:
    return sum((c.value for c in stores.views.counters.counters(tenant)), Decimal(0))


def wait_for(condition: Callable[[], bool], timeout: float = QUICK) -> float:
    """Seconds until ``condition()`` holds; fails the test after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"not within {timeout} s")
        time.sleep(0.01)
    return time.monotonic() - started


def slow_polls(settings: Settings, **seconds: float) -> Settings:
    defaults = {"poll": LONG, "safety_poll": LONG}
    defaults.update(seconds)
    return dataclasses.replace(
        settings,
        projection_poll_seconds=defaults["poll"],
        projection_safety_poll_seconds=defaults["safety_poll"],
    )


@pytest.fixture
def writer(settings: Settings, clock: FakeClock) -> Iterator[Stores]:
    """The process that writes (no runner of its own started)."""
    stores = open_stores(settings, clock)
    yield stores
    stores.close()


@pytest.fixture
def postgres_only(settings: Settings) -> None:
    if settings.postgres is None:
        pytest.skip("SQLite has no notifications: a runner in another process polls")


def started_runner(stores: Stores) -> BatchProjectionRunner:
    """Start ``stores``' runner and wait until it has caught up and is waiting for news."""
    runner = stores.views.runner
    runner.start()
    wait_for(lambda: runner.lag().events == 0)
    if runner.wake_source is not None:
        wait_for(lambda: runner.wake_source is not None and runner.wake_source.connected)
    time.sleep(0.2)  # its first batches are done: from here on it waits
    return runner


def listener_of(runner: BatchProjectionRunner) -> PostgresLogListener:
    assert isinstance(runner.wake_source, PostgresLogListener)
    return runner.wake_source


def terminate(settings: Settings, backend_pid: int) -> None:
    assert settings.postgres is not None
    with psycopg.connect(settings.postgres.conninfo, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (backend_pid,))


def test_a_commit_of_the_writer_in_this_process_wakes_the_runner(
    settings: Settings, clock: FakeClock
) -> None:
    """The embedded writer (thread or process) calls ``runner.wake`` after each commit."""
    stores = open_stores(slow_polls(settings), clock)
    tenant = setup_tenant(stores)
    runner = stores.views.runner
    runner.wake_source = None  # only the commit may wake it here, not PostgreSQL's LISTEN
    writer = GroupCommitWriter(stores.app, Metrics(), on_commit=runner.wake)
    writer.start()
    try:
        started_runner(stores)
        events = [submission(tenant, 3, clock.now, key=f"e{i}") for i in range(5)]
        asyncio.run(writer.submit(events))
        wait_for(lambda: counted(stores, tenant) == 15)
    finally:
        writer.stop()
        runner.stop()
        stores.close()


def test_a_commit_in_another_process_wakes_the_runner_through_listen(
    postgres_only: None, writer: Stores, settings: Settings, clock: FakeClock
) -> None:
    tenant = setup_tenant(writer)
    worker = open_stores(slow_polls(settings), clock)  # as `stripemeter worker` opens them
    try:
        started_runner(worker)
        total = 0
        # One event, then a group commit's size: the writer may insert them differently
        # (a large batch by COPY), and each way must NOTIFY.
        for round_, size in enumerate((1, 200, 1)):
            batch = [submission(tenant, 2, clock.now, key=f"r{round_}-{n}") for n in range(size)]
            writer.app.usage.record_usage(batch)
            total += 2 * size
            wait_for(lambda expected=total: counted(worker, tenant) == expected)
    finally:
        worker.views.runner.stop()
        worker.close()


def test_while_listening_the_runner_still_polls_slowly_for_a_missed_notification(
    writer: Stores, settings: Settings, clock: FakeClock
) -> None:
    """A wake source that is connected but never wakes (every notification missed): the
    runner waits its safety interval, not its short poll, and then finds the events."""

    class Deaf:
        connected = True

        def start(self, wake: Callable[[], None]) -> None:
            pass

        def stop(self) -> None:
            pass

    tenant = setup_tenant(writer)
    worker = open_stores(slow_polls(settings, poll=0.01, safety_poll=1.5), clock)
    runner = worker.views.runner
    runner.wake_source = Deaf()
    started = time.monotonic()
    runner.start()
    try:
        writer.app.usage.record_usage([submission(tenant, 7, clock.now, key="missed")])
        time.sleep(max(0.0, started + 1.0 - time.monotonic()))
        assert counted(worker, tenant) == 0  # its first wait (1.5 s) has not ended
        wait_for(lambda: counted(worker, tenant) == 7)
    finally:
        runner.stop()
        worker.close()


def test_the_runner_listens_again_after_its_connection_is_killed(
    postgres_only: None,
    writer: Stores,
    settings: Settings,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tenant = setup_tenant(writer)
    worker = open_stores(slow_polls(settings), clock)
    runner = worker.views.runner
    listener = listener_of(runner)
    listener.reconnect_delay = 0.1
    try:
        started_runner(worker)
        killed = listener.backend_pid
        assert killed is not None
        with caplog.at_level(logging.WARNING, logger="stripemeter.projections"):
            terminate(settings, killed)
            wait_for(lambda: listener.connected and listener.backend_pid != killed)
        [failure] = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert "LISTEN connection to PostgreSQL" in failure.getMessage()
        assert "password" not in failure.getMessage()
        assert any("listening to PostgreSQL again" in r.getMessage() for r in caplog.records)

        writer.app.usage.record_usage([submission(tenant, 4, clock.now, key="after")])
        wait_for(lambda: counted(worker, tenant) == 4)
    finally:
        runner.stop()
        worker.close()


def test_while_the_listen_connection_is_down_the_runner_polls_at_its_normal_pace(
    postgres_only: None, writer: Stores, settings: Settings, clock: FakeClock
) -> None:
    tenant = setup_tenant(writer)
    worker = open_stores(slow_polls(settings, poll=0.05), clock)  # safety poll: 30 s
    runner = worker.views.runner
    listener = listener_of(runner)
    listener.reconnect_delay = LONG  # it stays down for the whole test
    try:
        started_runner(worker)
        assert listener.backend_pid is not None
        terminate(settings, listener.backend_pid)
        wait_for(lambda: not listener.connected)
        writer.app.usage.record_usage([submission(tenant, 6, clock.now, key="down")])
        wait_for(lambda: counted(worker, tenant) == 6)
    finally:
        runner.stop()
        worker.close()


def test_wakes_in_quick_succession_share_batches(
    writer: Stores, settings: Settings, clock: FakeClock
) -> None:
    """A busy writer wakes the runner after every commit: a batch starts no sooner than
    ``min_batch_interval`` after the previous one ended, and every event is still counted."""
    tenant = setup_tenant(writer)
    worker = open_stores(slow_polls(settings), clock)
    runner = worker.views.runner
    runner.wake_source = None
    runner.min_batch_interval = 0.25
    batches = 0
    run_once = runner.run_once

    def counting_run_once() -> int:
        nonlocal batches
        batches += 1
        return run_once()

    runner.run_once = counting_run_once  # type: ignore[method-assign]
    started_runner(worker)
    try:
        batches = 0
        started = time.monotonic()
        for n in range(30):
            writer.app.usage.record_usage([submission(tenant, 1, clock.now, key=f"w{n}")])
            runner.wake()
            time.sleep(0.02)
        elapsed = time.monotonic() - started
        wait_for(lambda: counted(worker, tenant) == 30)
        assert batches <= elapsed / 0.25 + 2, (batches, elapsed)
    finally:
        runner.stop()
        worker.close()


def test_a_wake_after_a_quiet_spell_starts_a_batch_at_once(
    writer: Stores, settings: Settings, clock: FakeClock
) -> None:
    """Coalescing delays a batch only right after one that found work: polls that found
    nothing (every 50 ms here) do not push a woken batch back."""
    tenant = setup_tenant(writer)
    worker = open_stores(slow_polls(settings, poll=0.05), clock)
    runner = worker.views.runner
    runner.wake_source = None
    runner.min_batch_interval = 2.0
    started_runner(worker)
    try:
        time.sleep(2.5)  # its last batch with work is 2.5 s old; empty polls since
        writer.app.usage.record_usage([submission(tenant, 5, clock.now, key="quiet")])
        runner.wake()
        assert wait_for(lambda: counted(worker, tenant) == 5) < 1.0
    finally:
        runner.stop()
        worker.close()


def test_stopping_the_runner_stops_its_listener(
    postgres_only: None, settings: Settings, clock: FakeClock
) -> None:
    worker = open_stores(settings, clock)
    runner = worker.views.runner
    listener = listener_of(runner)
    try:
        started_runner(worker)
        assert listener.connected
        threads = {t.name for t in threading.enumerate()}
        assert {"projection-runner", "log-listener"} <= threads
        runner.stop()
        assert not listener.connected
        assert "log-listener" not in {t.name for t in threading.enumerate()}
    finally:
        worker.close()
