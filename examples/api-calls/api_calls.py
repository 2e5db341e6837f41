#!/usr/bin/env python3
"""Count API requests per customer (a ``sum`` metric), exactly once, however often resent.

Reads STRIPEMETER_API_URL (default http://127.0.0.1:3000) and STRIPEMETER_API_KEY
(a key with the ingest, read and admin scopes). Prints each step; exits 1 when a
check fails. See README.md beside it.
"""

from __future__ import annotations

import os
import re
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any, NoReturn

import httpx

METRIC = "api_calls"


def fail(message: str) -> NoReturn:
    print(f"FAILED: {message}")
    sys.exit(1)


def answer(response: httpx.Response, what: str) -> Any:
    """The JSON body of a 200 (or 201) answer; anything else is a failed check, with its body."""
    if response.status_code not in (200, 201):
        fail(f"{what} answered {response.status_code}: {response.text}")
    return response.json()


def ingest_outcomes(client: httpx.Client) -> dict[str, float]:
    """The ingest outcome counter from /metrics: accepted, duplicate, conflict, error."""
    metrics = client.get("/metrics")
    if metrics.status_code != 200:
        fail(f"/metrics answered {metrics.status_code}: {metrics.text}")
    text = metrics.text
    found = re.findall(r'^stripemeter_ingest_events_total\{outcome="(\w+)"\} (\S+)$', text, re.M)
    return {outcome: float(value) for outcome, value in found}


def main() -> None:
    url = os.getenv("STRIPEMETER_API_URL", "http://127.0.0.1:3000")
    key = os.getenv("STRIPEMETER_API_KEY")
    if not key:
        fail("set STRIPEMETER_API_KEY to a key with the ingest, read and admin scopes")
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=10)

    # 1. Is the service up, with its store and projections caught up?
    ready = client.get("/health/ready")
    if ready.status_code != 200:
        fail(f"/health/ready answered {ready.status_code}: {ready.text}")
    print(f"ready: {url} ({ready.json()['checks']['eventStore']['backend']})")

    # 2. Declare what we count: 201 the first time, 200 when declared the same way before.
    # As the main README's quick start and examples/stripemeter.toml declare it.
    meter = {"name": METRIC, "aggregation": "sum"}
    declared = client.post("/v1/meters", json=meter)
    if declared.status_code not in (200, 201):
        fail(f"declaring {METRIC} answered {declared.status_code}: {declared.text}")
    how = "declared" if declared.status_code == 201 else "already declared"
    print(f"metric {METRIC}: sum ({how})")

    # 3. Three requests of one customer, each with its own idempotency key.
    customer = f"cus_example_{uuid.uuid4().hex[:8]}"  # a fresh customer: this run's numbers only
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")

    def event(request: str, quantity: int) -> dict[str, object]:
        # Keys count once per tenant, forever: this run's keys are its own.
        key = f"{customer}-{request}"
        return {
            "metric": METRIC,
            "customerRef": customer,
            "quantity": quantity,
            "ts": now,
            "idempotencyKey": key,
        }

    before = ingest_outcomes(client)
    first = client.post(
        "/v1/events/ingest",
        json={"events": [event("req-1", 1), event("req-2", 2), event("req-3", 5)]},
    )
    statuses = [r["status"] for r in answer(first, "sending the three requests")["results"]]
    print(f"sent req-1 (1), req-2 (2), req-3 (5) for {customer}: {statuses}")

    # 4. The client retries req-2 (its answer was lost, say): the same event again.
    retry = client.post("/v1/events/ingest", json={"events": [event("req-2", 2)]})
    status = answer(retry, "resending req-2")["results"][0]["status"]
    print(f"resent req-2 (2): {status}")
    if status != "duplicate":
        fail(f"the resent event is {status}, not duplicate")

    # 5. The same key with other content is a conflict: refused, never counted.
    clash = client.post("/v1/events/ingest", json={"events": [event("req-3", 50)]})
    status = answer(clash, "sending req-3 again")["results"][0]["status"]
    print(f"sent req-3 again with quantity 50: {status}")
    if status != "conflict":
        fail(f"reusing a key for other content is {status}, not conflict")

    # 6. Counted once: 1 + 2 + 5. The counter trails ingest by the projection lag.
    deadline, value = time.monotonic() + 15, None
    while time.monotonic() < deadline:
        params = {"customerRef": customer, "metric": METRIC}
        usage = answer(client.get("/v1/usage/current", params=params), "/v1/usage/current")
        value = next((c["value"] for c in usage["counters"] if c["metric"] == METRIC), None)
        if value == "8":
            break
        time.sleep(0.2)
    print(f"/v1/usage/current: {METRIC} = {value} in period {usage['period']}")
    if value != "8":
        fail(f"expected 8 (1 + 2 + 5), got {value}")

    # 7. And in /metrics: 3 accepted, 1 duplicate, 1 conflict (on a service nobody else uses).
    after = ingest_outcomes(client)
    delta = {
        k: int(after.get(k, 0) - before.get(k, 0)) for k in ("accepted", "duplicate", "conflict")
    }
    shown = ", ".join(f"+{n} {outcome}" for outcome, n in delta.items())
    print(f"/metrics stripemeter_ingest_events_total: {shown}")
    if delta != {"accepted": 3, "duplicate": 1, "conflict": 1}:
        fail(f"expected +3 accepted, +1 duplicate, +1 conflict, got {delta}")
    print("ok: the resent event was counted once")


if __name__ == "__main__":
    main()
