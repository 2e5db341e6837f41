"""Pushing to Stripe at volume: N customers, M usage events, against the emulator's rate limit.

    .venv/bin/python -m benchmarks.push --backend postgres [--customers 1000] [--events 1000000]

The Stripe emulator runs as its own process at its default rate limit (100
requests/s). Usage is written by this process with ``UsageRecorder.record_usage`` in
5,000-event batches (this measures the push, not HTTP ingest) while a
``stripemeter worker --no-pushes`` projects and a ``stripemeter worker
--no-projections`` pushes (Dramatiq on an in-process broker, sweep every 5 s),
as a busy production deployment would run them. Reported:
Stripe meter-event calls (against one per customer × meter × sweep, and
against one per event), 429s met, and the time from the last ingest until
Stripe holds every counter. A run whose Stripe totals differ from
the counters for any customer fails.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal

import httpx

from benchmarks.harness import BIN, ROOT, emit, free_port, fresh_database, log, machine

API_KEY = "sk_test_bench"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--customers", type=int, default=1_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--interval", type=float, default=5.0, help="push sweep interval (s)")
    args = parser.parse_args(argv)

    with emulator_and_database(args.backend) as (url, _):
        result = _run(args, url)
    emit(result)
    return 0 if result["passed"] else 1


@contextmanager
def emulator_and_database(backend: str, *emulator_args: str) -> Iterator[tuple[str, int]]:
    """An emulator in its own process and a fresh database for the product's settings.

    Yields the emulator's URL and process id; both are gone afterwards.
    """
    port = free_port()
    emulator = subprocess.Popen(
        [
            *(str(BIN / "python"), "-m", "stripe_emulator", "--port", str(port)),
            *("--log-level", "warning", *emulator_args),
        ],
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(url)
        with fresh_database(backend) as db_env:
            for name in [k for k in os.environ if k.startswith("STRIPEMETER_")]:
                del os.environ[name]
            os.environ.update(db_env)
            yield url, emulator.pid
    finally:
        emulator.terminate()
        emulator.wait(timeout=30)


def _wait(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/_emulator", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit("the emulator did not start")


def _run(args: argparse.Namespace, url: str) -> dict[str, object]:
    import dataclasses

    from adapters.persistence import open_stores
    from adapters.settings import Settings, StripeSettings
    from adapters.stripe_gateway import SdkStripeGateway
    from domain.idempotency import fingerprint
    from domain.ingest import UsageSubmission
    from domain.mappings import MeterMapping
    from domain.meters import Aggregation, MetricDefinition

    settings = dataclasses.replace(
        Settings.from_env(),
        stripe=StripeSettings(API_KEY, url, max_network_retries=5, timeout_seconds=30),
    )
    stores = open_stores(settings)
    gateway = SdkStripeGateway(API_KEY, url, max_network_retries=8, timeout_seconds=30)
    app = stores.app
    tenant = app.register_tenant("bench", "Bench").id
    app.declare_metric(tenant, MetricDefinition("api_calls", Aggregation.SUM))
    meter = gateway.create_meter("api_calls", "api_calls", "sum")
    app.map_meter(tenant, MeterMapping("api_calls", meter.id, "api_calls", "sum"))
    log(f"creating {args.customers} Stripe customers (rate limited)")
    stripe_ids: dict[str, str] = {}
    with httpx.Client(base_url=url, auth=(API_KEY, "")) as http:
        for n in range(args.customers):
            while True:
                response = http.post("/v1/customers", data={"name": f"c{n}"})
                if response.status_code != 429:
                    break
                time.sleep(0.2)
            stripe_ids[f"c{n}"] = response.json()["id"]
            app.map_customer(tenant, f"c{n}", stripe_ids[f"c{n}"], None)
    events_before, limited_before = _emulator_counts(url)

    metrics_port = free_port()
    worker_env = {
        **os.environ,
        "STRIPE_SECRET_KEY": API_KEY,
        "STRIPE_API_BASE": url,
        "STRIPE_MAX_NETWORK_RETRIES": "5",
        "STRIPEMETER_PUSH_INTERVAL_SECONDS": str(int(args.interval)),
        "STRIPEMETER_WORKER_METRICS_PORT": str(metrics_port),
        "STRIPEMETER_LOG_LEVEL": "WARNING",
    }
    # Two workers, as a busy deployment would run them: one projects, one pushes.
    workers = [
        subprocess.Popen(
            [str(BIN / "stripemeter"), "worker", "--no-pushes"],
            env={**worker_env, "STRIPEMETER_WORKER_METRICS_PORT": "0"},
            cwd=ROOT,
        ),
        subprocess.Popen(
            [str(BIN / "stripemeter"), "worker", "--no-projections"], env=worker_env, cwd=ROOT
        ),
    ]
    rng = random.Random(7)
    expected: dict[str, int] = dict.fromkeys(stripe_ids, 0)
    started = time.perf_counter()
    now = datetime.now(UTC)
    sent = 0
    try:
        while sent < args.events:
            batch = []
            for _ in range(min(args.batch, args.events - sent)):
                customer = f"c{rng.randrange(args.customers)}"
                quantity = Decimal(rng.randint(1, 5))
                expected[customer] += int(quantity)
                key = f"e{sent}"
                batch.append(
                    UsageSubmission(
                        tenant, "api_calls", customer, quantity, now, key,
                        fingerprint("api_calls", customer, quantity, now, "{}"), "{}",
                    )
                )  # fmt: skip
                sent += 1
            app.usage.record_usage(batch)
            if sent % 100_000 == 0:
                log(f"{sent} events written, {time.perf_counter() - started:.0f} s")
        ingest_s = time.perf_counter() - started
        log(f"ingested {sent} events in {ingest_s:.1f} s; waiting for Stripe to hold every counter")
        last_ingest = time.perf_counter()
        deadline = last_ingest + 1800
        settled = False
        while time.perf_counter() < deadline and not settled:
            time.sleep(1)
            if stores.views.runner.lag().events:
                continue
            scrape = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
            settled = _gauge(scrape, 'stripemeter_unpushed_periods{target="live"}') == 0 and (
                _gauge(scrape, "stripemeter_pushes_total", "confirmed") > 0
            )
        to_parity_s = time.perf_counter() - last_ingest
        scrape = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=60)

    events_after, limited_after = _emulator_counts(url)
    calls = events_after - events_before
    confirmed = _gauge(scrape, "stripemeter_pushes_total", "confirmed")
    log("checking every customer's Stripe total against its counter")
    period = app.period_for(tenant, "c0", now)
    mismatches = sum(
        1
        for ref, stripe_id in stripe_ids.items()
        if _total(gateway, meter.id, stripe_id, period.start, period.end) != expected[ref]
    )
    stores.close()
    return {
        "benchmark": "push",
        "backend": args.backend,
        "machine": machine(),
        "customers": args.customers,
        "events": sent,
        "sweep_interval_s": args.interval,
        "ingest_s": round(ingest_s, 1),
        "ingest_events_per_s": round(sent / ingest_s, 1),
        "stripe_meter_events_stored": calls,
        "stripe_429s": limited_after - limited_before,
        "pushes_confirmed": int(confirmed),
        "pushes_per_customer": round(confirmed / max(args.customers, 1), 2),
        "events_per_stripe_call": round(sent / max(calls, 1), 1),
        "seconds_from_last_ingest_to_parity": round(to_parity_s, 1),
        "parity_reached": settled,
        "customers_mismatched": mismatches,
        "passed": settled and mismatches == 0,
    }


def _gauge(scrape: str, name: str, outcome: str | None = None) -> float:
    total = 0.0
    for line in scrape.splitlines():
        if line.startswith("#"):
            continue
        if outcome is None and line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
        if outcome is not None and line.startswith(name + "{") and f'outcome="{outcome}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _emulator_counts(url: str) -> tuple[int, int]:
    """Meter events Stripe stored, and requests it refused with 429 (any endpoint)."""
    state = httpx.get(f"{url}/_emulator", timeout=30).json()
    return int(state["counts"]["meter_events"]), int(state["rate_limited"])


def _total(gateway: object, meter_id: str, stripe_id: str, start: datetime, end: datetime) -> int:
    while True:
        try:
            return gateway.meter_total(meter_id, stripe_id, start, end)  # type: ignore[attr-defined,no-any-return]
        except Exception:
            time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
