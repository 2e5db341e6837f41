"""Shared fixtures: a controllable clock and one store per backend.

Persistence and API tests take the ``settings`` fixture, which is
parametrized over SQLite and PostgreSQL, so each is written once and runs on
both. PostgreSQL comes from STRIPEMETER_TEST_DATABASE_URL (default: the local
server); when it is unreachable the PostgreSQL runs are skipped, except under
CI, where that is a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from adapters.persistence import Stores, open_stores
from adapters.settings import PostgresSettings, Settings
from stripe_emulator import EmulatorConfig
from stripe_emulator.testing import RunningEmulator, running_emulator

SERVER_URL = os.environ.get(
    "STRIPEMETER_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


class FakeClock:
    """A clock that stands still until a test moves it."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime(2026, 3, 15, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[PostgresSettings]:
    server = PostgresSettings.from_url(SERVER_URL)
    try:
        admin = psycopg.connect(server.conninfo, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as error:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required under CI and is unreachable: {error}")
        pytest.skip(f"PostgreSQL unreachable: {error}")
    name = f"stripemeter_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PostgresSettings(server.host, server.port, server.user, server.password, name)
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def reset_postgres(database: PostgresSettings) -> None:
    with psycopg.connect(database.conninfo, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    if request.param == "sqlite":
        return Settings(data_dir=tmp_path / "data")
    database: PostgresSettings = request.getfixturevalue("postgres_database")
    reset_postgres(database)
    return Settings(data_dir=tmp_path / "data", postgres=database)


@pytest.fixture
def stores(settings: Settings, clock: FakeClock) -> Iterator[Stores]:
    opened = open_stores(settings, clock)
    try:
        yield opened
    finally:
        opened.close()


# -- the Stripe emulator -------------------------------------------------------

EMULATOR_TEST_CONFIG = {
    "rate_limit": 0,
    "summary_lag_seconds": 0.0,
    "hang_seconds": 0.6,
    "webhook_retry_base_seconds": 0.05,
    "webhook_max_attempts": 3,
}


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[RunningEmulator]:
    with running_emulator(EmulatorConfig(**EMULATOR_TEST_CONFIG)) as server:  # type: ignore[arg-type]
        yield server


@pytest.fixture
def emulator(emulator_server: RunningEmulator, clock: FakeClock) -> RunningEmulator:
    """A clean emulated Stripe account whose clock stands where the test's clock stands."""
    emulator_server.reset()
    emulator_server.configure(**EMULATOR_TEST_CONFIG)
    emulator_server.set_now(int(clock.now.timestamp()), frozen=True)
    return emulator_server
