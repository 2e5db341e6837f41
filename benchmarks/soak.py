"""Soak: the production shape under steady load, Stripe faults and kill -9, then parity.

    .venv/bin/python -m benchmarks.soak --minutes 30 [--customers 100] [--rate 50]
        [--kill-mean-seconds 60] [--kill writer,api,serve,worker] [--seed 1]

What runs (every process started here, on this machine):

- PostgreSQL: a fresh database ``stripemeter_soak_<pid>_*``, dropped at the end;
- Redis as the Dramatiq broker: database ``--redis-db`` (13), flushed at start
  and at the end;
- the Stripe emulator as its own HTTP server, rate-limited (``--stripe-rate-
  limit``, so 429s happen) and injecting 500, 503, connection resets,
  timeouts after the write and half-applied stream calls at ``--fault-rate``;
- ``stripemeter serve`` with two API processes and its writer process, and one
  ``stripemeter worker`` (projections and pushes), each in a process group of
  its own (benchmarks/soak_stack.py);
- the load: the Python SDK sending ``--rate`` events/s for ``--customers``
  customers over three metrics (sum, count, max), a fraction resent on purpose
  and a fraction late, each event sent until acknowledged (benchmarks/soak_load.py).

Every ``--kill-mean-seconds`` on average (exponential gaps), one of the writer,
one API process, ``serve`` with its whole group, or the worker gets SIGKILL;
``serve`` and the worker are restarted a second later, the writer by ``serve``
and an API process by uvicorn. RSS (VmRSS) of every process is sampled every
``--rss-interval`` seconds.

At the end: the load stops, the faults are cleared, every event not yet
acknowledged is sent until it is, the worker drains, and then, per customer ×
metric, Stripe's total must equal our counter and our counter must equal what
the acknowledged events make; ``stripemeter reconcile`` (no repair) must find
every period ``ok``. Exit status 1 on any difference (benchmarks/soak_check.py).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from benchmarks.databases import fresh_database
from benchmarks.emulator import emulator_process, meter_event_calls
from benchmarks.processes import free_port
from benchmarks.report import emit, log, machine
from benchmarks.service import Service, _cli
from benchmarks.soak_check import Parity, compare, reconcile, settle
from benchmarks.soak_load import METRICS, Load
from benchmarks.soak_report import RssSampler, print_report, rss_summary
from benchmarks.soak_stack import KINDS, Stack

API_KEY = "sk_test_soak"
LATENESS_S = 35 * 86400
# About one Stripe request in five fails, one way or another.
FAULTS = "500=0.05,503=0.05,reset=0.03,timeout_after_write=0.05,partial_then_500=0.05"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=30.0, help="load and chaos (default 30)")
    p.add_argument("--customers", type=int, default=100)
    p.add_argument("--rate", type=float, default=50.0, help="new events per second")
    p.add_argument("--duplicate-fraction", type=float, default=0.05)
    p.add_argument("--late-fraction", type=float, default=0.1)
    p.add_argument("--late-max-seconds", type=float, default=6 * 3600)
    p.add_argument("--kill-mean-seconds", type=float, default=60.0)
    p.add_argument("--kill", default=",".join(KINDS), help=f"kinds to kill ({','.join(KINDS)})")
    p.add_argument("--fault-rate", default=FAULTS, help="KIND=RATE,… for the Stripe emulator")
    p.add_argument(
        "--stripe-rate-limit",
        type=int,
        default=15,
        help="emulator requests/s (below the worker's 20 summary reads/s: 429s happen)",
    )
    p.add_argument(
        "--reconcile-interval",
        type=int,
        default=60,
        help="the worker's scheduled reconciliation (s): reads under faults, 429s",
    )
    p.add_argument("--rss-interval", type=float, default=10.0, help="seconds between samples")
    p.add_argument("--settle-timeout", type=float, default=600.0)
    p.add_argument("--redis-db", type=int, default=13)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep-logs", action="store_true", help="keep the processes' logs on success")
    args = p.parse_args(argv)
    args.kinds = [k for k in args.kill.split(",") if k]
    unknown = set(args.kinds) - set(KINDS)
    if unknown:
        p.error(f"--kill: unknown kind(s) {sorted(unknown)}")
    args.faults = {
        kind: float(rate)
        for kind, _, rate in (pair.partition("=") for pair in args.fault_rate.split(",") if pair)
    }
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logs = Path(tempfile.mkdtemp(prefix=f"stripemeter-soak-{os.getpid()}-"))
    log(f"soak: logs and sockets in {logs}")
    redis_url = f"redis://127.0.0.1:6379/{args.redis_db}"
    _flush_redis(redis_url)
    with (
        (logs / "emulator.log").open("ab") as emulator_log,
        emulator_process(
            "--rate-limit", "0", "--hang-seconds", "3", "--fault-seed", str(args.seed),
            output=emulator_log,
        ) as (emulator, emulator_pid),
        fresh_database("postgres", prefix="stripemeter_soak") as db_env,
    ):  # fmt: skip
        env = _service_env(db_env, emulator, redis_url, logs)
        result = _soak(args, env, emulator, emulator_pid, logs)
    _flush_redis(redis_url)
    print_report(result)
    emit(result)
    passed = bool(result["passed"])
    if passed and not args.keep_logs:
        shutil.rmtree(logs, ignore_errors=True)
    else:
        log(f"soak: logs kept in {logs}")
    return 0 if passed else 1


def _service_env(
    db_env: dict[str, str], emulator: str, redis_url: str, logs: Path
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPEMETER_", "STRIPE_"))}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(
        db_env,
        TMPDIR=str(logs),  # writer sockets and metrics folders of killed processes go with it
        STRIPE_SECRET_KEY=API_KEY,
        STRIPE_API_BASE=emulator,
        STRIPE_TIMEOUT_SECONDS="2",  # below the emulator's hang: a real client timeout
        STRIPE_MAX_NETWORK_RETRIES="2",
        STRIPEMETER_BROKER_URL=redis_url,
        STRIPEMETER_BROKER_QUEUE=f"stripemeter_soak_{os.getpid()}",
        STRIPEMETER_LOG_LEVEL="WARNING",
        STRIPEMETER_PUSH_INTERVAL_SECONDS="2",
    )
    return env


def _soak(
    args: argparse.Namespace, env: dict[str, str], emulator: str, emulator_pid: int, logs: Path
) -> dict[str, Any]:
    tenant = f"soak-{os.getpid()}"
    _cli(env, "tenants", "create", tenant)
    key = _cli(env, "keys", "create", "--tenant", tenant, "--scopes", "ingest,read,admin")["key"]
    serve_env = dict(env, STRIPEMETER_API_PROCESSES="2", STRIPEMETER_EMBEDDED_WORKER="false")
    metrics_port = free_port()
    worker_env = dict(
        env,
        STRIPEMETER_WORKER_METRICS_PORT=str(metrics_port),
        STRIPEMETER_RECONCILE_INTERVAL_SECONDS=str(args.reconcile_interval),
    )
    svc = Service("postgres", serve_env, free_port(), key, tenant, "production")
    svc.worker_metrics_port = metrics_port
    stack = Stack(svc, serve_env, worker_env, logs, emulator_pid)
    sampler = RssSampler(stack, args.rss_interval, env["STRIPEMETER_DATABASE_URL"])
    parity = Parity()
    load: Load | None = None
    try:
        stack.start()
        _declare_and_map(svc, emulator, args.customers)
        _set_faults(emulator, args)
        load = Load(svc.url, key, args.customers, args.rate, args.duplicate_fraction,
                    args.late_fraction, args.late_max_seconds, args.seed)  # fmt: skip
        sampler.start()
        started = time.monotonic()  # the soak's minutes are minutes of load and chaos
        load.start()
        log(
            f"soak: load {args.rate}/s for {args.minutes} min,"
            f" a kill every ~{args.kill_mean_seconds} s"
        )
        _chaos(stack, args, started + args.minutes * 60)
        ran_s = time.monotonic() - started
        log("soak: load stopped; faults cleared; draining")
        load.stop()
        httpx.delete(f"{emulator}/_emulator/faults", timeout=30)
        stack.wait_ready()
        load.drain()
        faults = _faults_injected(emulator)
        stripe_requests = meter_event_calls(emulator)
        parity.settle_s = settle(svc, emulator, load.truth, args.settle_timeout)
        compare(svc, emulator, load.truth, parity)
        # The final run's reads paced under the emulator's limit: a verdict, not a 429 test.
        pace = str(max(1, args.stripe_rate_limit * 2 // 3))
        reconcile(
            dict(serve_env, STRIPEMETER_RECONCILE_READS_PER_SECOND=pace), emulator, tenant, parity
        )
    finally:
        sampler.stop()
        if load is not None and load.is_alive():
            load.stop()
        stack.stop()
    truth = load.truth
    return {
        "benchmark": "soak",
        "machine": machine(),
        "minutes_run": round(ran_s / 60, 1),
        "customers": args.customers,
        "metrics": METRICS,
        "rate_per_s": args.rate,
        "events_sent": dict(truth.sent),
        "answers": dict(truth.answers),
        "acknowledged_events": len(truth.acknowledged),
        "kills": dict(stack.kills),
        "restarts_by_harness": dict(stack.restarts),
        "stripe_faults_injected": faults,
        "stripe_meter_event_requests": stripe_requests,
        "settle_s": round(parity.settle_s, 1),
        "parity_lines": parity.lines,
        "parity_meters": parity.meters,
        # Each list is cut at its first 20 items; the counts are whole.
        "differences": {
            "counter_vs_truth": len(parity.counter_vs_truth),
            "stripe_vs_counter": len(parity.stripe_vs_counter),
            "reconciliation": len(parity.reconciliation_problems),
            "load": len(truth.problems),
        },
        "counter_vs_truth": parity.counter_vs_truth[:20],
        "stripe_vs_counter": parity.stripe_vs_counter[:20],
        "reconciliation": dict(parity.reconciliation),
        "reconcile_traffic": parity.reconcile_traffic,
        "reconciliation_problems": parity.reconciliation_problems[:20],
        "load_problems": truth.problems[:20],
        "rss_mib": rss_summary(sampler.samples),
        "max_pg_connections": sampler.max_connections,
        "passed": parity.passed and not truth.problems,
    }


def _chaos(stack: Stack, args: argparse.Namespace, until: float) -> None:
    """Kill one process now and then (exponential gaps), restart what died, until ``until``."""
    rng = random.Random(args.seed)
    next_kill = time.monotonic() + rng.expovariate(1 / args.kill_mean_seconds)
    while time.monotonic() < until:
        stack.keep_alive()
        if args.kinds and time.monotonic() >= next_kill:
            kind = rng.choice(args.kinds)
            if stack.kill(kind):
                log(f"soak: kill -9 {kind}")
                next_kill = time.monotonic() + rng.expovariate(1 / args.kill_mean_seconds)
        time.sleep(0.5)


def _declare_and_map(svc: Service, emulator: str, customers: int) -> None:
    """The metrics, a Stripe meter for each and a Stripe customer per customer, through the API."""
    for metric, aggregation in METRICS.items():
        meter = {"name": metric, "aggregation": aggregation, "latenessWindowSeconds": LATENESS_S}
        svc.client.post("/v1/meters", json=meter).raise_for_status()
        response = svc.client.post("/v1/mappings", json={"metric": metric, "createMeter": True})
        response.raise_for_status()
    with httpx.Client(base_url=emulator, auth=(API_KEY, ""), timeout=30) as stripe:
        for n in range(customers):
            stripe_id = stripe.post("/v1/customers", data={"name": f"soak {n}"}).json()["id"]
            body = {"customerRef": f"cust-{n}", "stripeCustomerId": stripe_id}
            svc.client.post("/v1/customers", json=body).raise_for_status()
    log(f"soak: {len(METRICS)} meters and {customers} customers mapped to Stripe")


def _set_faults(emulator: str, args: argparse.Namespace) -> None:
    body = {"rates": args.faults, "seed": args.seed}
    httpx.post(f"{emulator}/_emulator/faults", json=body, timeout=30).raise_for_status()
    limit = {"per_second": args.stripe_rate_limit}
    httpx.post(f"{emulator}/_emulator/rate_limit", json=limit, timeout=30).raise_for_status()


def _faults_injected(emulator: str) -> dict[str, int]:
    state = httpx.get(f"{emulator}/_emulator", timeout=30).json()
    injected = Counter(f["kind"] for f in state["faults"]["injected"])
    return {**dict(injected), "429": int(state["rate_limited"])}


def _flush_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    with contextlib.closing(client):
        client.flushdb()


if __name__ == "__main__":
    sys.exit(main())
