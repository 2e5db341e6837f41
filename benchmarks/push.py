"""Pushing to Stripe at volume: N customers, M usage events, against the emulator's rate limit.

    .venv/bin/python -m benchmarks.push --backend postgres [--customers 1000] [--events 1000000]
        [--stream-min-batch 10]   # 1000000000: every push on v1, as before the stream

The Stripe emulator runs as its own process at its default rate limit (100
requests/s). Usage is written by this process with ``UsageRecorder.record_usage`` in
5,000-event batches (this measures the push, not HTTP ingest) while a
``stripemeter worker --no-pushes`` projects and a ``stripemeter worker
--no-projections`` pushes (Dramatiq on an in-process broker, sweep every 5 s),
as a busy production deployment would run them. Reported:
Stripe calls by endpoint (v1 ``meter_events``, v2 sessions and stream calls,
as the emulator counted them), meter events stored, 429s met, and the time
from the last ingest until Stripe holds every counter. A run whose Stripe totals differ from
the counters for any customer fails.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal

import httpx

from benchmarks.emulator import API_KEY, emulator_and_database, emulator_counts, meter_event_calls
from benchmarks.processes import BIN, ROOT, free_port
from benchmarks.report import emit, log, machine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--customers", type=int, default=1_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--interval", type=float, default=5.0, help="push sweep interval (s)")
    parser.add_argument(
        "--stream-min-batch",
        type=int,
        default=10,
        help="STRIPEMETER_STREAM_MIN_BATCH of the pushing worker (1000000000: v1 only)",
    )
    args = parser.parse_args(argv)

    with emulator_and_database(args.backend) as (url, _):
        result = _run(args, url)
    emit(result)
    return 0 if result["passed"] else 1


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
    events_before, limited_before = emulator_counts(url)
    calls_before = meter_event_calls(url)

    metrics_port = free_port()
    worker_env = {
        **os.environ,
        "STRIPE_SECRET_KEY": API_KEY,
        "STRIPE_API_BASE": url,
        "STRIPE_MAX_NETWORK_RETRIES": "5",
        "STRIPEMETER_PUSH_INTERVAL_SECONDS": str(int(args.interval)),
        "STRIPEMETER_STREAM_MIN_BATCH": str(args.stream_min_batch),
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

    events_after, limited_after = emulator_counts(url)
    stored = events_after - events_before
    after = meter_event_calls(url)
    by_path = {path: n - calls_before.get(path, 0) for path, n in after.items()}
    v1_calls = by_path.get("/v1/billing/meter_events", 0)
    stream_calls = by_path.get("/v2/billing/meter_event_stream", 0)
    sessions = by_path.get("/v2/billing/meter_event_session", 0)
    calls = v1_calls + stream_calls + sessions
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
        "stream_min_batch": args.stream_min_batch,
        "stripe_meter_events_stored": stored,
        "stripe_calls_v1_meter_events": v1_calls,
        "stripe_calls_v2_stream": stream_calls,
        "stripe_calls_v2_sessions": sessions,
        "stripe_calls_total": calls,
        "stripe_calls_per_million_events": round(calls * 1_000_000 / max(sent, 1)),
        "meter_events_per_stream_call": round(
            (stored - v1_calls) / stream_calls if stream_calls else 0.0, 1
        ),
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


def _total(gateway: object, meter_id: str, stripe_id: str, start: datetime, end: datetime) -> int:
    while True:
        try:
            return gateway.meter_total(meter_id, stripe_id, start, end)  # type: ignore[attr-defined,no-any-return]
        except Exception:
            time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
