"""Single-event ingest with a hard cap on every customer against without caps, alternating.

    .venv/bin/python -m benchmarks.caps --backend postgres --rounds 4 --duration 10
    .venv/bin/python -m benchmarks.caps --backend postgres --writer --rounds 10

One service on a fresh database. Each round runs wrk twice over the same
customers (``cust-0`` .. ``cust-N``): once with no caps, once with a hard cap
set on every one of them (``PUT /v1/caps/api_calls`` per customer, a limit
of 10^14 so that the writer decides every event against a cap and refuses
none). Between the two sides the caps are set or removed and the run waits
out the writer process's tenant cache (``TENANT_CACHE_SECONDS``). The ratio
is taken per round (capped over uncapped).

The usual checks hold (docs/benchmarks.md): the counters hold exactly the
events the server accepted, no non-2xx, no error outcome (a cap refusing an
event here would be a finding).

``--writer``: the writer alone, in this process (``record_usage`` on batches
of ``--batch`` events, the size of a group commit under 100 connections),
caps and no caps alternating, ``--batches`` per side and round; its CPU time
per event, which other work on the machine moves less than throughput.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from benchmarks.load import WrkResult, run_wrk
from benchmarks.probes import outcomes
from benchmarks.report import emit, log, machine
from benchmarks.service import METRIC, TOPOLOGIES, Service, service
from domain.application import TENANT_CACHE_SECONDS

LIMIT = "100000000000000"  # 10^14: never reached by a run


def set_caps(svc: Service, customers: int, on: bool) -> None:
    """Set (``on``) or remove a hard cap on every customer, unless already so."""
    if bool(svc.client.get("/v1/caps").json()["data"]) == on:
        return
    for n in range(customers):
        if on:
            body = {"customerRef": f"cust-{n}", "limit": LIMIT, "mode": "hard"}
            response = svc.client.put(f"/v1/caps/{METRIC}", json=body)
        else:
            response = svc.client.delete(f"/v1/caps/{METRIC}", params={"customerRef": f"cust-{n}"})
        response.raise_for_status()
    caps = svc.client.get("/v1/caps").json()["data"]
    assert len(caps) == (customers if on else 0), caps
    time.sleep(TENANT_CACHE_SECONDS + 0.5)  # the writer process reads the tenant again


def side(result: WrkResult) -> dict[str, Any]:
    by_role = result.server_cpu_by_role
    return {
        "requests_per_s": round(result.rps, 1),
        "latency_ms": {k: round(v, 2) for k, v in result.latency_ms.items()},
        "non_2xx": result.non_2xx,
        "writer_us_per_event": round(by_role.get("writer", 0.0) / max(result.ok, 1) * 1e6, 1),
        "api_us_per_request": round(by_role.get("api", 0.0) / max(result.ok, 1) * 1e6, 1),
        "machine_busy_pct": round(result.machine_busy * 100, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--topology", choices=TOPOLOGIES, default="embedded")
    parser.add_argument("--rounds", type=int, default=2, help="pairs (no caps, caps)")
    parser.add_argument("--duration", type=int, default=12, help="seconds per side")
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--customers", type=int, default=10, help="distinct customerRefs")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of unmeasured load first")
    parser.add_argument("--writer", action="store_true", help="the writer alone, in-process")
    parser.add_argument("--batch", type=int, default=32, help="--writer: events per batch")
    parser.add_argument("--batches", type=int, default=200, help="--writer: per side and round")
    args = parser.parse_args(argv)
    if args.writer:
        return writer_ab(args)
    wrk_env = {"BENCH_BATCH": "1", "BENCH_CUSTOMERS": str(args.customers), "BENCH_PARSE": "0"}

    def load(seconds: int) -> WrkResult:
        return run_wrk(
            svc, "ingest.lua", connections=args.connections, duration_s=seconds, extra_env=wrk_env
        )

    rounds: list[dict[str, Any]] = []
    with service(args.backend, topology=args.topology) as svc:
        if args.warmup:
            load(args.warmup)
        for number in range(args.rounds):
            # Alternate which side goes first, so that neither always runs on a warmer service.
            order = (False, True) if number % 2 == 0 else (True, False)
            sides: dict[str, Any] = {}
            for capped in order:
                set_caps(svc, args.customers, capped)
                log(f"round {number + 1}: {'hard caps' if capped else 'no caps'}")
                sides["caps" if capped else "none"] = side(load(args.duration))
            sides["ratio_rps"] = round(
                sides["caps"]["requests_per_s"] / sides["none"]["requests_per_s"], 3
            )
            rounds.append(sides)
        set_caps(svc, args.customers, False)
        svc.wait_caught_up()
        after = svc.quiesce()
        counted, _ = svc.counted(args.customers)

    server = outcomes(after)
    checks = {
        "counter == server accepted": counted == server.get("accepted", 0),
        "no non-2xx": all(r[s]["non_2xx"] == 0 for r in rounds for s in ("none", "caps")),
        "no error/duplicate/conflict outcomes": not any(
            server.get(k, 0) for k in ("error", "duplicate", "conflict")
        ),
    }
    report = {
        "benchmark": "ingest-single-caps-ab",
        "backend": args.backend,
        "topology": args.topology,
        "machine": machine(),
        "connections": args.connections,
        "customers": args.customers,
        "duration_s_per_side": args.duration,
        "rounds": rounds,
        "checks": checks,
        "passed": all(checks.values()),
    }
    for number, r in enumerate(rounds, 1):
        for name in ("none", "caps"):
            s = r[name]
            lat = s["latency_ms"]
            print(
                f"round {number} {name:>4}: {s['requests_per_s']:>8} req/s"
                f"  p50 {lat.get('p50')}  p95 {lat.get('p95')}  p99 {lat.get('p99')} ms"
                f"  writer {s['writer_us_per_event']} us/event  api {s['api_us_per_request']}"
                f" us/request  busy {s['machine_busy_pct']} %"
            )
        print(f"round {number} caps/none requests/s: {r['ratio_rps']}")
    print("PASSED" if report["passed"] else f"FAILED {checks}")
    emit(report)
    return 0 if report["passed"] else 1


def writer_ab(args: argparse.Namespace) -> int:
    """The writer alone: CPU per event with a hard cap on every customer and without."""
    import os
    from datetime import UTC, datetime
    from decimal import Decimal

    from benchmarks.databases import fresh_database

    with fresh_database(args.backend) as db_env:
        for name in [k for k in os.environ if k.startswith("STRIPEMETER_")]:
            del os.environ[name]
        os.environ.update(db_env)
        from adapters.persistence import open_stores
        from adapters.settings import Settings
        from domain.caps import Cap, CapMode
        from domain.idempotency import fingerprint
        from domain.ingest import UsageSubmission
        from domain.meters import Aggregation, MetricDefinition

        stores = open_stores(Settings.from_env())
        app = stores.app
        tenant = app.register_tenant("bench-caps", "bench").id
        app.declare_metric(tenant, MetricDefinition(METRIC, Aggregation.SUM))
        now = datetime.now(UTC).replace(microsecond=0)
        customers = [f"cust-{n}" for n in range(args.customers)]
        prints = {c: fingerprint(METRIC, c, Decimal(1), now, "{}") for c in customers}
        sequence = iter(range(10**12))

        def batch() -> list[UsageSubmission]:
            return [
                UsageSubmission(
                    tenant, METRIC, c, Decimal(1), now, f"w-{next(sequence)}", prints[c], "{}"
                )
                for c in (customers[i % len(customers)] for i in range(args.batch))
            ]

        def run(capped: bool) -> float:
            for c in customers:
                if capped:
                    app.set_cap(tenant, Cap(METRIC, c, Decimal(LIMIT), CapMode.HARD))
                elif app.cached_tenant(tenant).caps.find(METRIC, c) is not None:
                    app.remove_cap(tenant, METRIC, c)
            work = [batch() for _ in range(args.batches)]
            started = time.thread_time()
            for submissions in work:
                results = app.usage.record_usage(submissions)
                assert all(r.outcome.value == "accepted" for r in results)
            return (time.thread_time() - started) / (args.batches * args.batch) * 1e6

        try:
            app.usage.record_usage(batch())  # opens the periods
            rounds = []
            for number in range(args.rounds):
                order = (False, True) if number % 2 == 0 else (True, False)
                sides = {("caps" if capped else "none"): run(capped) for capped in order}
                rounds.append({k: round(v, 1) for k, v in sides.items()})
                log(f"round {number + 1}: {rounds[-1]} µs CPU/event")
        finally:
            stores.close()
    none = sorted(r["none"] for r in rounds)[len(rounds) // 2]
    caps = sorted(r["caps"] for r in rounds)[len(rounds) // 2]
    report = {
        "benchmark": "writer-caps-ab",
        "backend": args.backend,
        "machine": machine(),
        "batch": args.batch,
        "batches_per_side": args.batches,
        "customers": args.customers,
        "rounds_us_cpu_per_event": rounds,
        "median_us_cpu_per_event": {"none": none, "caps": caps},
        "ratio_caps_to_none": round(caps / none, 3),
    }
    print(
        f"writer CPU per event, median of {len(rounds)} rounds: no caps {none} µs,"
        f" hard caps {caps} µs, ratio {report['ratio_caps_to_none']}"
    )
    emit(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
