"""Late events: 10,000 events dated in the previous month, then how long until they count.

    .venv/bin/python -m benchmarks.late --backend postgres

The metric's lateness window is 35 days, so every event of the previous
month (which ended at most 31 days ago) is late but inside the window and
must be counted in that month's period. Each round sends 10 batches of 1,000
events over 4 concurrent connections, then polls /health/ready every 5 ms
until every projection's lag is 0 and reads the previous period's counters
until they hold every event of the round. Reported per round: the send time,
the catch-up time after the last acknowledgement (the figure the reference
claims is <= 2 s; the goal here is 0.2 s) and the time from the first send.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from benchmarks.report import emit, log, machine
from benchmarks.service import (
    METRIC,
    TOPOLOGIES,
    Service,
    add_set_option,
    service,
    service_settings,
)


def previous_period(now: datetime) -> tuple[str, str]:
    """(YYYY-MM of the previous month, an RFC 3339 time in its middle)."""
    last_day = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    middle = last_day.replace(day=min(15, last_day.day), hour=12)
    return last_day.strftime("%Y-%m"), middle.strftime("%Y-%m-%dT%H:%M:%SZ")


def send_round(
    svc: Service, ts: str, events: int, batch: int, customers: int, clients: int
) -> tuple[float, int]:
    """Send ``events`` late events in batches over ``clients`` connections; (seconds, accepted)."""
    prefix = uuid.uuid4().hex[:10]
    bodies = []
    for start in range(0, events, batch):
        bodies.append(
            {
                "events": [
                    {
                        "metric": METRIC,
                        "customerRef": f"cust-{n % customers}",
                        "quantity": 1,
                        "ts": ts,
                        "idempotencyKey": f"late-{prefix}-{n}",
                    }
                    for n in range(start, min(start + batch, events))
                ]
            }
        )
    headers = {"Authorization": f"Bearer {svc.key}"}
    pool = [httpx.Client(base_url=svc.url, headers=headers, timeout=60) for _ in range(clients)]

    def post(index: int) -> int:
        response = pool[index % clients].post("/v1/events/ingest", json=bodies[index])
        response.raise_for_status()
        accepted: int = response.json()["accepted"]
        return accepted

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as executor:
        accepted = sum(executor.map(post, range(len(bodies))))
    elapsed = time.perf_counter() - started
    for client in pool:
        client.close()
    return elapsed, accepted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--topology", choices=TOPOLOGIES, default="embedded")
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--customers", type=int, default=10)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    add_set_option(parser)
    args = parser.parse_args(argv)
    period, ts = previous_period(datetime.now(UTC))
    log(f"late events dated {ts} (period {period}), lateness window 35 days")

    rounds: list[dict[str, Any]] = []
    passed = True
    with service(
        args.backend,
        lateness_seconds=35 * 86400,
        topology=args.topology,
        settings=service_settings(args.set),
    ) as svc:
        expected = 0
        for number in range(1, args.rounds + 1):
            svc.wait_caught_up()
            first_send = time.perf_counter()
            send_s, accepted = send_round(
                svc, ts, args.events, args.batch, args.customers, args.clients
            )
            acked = time.perf_counter()
            expected += accepted
            lag_zero_s = None
            counters_s = None
            polls = 0
            deadline = acked + 60
            while time.perf_counter() < deadline:
                polls += 1
                if lag_zero_s is None and svc.lag() == 0:
                    lag_zero_s = time.perf_counter() - acked
                if lag_zero_s is not None:
                    total, _ = svc.counted(args.customers, period)
                    if total == expected:
                        counters_s = time.perf_counter() - acked
                        break
                time.sleep(0.005)
            total, _ = svc.counted(args.customers, period)
            ok = accepted == args.events and total == expected and counters_s is not None
            passed = passed and ok
            row = {
                "round": number,
                "accepted": accepted,
                "send_s": round(send_s, 3),
                "send_events_per_s": round(accepted / send_s, 1),
                "lag_zero_after_ack_s": None if lag_zero_s is None else round(lag_zero_s, 3),
                "counters_after_ack_s": None if counters_s is None else round(counters_s, 3),
                "counters_after_first_send_s": None
                if counters_s is None
                else round(acked - first_send + counters_s, 3),
                "period_total": total,
                "expected_total": expected,
                "ok": ok,
            }
            rounds.append(row)
            log(
                f"round {number}: {accepted} late events sent in {row['send_s']} s;"
                f" lag 0 after {row['lag_zero_after_ack_s']} s, counters complete"
                f" {row['counters_after_ack_s']} s after the last ack"
                f" ({row['counters_after_first_send_s']} s after the first send);"
                f" {period} total {total}/{expected} {'ok' if ok else 'FAIL'}"
            )
        late_metric = {
            k: v for k, v in svc.metrics().items() if k.startswith("stripemeter_late_events_total")
        }

    catch_up = [r["counters_after_ack_s"] for r in rounds if r["counters_after_ack_s"] is not None]
    report = {
        "benchmark": "late-events",
        "backend": args.backend,
        "topology": args.topology,
        "machine": machine(),
        "period": period,
        "ts": ts,
        "events_per_round": args.events,
        "batch": args.batch,
        "clients": args.clients,
        "rounds": rounds,
        "catch_up_after_ack_s": {
            "median": round(statistics.median(catch_up), 3) if catch_up else None,
            "max": round(max(catch_up), 3) if catch_up else None,
        },
        "late_metric": late_metric,
        "passed": passed,
    }
    summary = report["catch_up_after_ack_s"]
    log(
        f"late events on {args.backend} ({args.topology}): catch-up after last ack median"
        f" {summary['median']} s, max {summary['max']} s"
        f" -> {'PASSED' if passed else 'FAILED'}"
    )
    emit(report)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
