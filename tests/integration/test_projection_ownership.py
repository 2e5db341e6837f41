"""One runner at a time follows the log for the views; another stands by and takes over.

Two stores over one database stand for two worker processes (each its own
connections, its own lock file handle on SQLite).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import psycopg
import pytest

from adapters.persistence import Stores, open_stores
from adapters.settings import Settings
from tests.conftest import FakeClock
from tests.helpers import setup_tenant, submission
from tests.integration.test_projection_wakeups import counted, wait_for

STANDBY = 0.2  # seconds between a standby runner's tries of the lock


@pytest.fixture
def two(settings: Settings, clock: FakeClock) -> Iterator[tuple[Stores, Stores]]:
    first, second = open_stores(settings, clock), open_stores(settings, clock)
    for stores in (first, second):
        stores.views.runner.standby_interval = STANDBY
    yield first, second
    for stores in (first, second):
        stores.views.runner.stop()
        stores.close()


def test_one_runner_owns_the_views_the_other_stands_by_then_takes_over(
    two: tuple[Stores, Stores], clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="projections.runner")
    owner, standby = two
    tenant = setup_tenant(owner)
    owner.views.runner.start()
    wait_for(lambda: owner.views.runner.owning)
    standby.views.runner.start()
    wait_for(lambda: "standing by" in caplog.text)

    # Busy log, both running: only the owner moves, every event counted once.
    for round_ in range(20):
        owner.app.usage.record_usage(
            [submission(tenant, 1, clock.now, key=f"a-{round_}-{n}") for n in range(10)]
        )
    wait_for(lambda: counted(standby, tenant) == Decimal(200), timeout=30)
    assert owner.views.runner.owning and not standby.views.runner.owning
    assert "advanced by another runner" not in caplog.text

    # The owner goes: the one standing by takes the views over and counts the rest.
    owner.views.runner.stop()
    took = wait_for(lambda: standby.views.runner.owning, timeout=10)
    assert took < STANDBY + 3
    standby.app.usage.record_usage(
        [submission(tenant, 2, clock.now + timedelta(seconds=1), key=f"b-{n}") for n in range(5)]
    )
    wait_for(lambda: counted(owner, tenant) == Decimal(210), timeout=30)
    assert "taken over by this process" in caplog.text
    assert "advanced by another runner" not in caplog.text


def test_a_runner_stopped_while_standing_by_stops_at_once(two: tuple[Stores, Stores]) -> None:
    owner, standby = two
    owner.views.runner.start()
    wait_for(lambda: owner.views.runner.owning)
    standby.views.runner.standby_interval = 60
    standby.views.runner.start()
    time.sleep(0.3)
    started = time.monotonic()
    standby.views.runner.stop()
    assert time.monotonic() - started < 2
    assert owner.views.runner.owning


def test_an_owner_whose_lock_connection_is_cut_stands_by_and_the_other_takes_over(
    two: tuple[Stores, Stores],
    settings: Settings,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if settings.postgres is None:
        pytest.skip("SQLite's lock is a file: a process holds it until it closes it")
    caplog.set_level(logging.INFO, logger="projections.runner")
    first, second = two
    tenant = setup_tenant(first)
    first.views.runner.start()
    wait_for(lambda: first.views.runner.owning)
    second.views.runner.start()
    wait_for(lambda: "standing by" in caplog.text)

    # PostgreSQL restarted, a network cut, an operator's pg_terminate_backend: the
    # owner's lock goes with its connection, and the one standing by takes it.
    with psycopg.connect(settings.postgres.conninfo, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks"
            " WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
    wait_for(lambda: second.views.runner.owning, timeout=10)
    # The first notices within a second and stands by, instead of running beside it.
    wait_for(lambda: not first.views.runner.owning, timeout=10)
    assert "the connection that held their lock was cut" in caplog.text

    for round_ in range(10):
        first.app.usage.record_usage(
            [submission(tenant, 1, clock.now, key=f"c-{round_}-{n}") for n in range(10)]
        )
    wait_for(lambda: counted(first, tenant) == Decimal(100), timeout=30)
    time.sleep(1.5)  # the first's next look at the lock finds it held by the second
    assert second.views.runner.owning and not first.views.runner.owning
    assert "advanced by another runner" not in caplog.text


def test_a_database_refusing_connections_is_logged_once_not_every_try(
    two: tuple[Stores, Stores],
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if settings.postgres is None:
        pytest.skip("SQLite's lock is a file beside the database: nothing to refuse")
    caplog.set_level(logging.INFO, logger="projections.runner")
    owner, standby = two
    setup_tenant(owner)
    owner.views.runner.start()
    wait_for(lambda: owner.views.runner.owning)
    standby.views.runner.start()
    wait_for(lambda: "standing by" in caplog.text)
    database = settings.postgres.dbname
    with psycopg.connect(settings.postgres.conninfo, dbname="postgres", autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS false')
        try:
            # The one standing by tries every STANDBY seconds and fails each time.
            time.sleep(20 * STANDBY)
            failures = [r for r in caplog.records if "take the runner's lock" in r.getMessage()]
            assert standby.views.runner.last_error is not None
            assert len(failures) == 1, [r.getMessage() for r in failures]
        finally:
            admin.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true')
    wait_for(lambda: "the runner's lock can be taken again" in caplog.text, timeout=10)
    assert owner.views.runner.owning and not standby.views.runner.owning
