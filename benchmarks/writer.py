"""The write path alone: ``UsageRecorder.record_usage`` on 1,000-event batches, in this process.

    .venv/bin/python -m benchmarks.writer --backend postgres [--profile]

No HTTP, no projection thread, no other thread competing for the GIL: the
ceiling of the group-commit writer (a single thread) on this machine. With
``--profile``, cProfile's top functions by cumulative time are printed too.
Afterwards the same rows are written again by the database alone
(benchmarks/copy_floor.py: COPY on PostgreSQL, executemany on SQLite), in
batches of the same size, and the writer's rate is reported as a ratio to it.
Runs on a fresh database (dropped afterwards).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal

from benchmarks.copy_floor import copy_floor
from benchmarks.databases import fresh_database
from benchmarks.report import emit, log, machine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--customers", type=int, default=10)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)

    with fresh_database(args.backend) as db_env:
        for name in [k for k in os.environ if k.startswith("STRIPEMETER_")]:
            del os.environ[name]
        os.environ.update(db_env)
        from adapters.persistence import open_stores
        from adapters.settings import Settings
        from domain.idempotency import fingerprint
        from domain.ingest import UsageSubmission
        from domain.meters import MetricDefinition, parse_aggregation
        from domain.tenancy import tenant_id_for

        stores = open_stores(Settings.from_env())
        try:
            slug = f"bench-{uuid.uuid4().hex[:6]}"
            stores.app.register_tenant(slug, slug)
            tenant_id = tenant_id_for(slug)
            stores.app.declare_metric(
                tenant_id,
                MetricDefinition(
                    name="api_calls",
                    aggregation=parse_aggregation("sum"),
                    unit="unit",
                    lateness_seconds=35 * 86400,
                    stripe_event_name=None,
                    allow_negative=False,
                ),
            )
            now = datetime.now(UTC).replace(microsecond=0)

            def batch(number: int) -> list[UsageSubmission]:
                out = []
                for i in range(args.batch):
                    customer = f"cust-{i % args.customers}"
                    out.append(
                        UsageSubmission(
                            tenant_id=tenant_id,
                            metric="api_calls",
                            customer_ref=customer,
                            quantity=Decimal(1),
                            occurred_at=now,
                            idempotency_key=f"w-{number}-{i}",
                            fingerprint=fingerprint("api_calls", customer, Decimal(1), now, "{}"),
                            meta="{}",
                        )
                    )
                return out

            batches = [batch(n) for n in range(args.batches + 1)]
            stores.app.usage.record_usage(batches[0])  # warm-up: creates the periods
            profiler = cProfile.Profile() if args.profile else None
            cpu0, wall0 = time.process_time(), time.perf_counter()
            if profiler:
                profiler.enable()
            for submissions in batches[1:]:
                stores.app.usage.record_usage(submissions)
            if profiler:
                profiler.disable()
            wall = time.perf_counter() - wall0
            cpu = time.process_time() - cpu0
            events = args.batches * args.batch
            caught_started = time.perf_counter()
            stores.views.runner.catch_up()
            projection_s = time.perf_counter() - caught_started
        finally:
            stores.close()
        floor = copy_floor(db_env, events, args.batch)

    report = {
        "benchmark": "writer",
        "backend": args.backend,
        "machine": machine(),
        "events": events,
        "batch": args.batch,
        "events_per_s": round(events / wall, 1),
        "writer_cpu_fraction": round(cpu / wall, 2),
        "writer_cpu_us_per_event": round(cpu / events * 1e6, 1),
        "floor": floor,
        "ratio_to_floor": round(events / wall / floor["events_per_s"], 3),
        "ms_per_event": round(wall / events * 1000, 3),
        "projection_catch_up_events_per_s": round((events + args.batch) / projection_s, 1),
        "profiled": args.profile,
    }
    log(
        f"writer alone on {args.backend}: {report['events_per_s']} events/s"
        f" ({report['ms_per_event']} ms/event, CPU {report['writer_cpu_fraction']} of wall,"
        f" {report['writer_cpu_us_per_event']} µs CPU/event);"
        f" floor ({floor['how']}, same rows) {floor['events_per_s']} events/s,"
        f" ratio {report['ratio_to_floor']};"
        f" projection catch-up alone {report['projection_catch_up_events_per_s']} events/s"
        + (" (under cProfile: slower than real)" if args.profile else "")
    )
    if profiler:
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(35)
    emit(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
