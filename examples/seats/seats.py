#!/usr/bin/env python3
"""Bill the most seats in use in a period (a ``max`` metric), each report counted once.

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
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import httpx

METRIC = "seats"


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

    # 2. Declare what we count. ``max`` keeps the largest quantity of the period; ``last``
    # would keep the latest one (by ts). Both push the current value to a Stripe 'last' meter.
    meter = {"name": METRIC, "aggregation": "max", "unit": "seat"}
    declared = client.post("/v1/meters", json=meter)
    if declared.status_code not in (200, 201):
        fail(f"declaring {METRIC} answered {declared.status_code}: {declared.text}")
    how = "declared" if declared.status_code == 201 else "already declared"
    print(f"metric {METRIC}: max of seats in use ({how})")

    # 3. The app reports the seats in use whenever they change: 3, then 5, then 4.
    customer = f"cus_example_{uuid.uuid4().hex[:8]}"  # a fresh customer: this run's numbers only
    start = datetime.now(UTC) - timedelta(seconds=3)

    def report(second: int, seats: int) -> dict[str, object]:
        ts = (start + timedelta(seconds=second)).isoformat().replace("+00:00", "Z")
        key = f"seats-{customer}-{second}"  # one key per report: the same report, the same key
        return {
            "metric": METRIC,
            "customerRef": customer,
            "quantity": seats,
            "ts": ts,
            "idempotencyKey": key,
        }

    reports = [report(0, 3), report(1, 5), report(2, 4)]
    before = ingest_outcomes(client)
    first = client.post("/v1/events/ingest", json={"events": reports})
    statuses = [r["status"] for r in answer(first, "sending the three reports")["results"]]
    print(f"reported 3, 5, 4 seats for {customer}: {statuses}")

    # 4. The report of 5 seats is delivered again (a queue redelivers it): the same event.
    again = client.post("/v1/events/ingest", json={"events": [reports[1]]})
    status = answer(again, "redelivering the report")["results"][0]["status"]
    print(f"redelivered the report of 5 seats: {status}")
    if status != "duplicate":
        fail(f"the redelivered report is {status}, not duplicate")

    # 5. The period's value is the most seats reported (5), and the counter saw 3 reports.
    deadline, counter = time.monotonic() + 15, None
    while time.monotonic() < deadline:
        params = {"customerRef": customer, "metric": METRIC}
        usage = answer(client.get("/v1/usage/current", params=params), "/v1/usage/current")
        counter = next((c for c in usage["counters"] if c["metric"] == METRIC), None)
        if counter is not None and counter["count"] == 3:
            break
        time.sleep(0.2)
    if counter is None:
        fail(f"no {METRIC} counter for {customer}")
    print(
        f"/v1/usage/current: {METRIC} = {counter['value']} (max {counter['max']},"
        f" last {counter['last']}, {counter['count']} reports) in period {usage['period']}"
    )
    if (counter["value"], counter["count"]) != ("5", 3):
        fail(f"expected 5 from 3 reports, got {counter['value']} from {counter['count']}")

    # 6. And in /metrics: 3 accepted, 1 duplicate (on a service nobody else uses).
    after = ingest_outcomes(client)
    delta = {k: int(after.get(k, 0) - before.get(k, 0)) for k in ("accepted", "duplicate")}
    shown = ", ".join(f"+{n} {outcome}" for outcome, n in delta.items())
    print(f"/metrics stripemeter_ingest_events_total: {shown}")
    if delta != {"accepted": 3, "duplicate": 1}:
        fail(f"expected +3 accepted, +1 duplicate, got {delta}")
    print("ok: the redelivered report was counted once")


if __name__ == "__main__":
    main()
