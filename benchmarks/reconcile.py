"""Reconciling N customers against the rate-limited Stripe emulator: wall time and Stripe calls.

    .venv/bin/python -m benchmarks.reconcile --backend postgres [--customers 10000]
        [--threads 4] [--rate-limit 100] [--compare-threads 1,8] [--profile FILE]

Setup (not timed, the emulator's rate limit off): a fresh database, a tenant,
one ``sum`` metric mapped to an emulator meter, N customers each mapped to a
Stripe customer of the emulator, a few usage events each in the current period
(``record_usage``, 1,000-event batches), the projections caught up, and every
period pushed once (``PushService.push``), so Stripe holds every total. Then
about 1 % of the customers drift on purpose, in three known ways: a meter
event sent to Stripe behind StripeMeter's back (drift, "outside"), the
confirmed push cancelled in Stripe (drift, "missing"), and extra usage that is
not pushed yet (pending, "unpushed").

Timed, with the emulator's rate limit at ``--rate-limit`` (default 100
requests/s) and the reconciler built as the service builds it
(``Reconciliation.build`` with an ``SdkStripeGateway`` that retries 429s,
``max_network_retries`` 5): one full reconciliation of the tenant (every
recent period, no month), which must report exactly the planted drift; a
repair run (``--repair``), which must repair exactly the planted lines with
one push each; a steady-state run after it, which must find every line ok;
more steady-state runs with ``--compare-threads`` reconciler threads; and a
last one with the rate limit off, the reconciler's own ceiling on this machine
(``--profile FILE`` records it with py-spy).
Each run reports its wall time against the floor the rate limit sets
(N summary reads / limit), the Stripe calls made (counted by the gateway; the
429s the emulator refused are counted by the emulator) and the lines per
status. A run that reports anything else than what was planted fails.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx

from adapters.stripe_gateway import SdkStripeGateway
from benchmarks.harness import (
    BIN,
    cpu_by_command,
    cpu_seconds,
    emit,
    log,
    machine,
    process_cpu,
)
from benchmarks.push import API_KEY, _emulator_counts, emulator_and_database
from domain.stripe_port import MeterEventRequest

METRIC = "api_calls"
OUTSIDE = "events sent to Stripe outside StripeMeter"
MISSING = "Stripe lacks confirmed pushes (lost, or cancelled in Stripe)"
UNPUSHED = "events after the last push"

Line = tuple[str, str, int, int | None]  # what a report line says: status, cause, local, stripe


class CountingGateway(SdkStripeGateway):
    """The SDK gateway, counting the calls it makes and when each started and ended.

    A call is one gateway method call; the SDK may send it more than once
    (its retries of 429s), which the emulator counts as ``rate_limited``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.summaries: list[tuple[float, float]] = []  # (start, end) perf_counter
            self.sends = 0

    def meter_total(self, meter_id: str, stripe_customer_id: str, start: Any, end: Any) -> int:
        began = time.perf_counter()
        try:
            return super().meter_total(meter_id, stripe_customer_id, start, end)
        finally:
            ended = time.perf_counter()
            with self._lock:
                self.summaries.append((began, ended))

    def send_meter_event(self, request: MeterEventRequest) -> None:
        with self._lock:
            self.sends += 1
        super().send_meter_event(request)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=3, help="usage events per customer")
    parser.add_argument("--threads", type=int, default=4, help="reconciler threads")
    parser.add_argument("--rate-limit", type=int, default=100, help="emulator requests/s")
    parser.add_argument("--drift", type=float, default=0.01, help="share of customers to drift")
    parser.add_argument(
        "--compare-threads",
        default="1,8",
        help="more steady-state runs with these thread counts ('' for none)",
    )
    parser.add_argument(
        "--summary-lag",
        type=int,
        default=0,
        help="STRIPEMETER_RECONCILE_SUMMARY_LAG_SECONDS (the emulator's summaries do not lag)",
    )
    parser.add_argument(
        "--no-unlimited",
        dest="unlimited",
        action="store_false",
        help="skip the last steady-state run with the rate limit off",
    )
    parser.add_argument(
        "--profile", help="py-spy the run without rate limit into this file (raw stacks)"
    )
    args = parser.parse_args(argv)

    with emulator_and_database(args.backend, "--rate-limit", "0") as (url, pid):
        result = _run(args, url, pid)
    emit(result)
    return 0 if result["passed"] else 1


