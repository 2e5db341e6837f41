"""Two worker processes pushing the same customers: does Stripe ever see two calls at once?

    .venv/bin/python -m benchmarks.push_workers [--customers 200] [--events 100000]
        [--ingest-seconds 60] [--latency 0.05] [--workers 2]

PostgreSQL, a Redis broker (one queue both workers consume), and the Stripe
emulator as its own process at its default rate limit (100 requests/s) with
``--meter-event-latency`` so that calls the workers fail to keep apart
overlap. One ``stripemeter worker --no-pushes`` keeps the views; ``--workers``
``stripemeter worker --no-projections`` processes push, each sweeping every
``--interval`` seconds, so both send messages for the same periods and both
consume them. Usage is written by this process over ``--ingest-seconds`` in
batches, so pushes run while usage arrives. Reported, from the emulator: the
meter-event calls in flight at once per customer × meter (the most, and how
many calls started while another for the same key was in flight); from
Stripe's totals against the counters: double counts and shortfalls per
customer × meter; from the workers' metrics: pushes confirmed and pushes that
found the key held (``busy``). A run with any overlap or any count that
differs fails.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

import httpx

from benchmarks.emulator import API_KEY, emulator_and_database
from benchmarks.processes import ROOT, free_port
from benchmarks.push import _gauge
from benchmarks.report import emit, log, machine

if TYPE_CHECKING:
    from domain.application import MeteringApp

REDIS_URL = "redis://127.0.0.1:6379/14"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--ingest-seconds", type=float, default=60.0)
    parser.add_argument("--latency", type=float, default=0.05, help="per meter-event call (s)")
    parser.add_argument("--workers", type=int, default=2, help="pushing worker processes")
    parser.add_argument("--interval", type=int, default=2, help="push sweep interval (s)")
    parser.add_argument(
        "--worker-checkout",
        default=str(ROOT),
        help="run the workers from this checkout (e.g. one before the shared lock, to compare)",
    )
    args = parser.parse_args(argv)

    latency = ("--meter-event-latency", str(args.latency))
    with emulator_and_database("postgres", *latency) as (url, _):
        result = _run(args, url)
    emit(result)
    return 0 if result["passed"] else 1


def _run(args: argparse.Namespace, url: str) -> dict[str, object]:
    from adapters.persistence import open_stores
    from adapters.settings import Settings
    from adapters.stripe_gateway import SdkStripeGateway
    from domain.mappings import MeterMapping
    from domain.meters import Aggregation, MetricDefinition

    stores = open_stores(Settings.from_env())
    gateway = SdkStripeGateway(API_KEY, url, max_network_retries=8, timeout_seconds=30)
    app = stores.app
    tenant = app.register_tenant("bench", "Bench").id
    app.declare_metric(tenant, MetricDefinition("api_calls", Aggregation.SUM))
    meter = gateway.create_meter("api_calls", "api_calls", "sum")
    app.map_meter(tenant, MeterMapping("api_calls", meter.id, "api_calls", "sum"))
    log(f"creating {args.customers} Stripe customers (rate limited)")
    stripe_ids = _create_customers(url, args.customers)
    for ref, stripe_id in stripe_ids.items():
        app.map_customer(tenant, ref, stripe_id, None)

    queue = f"stripemeter_bench_{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "STRIPE_SECRET_KEY": API_KEY,
        "STRIPE_API_BASE": url,
        "STRIPE_MAX_NETWORK_RETRIES": "5",
        "STRIPEMETER_BROKER_URL": REDIS_URL,
        "STRIPEMETER_BROKER_QUEUE": queue,
        "STRIPEMETER_PUSH_INTERVAL_SECONDS": str(args.interval),
        "STRIPEMETER_LOG_LEVEL": "WARNING",
    }
    ports = [free_port() for _ in range(args.workers)]
    # ``python -m api.cli`` in the checkout's directory: that checkout's product, whichever
    # venv runs it (the working directory comes first on the module path).
    command = [sys.executable, "-m", "api.cli", "worker"]
    workers = [
        subprocess.Popen(
            [*command, "--no-pushes"],
            env={**env, "STRIPEMETER_WORKER_METRICS_PORT": "0"},
            cwd=args.worker_checkout,
        ),
        *(
            subprocess.Popen(
                [*command, "--no-projections"],
                env={**env, "STRIPEMETER_WORKER_METRICS_PORT": str(port)},
                cwd=args.worker_checkout,
            )
            for port in ports
        ),
    ]
    expected: dict[str, int] = dict.fromkeys(stripe_ids, 0)
    now = datetime.now(UTC)
    started = time.perf_counter()
    try:
        sent = _ingest(app, tenant, args, expected, now)
        ingest_s = time.perf_counter() - started
        log(f"ingested {sent} events in {ingest_s:.1f} s; waiting until Stripe holds them")
        last_ingest = time.perf_counter()
        settled = False
        while time.perf_counter() < last_ingest + 900 and not settled:
            time.sleep(1)
            if stores.views.runner.lag().events:
                continue
            settled = all(_unpushed(port) == 0 for port in ports) and _settled(url, expected)
        to_parity_s = time.perf_counter() - last_ingest
        scrapes = [_scrape(port) for port in ports]
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=60)
        _drop_queue(queue)
    wall_s = time.perf_counter() - started

    in_flight = httpx.get(f"{url}/_emulator/in_flight", timeout=30).json()
    totals = _stripe_totals(url)
    by_customer = {ref: totals.get(stripe_ids[ref], 0) - expected[ref] for ref in stripe_ids}
    double = sum(1 for diff in by_customer.values() if diff > 0)
    short = sum(1 for diff in by_customer.values() if diff < 0)
    confirmed = [_gauge(s, "stripemeter_pushes_total", "confirmed") for s in scrapes]
    busy = [_gauge(s, "stripemeter_pushes_total", "busy") for s in scrapes]
    limited = int(httpx.get(f"{url}/_emulator", timeout=30).json()["rate_limited"])
    stores.close()
    return {
        "benchmark": "push_workers",
        "backend": "postgres",
        "broker": "redis",
        "machine": machine(),
        "customers": args.customers,
        "events": sent,
        "pushing_workers": args.workers,
        "worker_checkout": args.worker_checkout,
        "worker_commit": _commit(args.worker_checkout),
        "sweep_interval_s": args.interval,
        "emulator_meter_event_latency_s": args.latency,
        "meter_event_calls": in_flight["calls"],
        "max_concurrent_calls_per_customer_meter": in_flight["max_concurrent"],
        "overlapping_calls": in_flight["overlaps"],
        "customer_meters_double_counted": double,
        "customer_meters_short": short,
        "units_over": sum(diff for diff in by_customer.values() if diff > 0),
        "pushes_confirmed_per_worker": [int(c) for c in confirmed],
        "pushes_busy_per_worker": [int(b) for b in busy],
        "stripe_429s": limited,
        "ingest_s": round(ingest_s, 1),
        "seconds_from_last_ingest_to_parity": round(to_parity_s, 1),
        "wall_s": round(wall_s, 1),
        "parity_reached": settled,
        "passed": settled and in_flight["overlaps"] == 0 and double == 0 and short == 0,
    }


def _create_customers(url: str, count: int) -> dict[str, str]:
    ids: dict[str, str] = {}
    with httpx.Client(base_url=url, auth=(API_KEY, "")) as http:
        for n in range(count):
            while True:
                response = http.post("/v1/customers", data={"name": f"c{n}"})
                if response.status_code != 429:
                    break
                time.sleep(0.2)
            ids[f"c{n}"] = response.json()["id"]
    return ids


def _ingest(
    app: MeteringApp, tenant: uuid.UUID, args: argparse.Namespace, expected: dict[str, int],
    now: datetime,
) -> int:  # fmt: skip
    """Batches spread over ``--ingest-seconds``: the workers push while usage arrives."""
    from domain.idempotency import fingerprint
    from domain.ingest import UsageSubmission

    rng = random.Random(11)
    batches = max(1, args.events // args.batch)
    pause = args.ingest_seconds / batches
    started = time.perf_counter()
    sent = 0
    for index in range(batches):
        batch = []
        for _ in range(args.batch):
            customer = f"c{rng.randrange(args.customers)}"
            quantity = Decimal(rng.randint(1, 5))
            expected[customer] += int(quantity)
            batch.append(
                UsageSubmission(
                    tenant, "api_calls", customer, quantity, now, f"e{sent}",
                    fingerprint("api_calls", customer, quantity, now, "{}"), "{}",
                )
            )  # fmt: skip
            sent += 1
        app.usage.record_usage(batch)
        time.sleep(max(0.0, started + (index + 1) * pause - time.perf_counter()))
    return sent


def _commit(checkout: str) -> str:
    done = subprocess.run(
        ["git", "-C", checkout, "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip()


def _scrape(port: int) -> str:
    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text


def _unpushed(port: int) -> float:
    return _gauge(_scrape(port), 'stripemeter_unpushed_periods{target="live"}')


def _stripe_totals(url: str) -> dict[str, int]:
    """Per Stripe customer: the meter's total, straight from the emulator (no rate limit)."""
    data = httpx.get(f"{url}/_emulator/totals", timeout=60).json()["data"]
    return {row["customer"]: int(row["value"]) for row in data}


def _settled(url: str, expected: dict[str, int]) -> bool:
    return sum(_stripe_totals(url).values()) >= sum(expected.values())


def _drop_queue(queue: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"*{queue}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
