"""Two API processes on one PostgreSQL database, hit with overlapping keys at once."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from adapters.persistence import open_stores
from adapters.settings import PostgresSettings, Settings
from domain.meters import Aggregation, MetricDefinition
from domain.tenancy import Scope
from tests.conftest import reset_postgres
from tests.e2e.test_real_server import ROOT, free_port


@pytest.fixture
def two_servers(
    postgres_database: PostgresSettings, tmp_path: Path
) -> Iterator[tuple[list[str], str, Settings]]:
    reset_postgres(postgres_database)
    settings = Settings(data_dir=tmp_path, postgres=postgres_database)
    stores = open_stores(settings)
    tenant = stores.app.register_tenant("acme", "Acme").id
    stores.app.declare_metric(tenant, MetricDefinition("api_calls", Aggregation.SUM))
    key = stores.app.issue_api_key(tenant, frozenset({Scope.INGEST, Scope.READ})).secret
    stores.close()
    db = postgres_database
    url = f"postgresql://{db.user}:{db.password}@{db.host}:{db.port}/{db.dbname}"
    processes, bases, outputs = [], [], []
    for embedded in ("true", "false"):
        port = free_port()
        env = {
            **os.environ,
            "STRIPEMETER_DATABASE_URL": url,
            "STRIPEMETER_PORT": str(port),
            "STRIPEMETER_EMBEDDED_WORKER": embedded,
            "STRIPEMETER_EMULATOR_PORT": "0",
            "STRIPEMETER_STRIPE_EMULATOR": "true",  # no Stripe key: the built-in emulator
        }
        output = (tmp_path / f"serve-{embedded}.log").open("w")
        outputs.append(output)
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "api.cli", "serve"],
                env=env,
                cwd=ROOT,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        )
        bases.append(f"http://127.0.0.1:{port}")
    try:
        for base in bases:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{base}/health/live", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                logs = "".join(p.read_text()[-3000:] for p in tmp_path.glob("serve-*.log"))
                assert time.monotonic() < deadline, f"{base} did not start:\n{logs}"
                time.sleep(0.2)
        yield bases, key, settings
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)
        for output in outputs:
            output.close()


def test_overlapping_keys_across_processes_count_once(
    two_servers: tuple[list[str], str, Settings],
) -> None:
    bases, key, _ = two_servers
    headers = {"Authorization": f"Bearer {key}"}
    ts = datetime.now(UTC).isoformat()
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def client(number: int) -> None:
        base = bases[number % 2]
        with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
            for round_ in range(8):
                # Every client sends the same 25 keys of this round, each in its own order.
                order = [(number * 7 + i) % 25 for i in range(25)]
                events = [
                    {
                        "metric": "api_calls",
                        "customerRef": f"cus_{k % 3}",
                        "quantity": k + 1,
                        "ts": ts,
                        "idempotencyKey": f"r{round_}-k{k}",
                    }
                    for k in order
                ]
                response = http.post("/v1/events/ingest", json={"events": events})
                assert response.status_code == 200, response.text
                with lock:
                    outcomes.update(r["status"] for r in response.json()["results"])

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes == Counter({"accepted": 8 * 25, "duplicate": 7 * 8 * 25})

    expected = {f"cus_{c}": 8 * sum(k + 1 for k in range(25) if k % 3 == c) for c in range(3)}
    deadline = time.monotonic() + 20
    while True:
        seen = {}
        for customer in expected:
            body = httpx.get(
                f"{bases[1]}/v1/usage/current", params={"customerRef": customer}, headers=headers
            ).json()
            seen[customer] = int(body["counters"][0]["value"]) if body["counters"] else 0
        if seen == expected or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert seen == expected