def _run(args: argparse.Namespace, url: str, emulator_pid: int) -> dict[str, Any]:
    from adapters.metrics import Metrics
    from adapters.persistence import open_stores
    from adapters.reconciler import Reconciliation
    from adapters.settings import Settings, StripeSettings
    from domain.application import utc_now
    from domain.mappings import MeterMapping
    from domain.meters import Aggregation, MetricDefinition
    from domain.pushing import PushOutcome, PushService, Target
    from domain.usage import usage_period_id

    base = Settings.from_env()
    settings = dataclasses.replace(
        base,
        stripe=StripeSettings(API_KEY, url, max_network_retries=5, timeout_seconds=30),
        reconcile=dataclasses.replace(
            base.reconcile, threads=args.threads, summary_lag_seconds=args.summary_lag
        ),
    )
    stores = open_stores(settings)
    app = stores.app
    gateway = CountingGateway(
        API_KEY,
        url,
        max_network_retries=settings.stripe.max_network_retries,
        timeout_seconds=settings.stripe.timeout_seconds,
    )
    setup_started = time.perf_counter()
    loadavg_start = Path("/proc/loadavg").read_text().split()[:3]
    tenant = app.register_tenant("bench", "Bench").id
    app.declare_metric(tenant, MetricDefinition(METRIC, Aggregation.SUM))
    meter = gateway.create_meter(METRIC, METRIC, "sum")
    app.map_meter(tenant, MeterMapping(METRIC, meter.id, meter.event_name, meter.formula))

    refs = [f"c{n:05d}" for n in range(args.customers)]
    log(f"creating and mapping {args.customers} Stripe customers (rate limit off)")
    stripe_ids: dict[str, str] = {}
    with httpx.Client(base_url=url, auth=(API_KEY, ""), timeout=30) as http:
        for ref in refs:
            response = http.post("/v1/customers", data={"name": ref})
            response.raise_for_status()
            stripe_ids[ref] = response.json()["id"]
            app.map_customer(tenant, ref, stripe_ids[ref], None)

    rng = random.Random(11)
    now = datetime.now(UTC)
    local: dict[str, int] = dict.fromkeys(refs, 0)
    log(f"recording {args.events} events per customer")
    _record(app, tenant, [ref for ref in refs for _ in range(args.events)], now, rng, local, "e")
    stores.views.runner.catch_up()

    log(f"pushing {args.customers} periods (setup only)")
    pusher = PushService(app, {Target.LIVE: gateway})
    period_ids = {
        ref: usage_period_id(tenant, ref, METRIC, app.period_for(tenant, ref, now).key)
        for ref in refs
    }
    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = Counter(pool.map(pusher.push, period_ids.values()))
    if outcomes != Counter({PushOutcome.CONFIRMED: args.customers}):
        raise SystemExit(f"setup push failed: {dict(outcomes)}")

    log("planting drift")
    expected, planted = _plant(args, app, tenant, refs, stripe_ids, local, rng, url, now)
    stores.views.runner.catch_up()
    setup_s = time.perf_counter() - setup_started
    log(f"setup done in {setup_s:.0f} s; planted {dict(Counter(planted.values()))}")

    _set_rate_limit(url, args.rate_limit)
    metrics = Metrics()

    def build(threads: int) -> Callable[..., list[Any]]:
        reconcile = dataclasses.replace(settings.reconcile, threads=threads)
        rec = Reconciliation.build(
            stores,
            reconcile,
            gateway,
            PushService(app, {Target.LIVE: gateway}),
            metrics,
            utc_now,
        ).reconciler
        return rec.run

    runs: list[dict[str, Any]] = []
    repaired: dict[str, Line] = {
        r: ("repaired", *expected[r][1:]) if r in planted else expected[r] for r in refs
    }
    ok_everywhere: dict[str, Line] = {r: ("ok", "", expected[r][2], expected[r][2]) for r in refs}

    def timed(name: str, threads: int, repair: bool, want: Mapping[str, Line]) -> dict[str, Any]:
        stores.views.runner.catch_up()  # as `stripemeter reconcile` does; nothing to do here
        run = build(threads)
        profiler = _py_spy(args.profile) if args.profile and "no rate limit" in name else None
        try:
            result = _timed(name, run, tenant, gateway, url, emulator_pid, threads, repair)
        finally:
            if profiler is not None:
                profiler.send_signal(signal.SIGINT)
                profiler.wait(timeout=120)
        lines = result.pop("_lines")
        limit = args.rate_limit if "no rate limit" not in name else 0
        result["rate_limit_per_s"] = limit
        result["floor_s"] = (
            round((result["summary_calls"] + result["sends"]) / limit, 1) if limit else 0
        )
        result["wall_over_floor"] = (
            round(result["wall_s"] / result["floor_s"], 2) if limit else None
        )
        result["problems"] = _check(lines, want)
        result["passed"] = not result["problems"]
        if repair:
            result["passed"] = result["passed"] and result["sends"] == len(planted)
        runs.append(result)
        log(_row(result))
        return result

    timed("detect", args.threads, False, expected)
    timed("repair", args.threads, True, repaired)
    timed("steady", args.threads, False, ok_everywhere)
    for threads in [int(t) for t in args.compare_threads.split(",") if t.strip()]:
        timed(f"steady, {threads} threads", threads, False, ok_everywhere)
    if args.unlimited:
        # What the reconciler does when Stripe does not hold it back: its own ceiling here.
        _set_rate_limit(url, 0)
        timed("steady, no rate limit", args.threads, False, ok_everywhere)

    stores.close()
    detect = runs[0]
    result = {
        "benchmark": "reconcile",
        "backend": args.backend,
        "machine": machine(),
        "customers": args.customers,
        "events_per_customer": args.events,
        "rate_limit_per_s": args.rate_limit,
        "threads": args.threads,
        "sdk_max_network_retries": settings.stripe.max_network_retries,
        "summary_lag_s": args.summary_lag,
        "loadavg_at_start": loadavg_start,
        "setup_s": round(setup_s, 1),
        "planted": dict(Counter(planted.values())),
        "found": detect["causes"],
        "runs": runs,
        "passed": all(r["passed"] for r in runs),
    }
    print(_table(result), file=sys.stderr)
    return result


