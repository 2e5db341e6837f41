"""Events per second that one Python process sends through the SDK's sync batcher.

    .venv/bin/python -m benchmarks.sdk_batcher [--batch 500] [--senders 1] [--backend sqlite]

Starts the embedded service (``stripemeter serve``: the API process and its
writer process, SQLite in a fresh directory; ``--backend postgres`` for a
fresh PostgreSQL database), then, in this one process, calls
``batcher.track(...)`` ``--events`` times as fast as it can (each event keyed
and timestamped on the client, no explicit key: the server derives the same
content key) and ``flush()``. The rate is events over the time from the first
``track`` to the end of ``flush()``: every event answered, committed by the
service. The counter is then read back to check each event counted once.
"""

from __future__ import annotations

import argparse
import time

from benchmarks.report import emit, log, machine
from benchmarks.service import METRIC, service
from stripemeter import RetryPolicy, StripeMeterClient


def run(svc_url: str, key: str, events: int, batch: int, senders: int) -> dict[str, float | int]:
    with StripeMeterClient(key, base_url=svc_url, retry=RetryPolicy(max_attempts=3)) as client:
        # A warm-up batch: connections, the tenant's caches, the customer's aggregate.
        with client.batcher() as warm:
            for _ in range(batch):
                warm.track(METRIC, "cus_warm", 1)
        batcher = client.batcher(max_batch_size=batch, flush_interval=0.05, senders=senders)
        cpu = time.process_time()
        started = time.perf_counter()
        for i in range(events):
            batcher.track(METRIC, f"cus_{i % 100}", 1)
        enqueued = time.perf_counter() - started
        batcher.flush()
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
        batcher.close()
        stats = batcher.stats
    return {
        "events": events,
        "batch": batch,
        "senders": senders,
        "seconds": round(elapsed, 3),
        "events_per_second": round(events / elapsed),
        "enqueue_seconds": round(enqueued, 3),
        "client_cpu_seconds": round(cpu, 3),
        "accepted": stats.accepted,
        "duplicates": stats.duplicates,
        "not_counted": stats.conflicts + stats.errors + stats.failed_requests,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500, help="the batcher's max_batch_size")
    parser.add_argument("--senders", type=int, default=1, help="the batcher's sending threads")
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args()
    with service(args.backend) as svc:
        result = run(svc.url, svc.key, args.events, args.batch, args.senders)
        svc.wait_caught_up()
        counted = sum(
            int(c["count"])
            for i in range(100)
            for c in svc.client.get("/v1/usage/current", params={"customerRef": f"cus_{i}"}).json()[
                "counters"
            ]
        )
    result["counted"] = counted
    log(
        f"sdk batcher: {result['events']} events in {result['seconds']} s ="
        f" {result['events_per_second']} events/s (batch {args.batch}, senders {args.senders},"
        f" {args.backend});"
        f" counted {counted}"
    )
    emit({"benchmark": "sdk_batcher", "backend": args.backend, **result, "machine": machine()})


if __name__ == "__main__":
    main()
