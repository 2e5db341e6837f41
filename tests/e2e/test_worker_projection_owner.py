"""Two real `stripemeter worker` processes on PostgreSQL: one runs the views, the other
stands by, and takes over when the first is killed — no conflict storm in the logs."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from adapters.persistence import Stores, open_stores
from adapters.settings import PostgresSettings, Settings
from tests.conftest import reset_postgres
from tests.e2e.test_worker_metrics_ports import start_worker, wait_for_line
from tests.helpers import setup_tenant, submission
from tests.integration.test_projection_wakeups import counted, wait_for

OWNS = "counters, usage_events"  # part of the views runner's line, not the outbox's


@pytest.fixture
def pg_env(postgres_database: PostgresSettings, tmp_path: Path) -> Iterator[dict[str, str]]:
    reset_postgres(postgres_database)
    db = postgres_database
    yield {
        **os.environ,
        "STRIPEMETER_DATABASE_URL": f"postgresql://{db.user}:{db.password}@{db.host}:{db.port}"
        f"/{db.dbname}",
        "STRIPEMETER_DATA_DIR": str(tmp_path / "data"),
        "STRIPEMETER_WORKER_METRICS_PORT": "0",
    }


def runner_line(log: Path) -> str:
    return next(line for line in log.read_text().splitlines() if OWNS in line)


def test_killing_the_owner_hands_the_views_to_the_worker_standing_by(
    pg_env: dict[str, str], postgres_database: PostgresSettings, tmp_path: Path
) -> None:
    stores: Stores = open_stores(Settings(data_dir=tmp_path, postgres=postgres_database))
    tenant = setup_tenant(stores)
    logs = [tmp_path / "worker-0.log", tmp_path / "worker-1.log"]
    workers: list[subprocess.Popen[bytes]] = []
    try:
        workers.append(start_worker(pg_env, logs[0]))
        wait_for_line(logs[0], OWNS, workers[0])
        workers.append(start_worker(pg_env, logs[1]))
        wait_for_line(logs[1], OWNS, workers[1])
        owner = next(n for n in (0, 1) if "run by this process" in runner_line(logs[n]))
        other = 1 - owner
        assert "standing by" in runner_line(logs[other])

        # Usage while both run: counted exactly, by one of them.
        now = datetime.now(UTC)
        for round_ in range(30):
            stores.app.usage.record_usage(
                [submission(tenant, 1, now, key=f"a-{round_}-{n}") for n in range(10)]
            )
            time.sleep(0.02)
        wait_for(lambda: counted(stores, tenant) == Decimal(300), timeout=30)

        workers[owner].kill()  # SIGKILL: its connections, and the lock, go with it
        workers[owner].wait()
        killed = time.monotonic()
        stores.app.usage.record_usage([submission(tenant, 2, now, key=f"b-{n}") for n in range(10)])
        took = wait_for(lambda: counted(stores, tenant) == Decimal(320), timeout=30)
        print(f"the standby counted the next events {took:.2f} s after the owner's kill -9")
        assert time.monotonic() - killed < 10
        assert "taken over by this process" in logs[other].read_text()
        for log in logs:
            assert "advanced by another runner" not in log.read_text()
    finally:
        for worker in workers:
            worker.terminate()
            worker.wait(timeout=30)
        stores.close()
