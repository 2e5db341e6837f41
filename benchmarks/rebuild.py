"""A full projection rebuild: events/s and memory, over a log of N usage events.

    .venv/bin/python -m benchmarks.rebuild --events 1000000 [--backend postgres|sqlite]

On a fresh database, writes N usage events with ``UsageRecorder.record_usage`` in
1,000-event batches, as ``benchmarks.writer`` does (``--customers`` ×
``--metrics``, customers at random, quantities 1–5, timestamps advancing over
the last ``--hours`` (24) in log order, as a live log's are). Then, each in a process
of its own so that its memory is its own, as an operator would run them:

1. ``stripemeter projections rebuild`` (empty live views, so this is the
   whole log into the shadow, then the swap) — timed, its memory sampled;
2. ``stripemeter projections rebuild --dry-run`` — rebuilds again and
   compares with the views of step 1: it must find them identical.

Memory is the child's resident set (VmRSS) at every batch and its high-water
mark (VmHWM) at the end; the report shows it at 10 %, 50 % and 100 % of the
log. Events per second are log entries per second (the unit of the progress
bar: a usage event is two entries, its ``UsageRecorded`` and its key's
``Claimed``, which no projection reads) and usage events per second.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from benchmarks.harness import BIN, ROOT, emit, fresh_database, log, machine

METRICS = [("api_calls", "sum"), ("storage_gb", "max"), ("requests", "count")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=1_000)
    parser.add_argument("--metrics", type=int, default=3, choices=range(1, len(METRICS) + 1))
    parser.add_argument("--hours", type=float, default=24.0, help="the span of the timestamps")
    parser.add_argument("--batch-size", type=int, default=None, help="the rebuild's (default: its)")
    parser.add_argument("--no-dry-run", action="store_true", help="skip step 2")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # the child: rebuild, report
    args = parser.parse_args(argv)
    if args.measure:
        return _measure(json.loads(args.measure))

    with fresh_database(args.backend) as db_env:
        for name in [k for k in os.environ if k.startswith("STRIPEMETER_")]:
            del os.environ[name]
        os.environ.update(db_env)
        written_s = _write(args)
        extra = [] if args.batch_size is None else ["--batch-size", str(args.batch_size)]
        rebuild = _child(extra)
        dry = None if args.no_dry_run else _child(["--dry-run", *extra])

    report: dict[str, Any] = {
        "benchmark": "rebuild",
        "backend": args.backend,
        "machine": machine(),
        "usage_events": args.events,
        "customers": args.customers,
        "metrics": args.metrics,
        "write_events_per_s": round(args.events / written_s, 1),
        "rebuild": _summarize(rebuild, args.events),
        "dry_run": None if dry is None else _summarize(dry, args.events),
    }
    passed = rebuild["code"] == 0 and (dry is None or dry["code"] == 0)
    report["passed"] = passed
    r = report["rebuild"]
    log(
        f"rebuild on {args.backend}: {r['log_entries']:,} log entries ({args.events:,} usage"
        f" events) in {r['seconds']} s: {r['log_entries_per_s']:,} entries/s,"
        f" {r['usage_events_per_s']:,} usage events/s; RSS {r['rss_mib_at']} MiB at 10/50/100 %,"
        f" peak {r['peak_rss_mib']} MiB"
    )
    if dry is not None:
        d = report["dry_run"]
        log(
            f"dry run: {d['seconds']} s, compare {d['compare_s']} s,"
            f" differences {d['summary'].get('differences')} (exit {dry['code']})"
        )
    emit(report)
    return 0 if passed else 1


def _write(args: argparse.Namespace) -> float:
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
        tenant = tenant_id_for(slug)
        metrics = METRICS[: args.metrics]
        for name, aggregation in metrics:
            stores.app.declare_metric(
                tenant,
                MetricDefinition(
                    name=name,
                    aggregation=parse_aggregation(aggregation),
                    lateness_seconds=35 * 86400,
                ),
            )
        rng = random.Random(7)
        end = datetime.now(UTC).replace(microsecond=0)
        start = end - timedelta(hours=args.hours)
        step = (end - start) / args.events
        started = time.perf_counter()
        for first in range(0, args.events, 1_000):
            batch = []
            for n in range(first, min(first + 1_000, args.events)):
                customer = f"c{rng.randrange(args.customers)}"
                metric = metrics[rng.randrange(len(metrics))][0]
                quantity = Decimal(rng.randint(1, 5))
                at = start + step * n
                batch.append(
                    UsageSubmission(
                        tenant, metric, customer, quantity, at, f"e{n}",
                        fingerprint(metric, customer, quantity, at, "{}"), "{}",
                    )
                )  # fmt: skip
            stores.app.usage.record_usage(batch)
            if (first + 1_000) % 100_000 == 0:
                log(f"{first + 1_000:,} events written, {time.perf_counter() - started:.0f} s")
        written = time.perf_counter() - started
        log(f"wrote {args.events:,} usage events in {written:.1f} s")
        return written
    finally:
        stores.close()


def _child(extra: list[str]) -> dict[str, Any]:
    """Run the measured rebuild in a process of its own; what it reported."""
    out = Path(f"/tmp/smbench_rebuild_{os.getpid()}_{uuid.uuid4().hex[:6]}.json")
    spec = json.dumps({"args": ["projections", "rebuild", *extra], "out": str(out)})
    log(f"+ stripemeter projections rebuild {' '.join(extra)}")
    code = subprocess.run(
        [str(BIN / "python"), "-m", "benchmarks.rebuild", "--measure", spec],
        cwd=ROOT,
        env=os.environ,
        check=False,
    ).returncode
    try:
        found: dict[str, Any] = json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)
    found["code"] = code
    return found


def _measure(spec: dict[str, Any]) -> int:
    """In the child: the CLI's own command, with the progress callback wrapped to sample."""
    import contextlib
    import io

    import api.cli_projections as command
    from api import cli
    from projections.rebuild import Progress

    samples: list[dict[str, Any]] = []
    phases: dict[str, float] = {}
    bar_update = command.ProgressBar.update

    def sampled(self: Any, progress: Progress) -> None:
        samples.append(
            {
                "at_s": round(time.monotonic() - t0, 3),
                "done": progress.done,
                "total": progress.total,
                "rss_kib": _status("VmRSS"),
            }
        )
        if progress.done >= progress.total and "followed_s" not in phases:
            phases["followed_s"] = time.monotonic() - t0
        bar_update(self, progress)

    command.ProgressBar.update = sampled  # type: ignore[method-assign]
    stdout = io.StringIO()
    t0 = time.monotonic()
    cpu0 = time.process_time()
    with contextlib.redirect_stdout(stdout):
        code = cli.main(spec["args"])
    wall = time.monotonic() - t0
    Path(spec["out"]).write_text(
        json.dumps(
            {
                "exit": code,
                "wall_s": wall,
                "cpu_s": time.process_time() - cpu0,
                "followed_s": phases.get("followed_s"),
                "peak_rss_kib": _status("VmHWM"),
                "samples": samples,
                "summary": json.loads(stdout.getvalue() or "{}"),
            }
        )
    )
    return code


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _summarize(found: dict[str, Any], usage_events: int) -> dict[str, Any]:
    summary = found["summary"]
    samples = found["samples"]
    seconds = summary.get("seconds") or found["wall_s"]
    entries = summary.get("events", 0)

    def rss_at(share: float) -> float | None:
        # The first full pass (the bulk of the log), not the later short ones.
        total = max((s["total"] for s in samples), default=0)
        for sample in samples:
            if sample["total"] == total and sample["done"] >= share * total:
                return round(sample["rss_kib"] / 1024, 1)
        return None

    return {
        "exit": found["code"],
        "seconds": round(seconds, 2),
        "wall_s_with_start": round(found["wall_s"], 2),
        "cpu_s": round(found["cpu_s"], 1),
        "following_log_s": None if found["followed_s"] is None else round(found["followed_s"], 2),
        "compare_s": None
        if found["followed_s"] is None
        else round(found["wall_s"] - found["followed_s"], 2),
        "log_entries": entries,
        "log_entries_per_s": round(entries / seconds) if seconds else None,
        "usage_events_per_s": round(usage_events / seconds) if seconds else None,
        "rss_mib_at": [rss_at(0.1), rss_at(0.5), rss_at(1.0)],
        "peak_rss_mib": round(found["peak_rss_kib"] / 1024, 1),
        "batches": len(samples),
        "summary": {k: v for k, v in summary.items() if k != "tables"}
        | {
            "tables": [
                {k: v for k, v in t.items() if k != "samples"} for t in summary.get("tables", [])
            ]
        },
    }


if __name__ == "__main__":
    sys.exit(main())
