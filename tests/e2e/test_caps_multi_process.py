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
from domain.tenancy import Scope, tenant_id_for
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


def event(key: str, ts: str) -> dict[str, object]:
    return {
        "metric": "api_calls",
        "customerRef": "cus_capped",
        "quantity": 1,
        "ts": ts,
        "idempotencyKey": key,
    }


def send_all(bases: list[str], key: str, tag: str) -> tuple[Counter[str], list[dict[str, str]]]:
    """CLIENTS clients at once, spread over the servers, REQUESTS one-event requests each."""
    headers = {"Authorization": f"Bearer {key}"}
    ts = datetime.now(UTC).isoformat()
    statuses: Counter[str] = Counter()
    refused: list[dict[str, str]] = []
    lock = threading.Lock()
    start = threading.Barrier(CLIENTS)

    def client(number: int) -> None:
        base = bases[number % len(bases)]
        with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
            start.wait()
            for n in range(REQUESTS):
                one = event(f"{tag}-{number}-{n}", ts)
                response = http.post("/v1/events/ingest", json={"events": [one]})
                # Two writer processes on one period collide: the writer gives up after
                # WRITE_ATTEMPTS and answers 503, nothing written, "retrying is safe".
                while response.status_code == 503:
                    with lock:
                        statuses["collided"] += 1
                    response = http.post("/v1/events/ingest", json={"events": [one]})
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
    admin = admin_key(settings)

    statuses, refused = send_all(bases, key, "first")
    statuses.pop("collided", None)  # retried: counted apart from the outcomes
    sent = CLIENTS * REQUESTS
    assert statuses == Counter({"accepted": 100, "error": sent - 100})
    assert {(r["field"], r.get("cap")) for r in refused} == {("quantity", "hard")}
    assert counted(bases[1], key, 100) == 100

    # Raised through the first stack's API: its writer process is told before the answer.
    raise_cap(bases[0], admin, 130)
    first = httpx.post(
        f"{bases[0]}/v1/events/ingest",
        json={"events": [event("just-raised", datetime.now(UTC).isoformat())]},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert first.json()["results"][0]["status"] == "accepted", first.text
    statuses, _ = send_all(bases[:1], key, "second")
    statuses.pop("collided", None)
    assert statuses == Counter({"accepted": 29, "error": sent - 29})

    # The other stack's writer sees a change within its tenant cache's lifetime.
    raise_cap(bases[0], admin, 160)
    time.sleep(TENANT_CACHE_SECONDS + 0.5)
    statuses, _ = send_all(bases, key, "third")
    statuses.pop("collided", None)
    assert statuses == Counter({"accepted": 30, "error": sent - 30})
    assert counted(bases[1], key, 160) == 160


def admin_key(settings: Settings) -> str:
    stores = open_stores(settings)
    try:
        return stores.app.issue_api_key(tenant_id_for("acme"), frozenset({Scope.ADMIN})).secret
    finally:
        stores.close()


def raise_cap(base: str, key: str, limit: int) -> None:
    response = httpx.put(
        f"{base}/v1/caps/api_calls",
        json={"customerRef": "cus_capped", "limit": limit, "mode": "hard"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200, response.text
