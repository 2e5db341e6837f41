"""Shared fixtures: a controllable clock and one store per backend.

Persistence and API tests take the ``settings`` fixture, which is
parametrized over SQLite and PostgreSQL, so each is written once and runs on
both. PostgreSQL comes from STRIPEMETER_TEST_DATABASE_URL (default: the local
server); when it is unreachable the PostgreSQL runs are skipped, except under
CI, where that is a failure. Broker tests take ``broker``, parametrized the
same way over Redis and RabbitMQ.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pika
import psycopg
import pytest
import redis

from adapters.persistence import Stores, open_stores
from adapters.settings import PostgresSettings, Settings
from stripe_emulator import EmulatorConfig
from stripe_emulator.testing import RunningEmulator, running_emulator

SERVER_URL = os.environ.get(
    "STRIPEMETER_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("STRIPEMETER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
RABBITMQ_URL = os.environ.get(
    "STRIPEMETER_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"
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
    "meter_event_latency_seconds": 0.0,
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


# -- the Dramatiq brokers ------------------------------------------------------


def _unreachable(service: str, error: Exception) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{service} is required under CI and is unreachable: {error}")
    pytest.skip(f"{service} unreachable: {error}")


def _redis_cleanup(queue: str) -> None:
    """Every key Dramatiq made for this queue: the queue, its delay and dead-letter queues, acks."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        keys = list(client.scan_iter(match=f"*{queue}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def _rabbitmq_cleanup(queue: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    try:
        channel = connection.channel()
        for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
            channel.queue_delete(name)
    finally:
        connection.close()


@dataclass(frozen=True)
class BrokerUnderTest:
    kind: str  # "redis" or "rabbitmq"
    url: str
    queue: str


@pytest.fixture(params=["redis", "rabbitmq"])
def broker(request: pytest.FixtureRequest) -> Iterator[BrokerUnderTest]:
    """A reachable Redis or RabbitMQ and a queue no other run shares, deleted afterwards."""
    queue = f"stripemeter_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    if request.param == "redis":
        url, cleanup = REDIS_URL, _redis_cleanup
        try:
            client = redis.Redis.from_url(url, socket_connect_timeout=2)
            client.ping()
            client.close()
        except redis.ConnectionError as error:
            _unreachable("Redis", error)
    else:
        url, cleanup = RABBITMQ_URL, _rabbitmq_cleanup
        parameters = pika.URLParameters(url)
        parameters.socket_timeout = parameters.blocked_connection_timeout = 2
        try:
            pika.BlockingConnection(parameters).close()
        except pika.exceptions.AMQPError as error:
            _unreachable("RabbitMQ", error)
    try:
        yield BrokerUnderTest(request.param, url, queue)
    finally:
        cleanup(queue)
