"""Reconciling N customers against the rate-limited Stripe emulator: wall time and Stripe calls.

    .venv/bin/python -m benchmarks.reconcile --backend postgres [--customers 10000]
        [--threads 4] [--rate-limit 100] [--reads-per-second 95] [--compare-threads 1,8]
        [--no-unpaced] [--profile FILE]

Setup (not timed, the emulator's rate limit off; benchmarks/reconcile_setup.py):
N customers with usage, every period pushed once, then about 1 % of the
customers made to drift in three known ways ("outside", "missing", "unpushed").

Timed, with the emulator's rate limit at ``--rate-limit`` (default 100
requests/s) and the reconciler built as the service builds it
(``Reconciliation.build`` with an ``SdkStripeGateway`` that retries 429s,
``max_network_retries`` 5) and its summary reads paced at
``--reads-per-second`` (STRIPEMETER_RECONCILE_READS_PER_SECOND; 0: unpaced):
one full reconciliation of the tenant (every
recent period, no month), which must report exactly the planted drift; a
repair run (``--repair``), which must repair exactly the planted lines with
one push each; a steady-state run after it, which must find every line ok;
more steady-state runs with ``--compare-threads`` reconciler threads; one
unpaced, where the SDK's retries of 429s set the pace (skip with
``--no-unpaced``; a comparison: a line it could not read through the 429s is
counted, not failed); and a last one with the rate limit off and no pacing, the
reconciler's own ceiling on this machine
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
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx

from benchmarks.emulator import API_KEY, emulator_and_database, emulator_counts
from benchmarks.processes import BIN, cpu_by_command, cpu_seconds, process_cpu
from benchmarks.reconcile_setup import CountingGateway, Line, set_up
from benchmarks.report import emit, log, machine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=3, help="usage events per customer")
    parser.add_argument("--threads", type=int, default=4, help="reconciler threads")
    parser.add_argument("--rate-limit", type=int, default=100, help="emulator requests/s")
    parser.add_argument(
        "--reads-per-second",
        type=int,
        default=95,
        help="the reconciler's pace (STRIPEMETER_RECONCILE_READS_PER_SECOND; 0: unpaced)",
    )
    parser.add_argument(
        "--no-unpaced",
        dest="unpaced",
        action="store_false",
        help="skip the steady-state run without pacing (429s retried by the SDK)",
    )
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
    from domain.pushing import PushService, Target

    base = Settings.from_env()
    settings = dataclasses.replace(
        base,
        stripe=StripeSettings(API_KEY, url, max_network_retries=5, timeout_seconds=30),
        reconcile=dataclasses.replace(
            base.reconcile,
            threads=args.threads,
            summary_lag_seconds=args.summary_lag,
            reads_per_second=args.reads_per_second,
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
    loadavg_start = Path("/proc/loadavg").read_text().split()[:3]
    world = set_up(args, app, stores.views.runner.catch_up, gateway, url)
    tenant, refs, expected, planted = world.tenant, world.refs, world.expected, world.planted
    _set_rate_limit(url, args.rate_limit)
    metrics = Metrics()

    def build(threads: int, reads_per_second: int) -> Callable[..., list[Any]]:
        reconcile = dataclasses.replace(
            settings.reconcile, threads=threads, reads_per_second=reads_per_second
        )
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

    def timed(
        name: str,
        threads: int,
        repair: bool,
        want: Mapping[str, Line],
        reads_per_second: int = args.reads_per_second,
    ) -> dict[str, Any]:
        stores.views.runner.catch_up()  # as `stripemeter reconcile` does; nothing to do here
        run = build(threads, reads_per_second)
        profiler = _py_spy(args.profile) if args.profile and "no rate limit" in name else None
        try:
            result = _timed(name, run, tenant, gateway, url, emulator_pid, threads, repair)
        finally:
            if profiler is not None:
                profiler.send_signal(signal.SIGINT)
                profiler.wait(timeout=120)
        lines = result.pop("_lines")
        result["reads_per_second"] = reads_per_second
        limit = args.rate_limit if "no rate limit" not in name else 0
        result["rate_limit_per_s"] = limit
        result["floor_s"] = (
            round((result["summary_calls"] + result["sends"]) / limit, 1) if limit else 0
        )
        result["wall_over_floor"] = (
            round(result["wall_s"] / result["floor_s"], 2) if limit else None
        )
        result["problems"] = _check(lines, want)
        result["unread_lines"] = sum(1 for line in lines if line.stripe is None)
        result["passed"] = not result["problems"]
        # Unpaced under a rate limit is the comparison: what it could not read is the finding.
        result["counts_toward_pass"] = bool(reads_per_second) or "no rate limit" in name
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
    if args.unpaced and args.reads_per_second:
        timed("steady, unpaced", args.threads, False, ok_everywhere, reads_per_second=0)
    if args.unlimited:
        # What the reconciler does when Stripe does not hold it back: its own ceiling here.
        _set_rate_limit(url, 0)
        timed("steady, no rate limit", args.threads, False, ok_everywhere, reads_per_second=0)

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
        "reads_per_second": args.reads_per_second,
        "sdk_max_network_retries": settings.stripe.max_network_retries,
        "summary_lag_s": args.summary_lag,
        "loadavg_at_start": loadavg_start,
        "setup_s": round(world.seconds, 1),
        "planted": dict(Counter(planted.values())),
        "found": detect["causes"],
        "runs": runs,
        "passed": all(r["passed"] for r in runs if r["counts_toward_pass"]),
    }
    print(_table(result), file=sys.stderr)
    return result


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
    events_before, limited_before = emulator_counts(url)
    emulator_cpu = cpu_seconds(emulator_pid)
    procs_before = process_cpu()
    own = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    reports = run(Scope(tenant), repair=repair, actor="benchmark", trigger="benchmark")
    wall = time.perf_counter() - started
    own_after = resource.getrusage(resource.RUSAGE_SELF)
    procs_after = process_cpu()
    emulator_cpu = cpu_seconds(emulator_pid) - emulator_cpu
    events_after, limited_after = emulator_counts(url)

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
        f" {r['unread_lines']} lines unread,"
        f" {statuses}; {'PASSED' if r['passed'] else 'FAILED ' + str(r['problems'][:3])}"
    )


def _verdict(r: dict[str, Any]) -> str:
    if r["passed"]:
        return "passed"
    return "FAILED" if r["counts_toward_pass"] else "differs (comparison only)"


def _table(result: dict[str, Any]) -> str:
    rows = [
        "| run | threads | pace reads/s | repair | wall s | floor s | wall / floor"
        " | summary reads | pushes | 429s | lines unread | reads/s in the Stripe phase"
        " | call p50 / p95 / max ms | lines per status | check |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for r in result["runs"]:
        statuses = ", ".join(f"{k} {v:,}" for k, v in sorted(r["statuses"].items()))
        rows.append(
            f"| {r['run']} | {r['threads']} | {r['reads_per_second'] or 'unpaced'}"
            f" | {'yes' if r['repair'] else 'no'}"
            f" | {r['wall_s']:.1f} | {r['floor_s'] or '—'} | {r['wall_over_floor'] or '—'}"
            f" | {r['summary_calls']:,} | {r['sends']:,} | {r['stripe_429s']:,}"
            f" | {r['unread_lines']:,}"
            f" | {r['calls_per_s']:.1f}"
            f" | {r['call_ms_p50']} / {r['call_ms_p95']} / {r['call_ms_max']}"
            f" | {statuses} | {_verdict(r)} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
