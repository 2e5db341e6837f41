"""compose.yaml's own environment, run for real: ``stripemeter serve`` as its ``api``
service and ``stripemeter worker`` as its ``worker`` service, on local PostgreSQL
and Redis, push usage to Stripe (the emulator) through Redis.

Each service's environment is what Compose would give its container for a shell
that sets the Stripe key (tests/compose_file.py, checked against a real Compose
client in tests/unit/test_compose.py), with only what a container has and a
test must not share changed: the hostnames ``postgres`` and ``redis`` become
127.0.0.1 (a test database, Redis database 15), ports become free ones, and
the push queue a name of this run's own. Redis's MONITOR shows the push
messages the worker's sweep put on that queue and the same worker acking
them: nothing else could have carried them.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import redis

from adapters.persistence import open_stores
from adapters.settings import PostgresSettings, Settings
from adapters.stripe_gateway import SdkStripeGateway
from domain.mappings import MeterMapping
from domain.meters import Aggregation, MetricDefinition
from domain.tenancy import Scope
from stripe_emulator import EmulatorConfig
from stripe_emulator.testing import TEST_API_KEY, RunningEmulator, running_emulator
from tests import compose_file
from tests.conftest import EMULATOR_TEST_CONFIG, REDIS_URL, _unreachable, reset_postgres
from tests.e2e.test_real_server import ROOT, free_port

PUSH_ACTOR = "stripemeter_push_usage_period"


@dataclass
class Stack:
    api: str
    key: str
    worker_metrics: str
    emulator: RunningEmulator
    queue: str
    monitor_log: Path
    logs: dict[str, Path]

    def logs_text(self) -> str:
        return "\n".join(f"--- {n}\n{p.read_text()[-4000:]}" for n, p in self.logs.items())


def local(env: dict[str, str], database_url: str, overrides: dict[str, str]) -> dict[str, str]:
    """A container's environment for this machine: the services' hostnames become local."""
    env = dict(env)
    database = urlsplit(env["STRIPEMETER_DATABASE_URL"])
    assert database.hostname == "postgres", env["STRIPEMETER_DATABASE_URL"]
    env["STRIPEMETER_DATABASE_URL"] = database_url
    if "STRIPEMETER_BROKER_URL" in env:
        assert urlsplit(env["STRIPEMETER_BROKER_URL"]).hostname == "redis"
        env["STRIPEMETER_BROKER_URL"] = REDIS_URL
    for name, value in env.items():  # no other value may still name a compose service
        assert "@postgres" not in value and "//redis" not in value, (name, value)
    env.update(overrides)
    return env


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """The service's command, from this checkout (``stripemeter`` is ``python -m api.cli``)."""
    assert command[0] == "stripemeter"
    with log.open("w") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "api.cli", *command[1:]],
            env=env,
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def wait_for(url: str, process: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + 90
    while True:
        with contextlib.suppress(httpx.TransportError):
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                return response.text
        assert process.poll() is None, f"exited {process.returncode}: {log.read_text()}"
        assert time.monotonic() < deadline, f"{url} never answered 200"
        time.sleep(0.25)


@pytest.fixture
def stack(tmp_path: Path, postgres_database: PostgresSettings) -> Iterator[Stack]:
    redis_cli = shutil.which("redis-cli")
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        client.ping()
        client.close()
    except redis.ConnectionError as error:
        _unreachable("Redis", error)
    assert redis_cli is not None, "redis-cli is needed to watch Redis (MONITOR)"
    reset_postgres(postgres_database)
    db = postgres_database
    database_url = f"postgresql://{db.user}:{db.password}@{db.host}:{db.port}/{db.dbname}"
    queue = f"stripemeter_compose_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with running_emulator(EmulatorConfig(**EMULATOR_TEST_CONFIG)) as emulator:  # type: ignore[arg-type]
        # The shell `docker compose up` would run in: the Stripe key (here the emulator's).
        shell = {"STRIPE_SECRET_KEY": TEST_API_KEY, "STRIPE_API_BASE": emulator.url}
        api_port, metrics_port = free_port(), free_port()
        shared = {"STRIPEMETER_BROKER_QUEUE": queue, "STRIPEMETER_PUSH_INTERVAL_SECONDS": "1"}
        env = {name: compose_file.environment(name, shell) for name in ("migrate", "api", "worker")}
        migrate_env = local(env["migrate"], database_url, shared)
        api_env = local(
            env["api"],
            database_url,
            {**shared, "STRIPEMETER_HOST": "127.0.0.1", "STRIPEMETER_PORT": str(api_port)},
        )
        worker_env = local(
            env["worker"],
            database_url,
            {**shared, "STRIPEMETER_WORKER_METRICS_PORT": str(metrics_port)},
        )
        services = compose_file.services()
        # Nothing of this machine's own StripeMeter or Stripe settings: only compose's.
        machine = {
            k: v for k, v in os.environ.items() if not k.startswith(("STRIPEMETER_", "STRIPE_"))
        }
        migrate = subprocess.run(
            [sys.executable, "-m", "api.cli", *services["migrate"]["command"][1:]],
            env={**machine, **migrate_env},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        assert '"backend": "postgres"' in migrate.stdout
        key = declare(Settings.from_env(api_env), emulator)
        logs = {name: tmp_path / f"{name}.log" for name in ("api", "worker")}
        monitor_log = tmp_path / "redis-monitor.log"
        with monitor_log.open("w") as output:
            monitor = subprocess.Popen(
                [redis_cli, "-u", REDIS_URL, "monitor"], stdout=output, stderr=subprocess.STDOUT
            )
        processes = []
        try:
            processes.append(
                start(services["worker"]["command"], {**machine, **worker_env}, logs["worker"])
            )
            processes.append(start(services["api"]["command"], {**machine, **api_env}, logs["api"]))
            api = f"http://127.0.0.1:{api_port}"
            wait_for(f"{api}/health/ready", processes[1], logs["api"])
            wait_for(f"http://127.0.0.1:{metrics_port}/metrics", processes[0], logs["worker"])
            yield Stack(
                api,
                key,
                f"http://127.0.0.1:{metrics_port}/metrics",
                emulator,
                queue,
                monitor_log,
                logs,
            )
        finally:
            for process in processes:
                stop(process)
            stop(monitor)
            cleanup = redis.Redis.from_url(REDIS_URL)
            stale = list(cleanup.scan_iter(match=f"*{queue}*", count=1000))
            if stale:
                cleanup.delete(*stale)
            cleanup.close()


def declare(settings: Settings, emulator: RunningEmulator) -> str:
    """What an operator declares once: a tenant, its metric mapped to a Stripe meter, a
    customer mapped to a Stripe customer, and an API key."""
    stores = open_stores(settings)
    try:
        app = stores.app
        tenant = app.register_tenant("acme", "Acme").id
        app.declare_metric(tenant, MetricDefinition("api_calls", Aggregation.SUM))
        gateway = SdkStripeGateway(TEST_API_KEY, emulator.url, max_network_retries=0)
        meter = gateway.create_meter("api_calls", "api_calls", "sum")
        app.map_meter(tenant, MeterMapping("api_calls", meter.id, "api_calls", "sum"))
        stripe_customer = emulator.client().v1.customers.create({}).id
        app.map_customer(tenant, "cus_a", stripe_customer, None)
        return app.issue_api_key(tenant, frozenset({Scope.INGEST, Scope.READ})).secret
    finally:
        stores.close()


def dispatched(monitor_log: Path, queue: str) -> dict[str, list[list[str]]]:
    """Dramatiq's Redis commands on ``queue`` as MONITOR saw them, by command (enqueue,
    fetch, ack, ...): each one's arguments after the queue's common ones."""
    seen: dict[str, list[list[str]]] = {}
    for line in monitor_log.read_text().splitlines():
        if queue not in line or "]" not in line:
            continue
        words = shlex.split(line.split("] ", 1)[1])
        if words[0].lower() != "evalsha":
            continue
        # EVALSHA sha 1 namespace | command timestamp queue broker_id heartbeat ttl
        # maintenance max_unpack | the command's own arguments
        command, queue_name, arguments = words[4], words[6], words[12:]
        if queue_name == queue:
            seen.setdefault(command, []).append(arguments)
    return seen


def test_the_compose_environment_pushes_through_redis_to_stripe(stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {stack.key}"}
    now = datetime.now(UTC).isoformat()
    events = [
        {
            "metric": "api_calls",
            "customerRef": "cus_a",
            "quantity": n,
            "ts": now,
            "idempotencyKey": f"k{n}",
        }
        for n in range(1, 11)
    ]
    with httpx.Client(base_url=stack.api, headers=headers, timeout=30) as http:
        first = http.post("/v1/events/ingest", json={"events": events})
        assert first.status_code == 200, first.text
        again = http.post("/v1/events/ingest", json={"events": events[:3]})  # a retried request
        assert [r["status"] for r in again.json()["results"]] == ["duplicate"] * 3
        expected = sum(range(1, 11))
        deadline = time.monotonic() + 60
        while True:
            usage = http.get("/v1/usage/current", params={"customerRef": "cus_a"}).json()
            stripe = {t["value"] for t in stack.emulator.totals()}
            if stripe == {expected} and ours(usage) == expected:
                break
            assert time.monotonic() < deadline, (usage, stripe, stack.logs_text())
            time.sleep(0.25)
        health = http.get("/health").json()
    # Through Redis: the sweep enqueued push messages on this run's queue there, and the
    # worker fetched and acked the same messages. The ack follows Stripe's write (the
    # actor returns first) and MONITOR's output reaches its file in blocks: wait for it.
    deadline = time.monotonic() + 30
    while True:
        redis_commands = dispatched(stack.monitor_log, stack.queue)
        enqueued = {
            args[0]: args[1] for args in redis_commands.get("enqueue", []) if PUSH_ACTOR in args[1]
        }
        acked = {args[0] for args in redis_commands.get("ack", [])}
        if set(enqueued) & acked or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert enqueued, f"no push message went through Redis: {sorted(redis_commands)}"
    assert set(enqueued) & acked, "the worker acked none of the push messages it was sent"
    # The worker says what it did; the API and the worker name the same build.
    metrics = httpx.get(stack.worker_metrics, timeout=5).text
    assert 'stripemeter_pushes_total{outcome="confirmed",target="live"}' in metrics
    assert "stripemeter_build_info{" in metrics
    assert health["version"] and health["checks"]["eventStore"]["backend"] == "postgres"


def ours(usage: dict[str, Any]) -> int | None:
    """The api_calls counter in /v1/usage/current, once the views have it."""
    values = [Decimal(c["value"]) for c in usage["counters"] if c["metric"] == "api_calls"]
    return int(values[0]) if values else None
