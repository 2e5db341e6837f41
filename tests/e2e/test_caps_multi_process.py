"""A hard cap under many clients of two ``stripemeter serve`` stacks on one PostgreSQL.

Each stack has its own writer process, each with its own cached periods: the
cap holds only because a writer that loses a race decides again on the
period as stored. Real HTTP, real processes.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal

import httpx

from adapters.persistence import open_stores
from adapters.settings import Settings
from domain.application import TENANT_CACHE_SECONDS
from domain.caps import Cap, CapMode
from domain.tenancy import tenant_id_for
from tests.e2e.test_multi_process import two_servers

__all__ = ["two_servers"]  # the fixture, shared with the other multi-process test

CLIENTS, REQUESTS = 16, 15


def set_cap(settings: Settings, limit: int) -> None:
    stores = open_stores(settings)
    try:
        cap = Cap("api_calls", "cus_capped", Decimal(limit), CapMode.HARD)
        stores.app.set_cap(tenant_id_for("acme"), cap)
    finally:
        stores.close()


def send_all(bases: list[str], key: str, tag: str) -> tuple[Counter[str], list[dict[str, str]]]:
    """CLIENTS clients at once, half on each server, REQUESTS one-event requests each."""
    headers = {"Authorization": f"Bearer {key}"}
    ts = datetime.now(UTC).isoformat()
    statuses: Counter[str] = Counter()
    refused: list[dict[str, str]] = []
    lock = threading.Lock()
    start = threading.Barrier(CLIENTS)

    def client(number: int) -> None:
        with httpx.Client(base_url=bases[number % 2], headers=headers, timeout=30) as http:
            start.wait()
            for n in range(REQUESTS):
                event = {
                    "metric": "api_calls",
                    "customerRef": "cus_capped",
                    "quantity": 1,
                    "ts": ts,
                    "idempotencyKey": f"{tag}-{number}-{n}",
                }
                response = http.post("/v1/events/ingest", json={"events": [event]})
                # Two writer processes on one period collide: the writer gives up after
                # WRITE_ATTEMPTS and answers 503, nothing written, "retrying is safe".
                while response.status_code == 503:
                    with lock:
                        statuses["collided"] += 1
                    response = http.post("/v1/events/ingest", json={"events": [event]})
                assert response.status_code == 200, response.text
                result = response.json()["results"][0]
                with lock:
                    statuses[result["status"]] += 1
                    if result["status"] == "error":
                        refused.append(result)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses, refused


def counted(base: str, key: str, expected: int) -> int:
    deadline = time.monotonic() + 20
    while True:
        body = httpx.get(
            f"{base}/v1/usage/current",
            params={"customerRef": "cus_capped"},
            headers={"Authorization": f"Bearer {key}"},
        ).json()
        value = int(body["counters"][0]["value"]) if body["counters"] else 0
        if value == expected or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def test_two_writer_processes_never_pass_a_hard_cap(
    two_servers: tuple[list[str], str, Settings],
) -> None:
    bases, key, settings = two_servers
    set_cap(settings, 100)  # before any ingest: both writers read the tenant with it

    statuses, refused = send_all(bases, key, "first")
    statuses.pop("collided", None)  # retried: counted apart from the outcomes
    sent = CLIENTS * REQUESTS
    assert statuses == Counter({"accepted": 100, "error": sent - 100})
    assert {(r["field"], r.get("cap")) for r in refused} == {("quantity", "hard")}
    assert counted(bases[1], key, 100) == 100

    # Raised by another process: each writer sees it within the tenant cache's lifetime.
    set_cap(settings, 130)
    time.sleep(TENANT_CACHE_SECONDS + 0.5)
    statuses, _ = send_all(bases, key, "second")
    statuses.pop("collided", None)  # retried: counted apart from the outcomes
    assert statuses == Counter({"accepted": 30, "error": sent - 30})
    assert counted(bases[0], key, 130) == 130