def _record(
    app: Any,
    tenant: UUID,
    customers: list[str],
    moment: datetime,
    rng: random.Random,
    local: dict[str, int],
    prefix: str,
) -> None:
    """``record_usage`` in 1,000-event batches, one event per entry of ``customers``."""
    from domain.idempotency import fingerprint
    from domain.ingest import UsageSubmission

    for offset in range(0, len(customers), 1_000):
        batch = []
        for n, customer in enumerate(customers[offset : offset + 1_000], offset):
            quantity = Decimal(rng.randint(1, 5))
            local[customer] += int(quantity)
            batch.append(
                UsageSubmission(
                    tenant, METRIC, customer, quantity, moment, f"{prefix}{n}",
                    fingerprint(METRIC, customer, quantity, moment, "{}"), "{}",
                )
            )  # fmt: skip
        results = app.usage.record_usage(batch)
        refused = [r for r in results if r.outcome.value != "accepted"]
        if refused:
            raise SystemExit(f"record_usage refused {len(refused)} events: {refused[0]}")


def _plant(
    args: argparse.Namespace,
    app: Any,
    tenant: UUID,
    refs: list[str],
    stripe_ids: dict[str, str],
    local: dict[str, int],
    rng: random.Random,
    url: str,
    now: datetime,
) -> tuple[dict[str, Line], dict[str, str]]:
    """Make some customers drift in known ways; what each line must then say:
    {ref: (status, cause, local, stripe)}, and {ref: kind} of the planted ones."""
    count = max(3, round(args.customers * args.drift))
    chosen = rng.sample(refs, count)
    missing = chosen[: max(1, count // 5)]
    outside = chosen[len(missing) : len(missing) + (count - len(missing)) // 2]
    unpushed = chosen[len(missing) + len(outside) :]
    stripe = dict(local)  # every period was pushed once: Stripe holds every total
    with httpx.Client(base_url=url, auth=(API_KEY, ""), timeout=30) as http:
        for ref in outside:
            value = rng.randint(1, 9)
            response = http.post(
                "/v1/billing/meter_events",
                data={
                    "event_name": METRIC,
                    "payload[stripe_customer_id]": stripe_ids[ref],
                    "payload[value]": str(value),
                },
            )
            response.raise_for_status()
            stripe[ref] += value
        for ref in missing:
            events = http.get("/_emulator/meter_events", params={"customer": stripe_ids[ref]})
            [event] = events.json()["data"]
            response = http.post(
                "/v1/billing/meter_event_adjustments",
                data={
                    "event_name": METRIC,
                    "type": "cancel",
                    "cancel[identifier]": event["identifier"],
                },
            )
            response.raise_for_status()
            stripe[ref] = 0
    _record(app, tenant, unpushed, now, rng, local, "extra")
    expected: dict[str, Line] = {ref: ("ok", "", local[ref], stripe[ref]) for ref in refs}
    planted: dict[str, str] = {}
    for kind, group, status, cause in (
        ("outside", outside, "drift", OUTSIDE),
        ("missing", missing, "drift", MISSING),
        ("unpushed", unpushed, "pending", UNPUSHED),
    ):
        for ref in group:
            expected[ref] = (status, cause, local[ref], stripe[ref])
            planted[ref] = kind
    return expected, planted


def _set_rate_limit(url: str, per_second: int) -> None:
    response = httpx.post(f"{url}/_emulator/rate_limit", json={"per_second": per_second})
    response.raise_for_status()
    log(f"emulator rate limit now {response.json()['per_second']} requests/s")


def _py_spy(path: str) -> subprocess.Popen[bytes]:
    command = [
        str(BIN / "py-spy"),
        "record",
        "--pid",
        str(os.getpid()),
        "--rate",
        "100",
        "--nonblocking",
    ]
    command += ["--format", "raw", "--threads", "--output", path]
    profiler = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # let it attach
    return profiler


def _timed(
    name: str,
    run: Callable[..., list[Any]],
    tenant: UUID,
    gateway: CountingGateway,
    url: str,
    emulator_pid: int,
    threads: int,
    repair: bool,
) -> dict[str, Any]:
    from adapters.reconciler import Scope

    log(f"run {name!r}: threads {threads}, repair {repair}")
    gateway.reset()
    events_before, limited_before = _emulator_counts(url)
    emulator_cpu = cpu_seconds(emulator_pid)
    procs_before = process_cpu()
    own = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    reports = run(Scope(tenant), repair=repair, actor="benchmark", trigger="benchmark")
    wall = time.perf_counter() - started
    own_after = resource.getrusage(resource.RUSAGE_SELF)
    procs_after = process_cpu()
    emulator_cpu = cpu_seconds(emulator_pid) - emulator_cpu
    events_after, limited_after = _emulator_counts(url)

    lines = [line for report in reports for line in report.lines]
    calls = sorted(gateway.summaries)
    first, last = calls[0][0], max(end for _, end in calls)
    durations = sorted(end - start for start, end in calls)
    per_second = Counter(int(end - first) for _, end in calls)
    limited = limited_after - limited_before
    return {
        "run": name,
        "threads": threads,
        "repair": repair,
        "wall_s": round(wall, 2),
        "before_first_call_s": round(first - started, 2),
        "stripe_phase_s": round(last - first, 2),
        "after_last_call_s": round(started + wall - last, 2),
        "summary_calls": len(calls),
        "sends": gateway.sends,
        "meter_events_stored": events_after - events_before,
        "stripe_429s": limited,
        "http_requests": len(calls) + gateway.sends + limited,
        "calls_per_s": round(len(calls) / max(last - first, 1e-9), 1),
        "calls_per_s_median_second": statistics.median(per_second.values()),
        "call_ms_p50": round(durations[len(durations) // 2] * 1000, 1),
        "call_ms_p95": round(durations[int(len(durations) * 0.95)] * 1000, 1),
        "call_ms_max": round(durations[-1] * 1000, 1),
        "lines": len(lines),
        "statuses": dict(Counter(line.status for line in lines)),
        "causes": dict(Counter(f"{line.status}: {line.cause}" for line in lines)),
        "cpu_s": {
            "benchmark": round(
                own_after.ru_utime + own_after.ru_stime - own.ru_utime - own.ru_stime, 1
            ),
            "emulator": round(emulator_cpu, 1),
            "by_command": cpu_by_command(
                procs_before, procs_after, {os.getpid(): "benchmark", emulator_pid: "emulator"}
            ),
        },
        "_lines": lines,
    }


def _check(lines: list[Any], want: Mapping[str, Line]) -> list[str]:
    """Every customer has exactly one line, with the status, cause and numbers wanted."""
    problems = []
    seen = Counter(line.customer_ref for line in lines)
    if set(seen) != set(want) or max(seen.values(), default=0) != 1:
        problems.append(f"{len(lines)} lines for {len(want)} customers")
    for line in lines:
        got = (line.status, line.cause, line.local, line.stripe)
        if got != want.get(line.customer_ref):
            problems.append(f"{line.customer_ref}: got {got}, wanted {want.get(line.customer_ref)}")
    return problems[:20]


def _row(r: dict[str, Any]) -> str:
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(r["statuses"].items()))
    return (
        f"{r['run']}: {r['wall_s']} s (floor {r['floor_s']} s, {r['wall_over_floor']}x),"
        f" {r['calls_per_s']} reads/s,"
        f" {r['summary_calls']} summary reads + {r['sends']} pushes, {r['stripe_429s']} 429s,"
        f" {statuses}; {'PASSED' if r['passed'] else 'FAILED ' + str(r['problems'][:3])}"
    )


def _table(result: dict[str, Any]) -> str:
    rows = [
        "| run | threads | repair | wall s | floor s | wall / floor | summary reads | pushes"
        " | 429s | reads/s in the Stripe phase | call p50 / p95 / max ms | lines per status"
        " | check |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for r in result["runs"]:
        statuses = ", ".join(f"{k} {v:,}" for k, v in sorted(r["statuses"].items()))
        rows.append(
            f"| {r['run']} | {r['threads']} | {'yes' if r['repair'] else 'no'}"
            f" | {r['wall_s']:.1f} | {r['floor_s'] or '—'} | {r['wall_over_floor'] or '—'}"
            f" | {r['summary_calls']:,} | {r['sends']:,} | {r['stripe_429s']:,}"
            f" | {r['calls_per_s']:.1f}"
            f" | {r['call_ms_p50']} / {r['call_ms_p95']} / {r['call_ms_max']}"
            f" | {statuses} | {'passed' if r['passed'] else 'FAILED'} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
