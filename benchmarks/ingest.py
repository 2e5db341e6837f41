"""Ingest throughput and latency under wrk, with the projection lag sampled throughout.

    .venv/bin/python -m benchmarks.ingest --backend postgres --mode single
    .venv/bin/python -m benchmarks.ingest --backend sqlite --mode batch

``single``: one event per request, 100 connections, 30 s (benchmarks 1 and 4).
``batch``: 1,000 events per request, 4 connections, 20 s (benchmarks 2 and 4).

The service is started on a fresh database; wrk runs as a separate process on
the same machine; after the load, once the projections have caught up, the
counters must hold exactly the events the server accepted, and at least every
event of a 2xx response: otherwise the run is reported as FAILED (exit 1).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from benchmarks import profile_top
from benchmarks.copy_floor import copy_floor
from benchmarks.load import run_wrk
from benchmarks.probes import LagSampler, commit_stats, outcomes
from benchmarks.report import emit, log, machine
from benchmarks.service import TOPOLOGIES, add_set_option, service, service_settings

MODES = {
    "single": {"connections": 100, "duration": 30, "batch": 1},
    "batch": {"connections": 4, "duration": 20, "batch": 1000},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--topology", choices=TOPOLOGIES, default="embedded")
    parser.add_argument("--mode", choices=sorted(MODES), default="single")
    parser.add_argument("--connections", type=int)
    parser.add_argument("--duration", type=int, help="seconds of measured load")
    parser.add_argument("--batch", type=int, help="events per request")
    parser.add_argument("--customers", type=int, default=10, help="distinct customerRefs")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of unmeasured load first")
    parser.add_argument(
        "--profile",
        type=Path,
        help="cProfile serve's processes over the measured load into this directory"
        " (rank it with benchmarks.profile_top; slower than an unprofiled run)",
    )
    parser.add_argument(
        "--profile-clock",
        choices=["wall", "cpu"],
        default="wall",
        help="cProfile's clock: wall (default) or each thread's CPU time",
    )
    add_set_option(parser)
    args = parser.parse_args(argv)
    preset = MODES[args.mode]
    connections = args.connections or preset["connections"]
    duration = args.duration or preset["duration"]
    batch = args.batch or preset["batch"]
    wrk_env = {
        "BENCH_BATCH": str(batch),
        "BENCH_CUSTOMERS": str(args.customers),
        "BENCH_PARSE": "1" if batch > 1 else "0",
    }

    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        os.environ["BENCH_CPROFILE_CLOCK"] = args.profile_clock  # service() passes it on
    profile_dir = str(args.profile.resolve()) if args.profile else None
    with service(
        args.backend,
        topology=args.topology,
        profile_dir=profile_dir,
        settings=service_settings(args.set),
    ) as svc:
        warmup_ok_events = 0
        if args.warmup:
            warm = run_wrk(
                svc,
                "ingest.lua",
                connections=connections,
                duration_s=args.warmup,
                threads=args.threads,
                extra_env=wrk_env,
            )
            warmup_ok_events = warm.ok * batch
        metrics_before = svc.quiesce()
        transactions_before = svc.event_store_transactions()

        profiled = {p: r for p, r in svc.roles().items() if r in ("api", "writer")}
        if args.profile:
            profile_top.begin(list(profiled))
        with LagSampler(svc, interval=0.1) as sampler:
            result = run_wrk(
                svc,
                "ingest.lua",
                connections=connections,
                duration_s=duration,
                threads=args.threads,
                extra_env=wrk_env,
            )
        if args.profile:
            profile_top.end(list(profiled), profiled, args.profile)
        catch_up_s = svc.wait_caught_up()
        metrics_after = svc.quiesce()
        transactions_after = svc.event_store_transactions()
        counted, _ = svc.counted(args.customers)
        # Batches: the same rows written again by the database alone, for the ratio.
        floor = copy_floor(svc.env, result.ok * batch, batch) if batch > 1 and result.ok else None

    # Whole-run accounting (warm-up included): wrk abandons the requests still
    # in flight when its time is up, so the server may have accepted up to
    # ``connections`` requests per wrk run more than wrk saw answered.
    before, after = outcomes(metrics_before), outcomes(metrics_after)
    server = {k: after.get(k, 0) - before.get(k, 0) for k in set(before) | set(after)}
    ok_events = result.ok * batch
    client_ok = warmup_ok_events + ok_events
    in_flight_max = connections * batch * (2 if args.warmup else 1)
    checks = {
        "counter == server accepted (whole run)": counted == after.get("accepted", 0),
        "counter >= events of 2xx responses": counted >= client_ok,
        "counter <= 2xx events + in-flight at stop": counted <= client_ok + in_flight_max,
        "no non-2xx": result.non_2xx == 0,
        "no socket errors": not any(result.socket_errors.values()),
        "no duplicate/conflict/error outcomes": not any(
            after.get(k, 0) for k in ("duplicate", "conflict", "error")
        ),
    }
    if result.accepted >= 0:
        checks["accepted in 2xx bodies == events sent in them"] = result.accepted == ok_events
    passed = all(checks.values())

    report: dict[str, Any] = {
        "benchmark": f"ingest-{args.mode}",
        "backend": args.backend,
        "topology": args.topology,
        "machine": machine(),
        "connections": connections,
        "duration_s": round(result.duration_s, 2),
        "events_per_request": batch,
        "customers": args.customers,
        "requests": result.requests,
        "requests_per_s": round(result.rps, 1),
        "events_per_s": round(result.ok * batch / result.duration_s, 1),
        "floor": floor,
        "ratio_to_floor": (
            round(result.ok * batch / result.duration_s / floor["events_per_s"], 3)
            if floor
            else None
        ),
        "non_2xx": result.non_2xx,
        "socket_errors": result.socket_errors,
        "latency_ms": {k: round(v, 2) for k, v in result.latency_ms.items()},
        "server_outcomes": server,
        "counter_total": counted,
        "server_accepted_total": after.get("accepted", 0),
        "ok_events_total": client_ok,
        "catch_up_after_load_s": round(catch_up_s, 3),
        "projection_lag_events": sampler.summary(),
        "group_commit": commit_stats(
            metrics_before, metrics_after, (transactions_before, transactions_after)
        ),
        "cpu": {
            "server_s": round(result.server_cpu_s, 1),
            "server_cores": round(result.server_cpu_s / result.duration_s, 2),
            "server_cores_by_role": {
                role: round(seconds / result.duration_s, 2)
                for role, seconds in result.server_cpu_by_role.items()
            },
            "wrk_s": round(result.wrk_cpu_s, 1),
            "machine_busy_pct": round(result.machine_busy * 100, 1),
            "peak_rss_mb_by_role": result.peak_rss_mb_by_role,
            "by_command_s": result.cpu_by_command,
        },
        "checks": checks,
        "passed": passed,
    }
    print_report(report)
    emit(report)
    return 0 if passed else 1


def print_report(r: dict[str, Any]) -> None:
    lat = r["latency_ms"]
    lag = r["projection_lag_events"]
    gc = r["group_commit"]
    cpu = r["cpu"]
    lines = [
        f"== {r['benchmark']} on {r['backend']} ({r['topology']}): {r['connections']} connections,"
        f" {r['events_per_request']} event(s)/request, {r['duration_s']} s ==",
        f"requests/s {r['requests_per_s']}   events/s {r['events_per_s']}"
        f"   requests {r['requests']}   non-2xx {r['non_2xx']}"
        f"   socket errors {r['socket_errors']}",
        *(
            [
                f"floor ({r['floor']['how']} of the same rows, same batches):"
                f" {r['floor']['events_per_s']} events/s; ratio {r['ratio_to_floor']}"
            ]
            if r["floor"]
            else []
        ),
        f"latency ms: p50 {lat['p50']}  p90 {lat['p90']}  p95 {lat['p95']}  p99 {lat['p99']}"
        f"  max {lat['max']}",
        f"group commit: {gc['commits']} commits, {gc['mean_events_per_commit']} events/commit"
        f" (request-weighted: {gc['request_weighted_events_per_commit']} events/commit,"
        f" {gc['request_weighted_commit_ms']} ms/commit)",
        f"projection lag (events, every 100 ms, {lag.get('samples')} samples):"
        f" p50 {lag.get('p50')}  p95 {lag.get('p95')}  max {lag.get('max')}"
        f"   caught up {r['catch_up_after_load_s']} s after the load",
        f"cpu: server {cpu['server_cores']} cores {cpu['server_cores_by_role']},"
        f" wrk {cpu['wrk_s']} s,"
        f" machine {cpu['machine_busy_pct']} % busy; CPU s by process {cpu['by_command_s']}",
        f"peak RSS (MiB, largest process of each role): {cpu['peak_rss_mb_by_role']}",
        f"measured run: server outcomes {r['server_outcomes']}. Whole run incl. warm-up:"
        f" counters {r['counter_total']}, server accepted {r['server_accepted_total']},"
        f" events in 2xx responses {r['ok_events_total']}",
    ]
    lines += [f"  check {'ok  ' if ok else 'FAIL'} {name}" for name, ok in r["checks"].items()]
    failed = "FAILED: the counters do not match the accepted events"
    lines.append("PASSED" if r["passed"] else failed)
    log("\n" + "\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
