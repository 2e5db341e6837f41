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

The floor, measured in the same run before each rebuild: a process of its own
reads the whole event log (every entry, every column) with psycopg or sqlite3
alone, a page of ``--batch-size`` rows at a time, and does nothing with it.
The report gives the rebuild's time as a multiple of the floor's.

Before and after in one pass: ``--before DIR`` names a checkout of the code to
compare with (``git worktree add /tmp/before main``); each of ``--rounds``
rounds runs the floor, then this code's rebuild, then the one in DIR, on the
same log. The last swap is then DIR's, and the dry run (this code's) compares
its own rebuild with those views.
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

from benchmarks.databases import fresh_database
from benchmarks.processes import BIN, ROOT
from benchmarks.report import emit, log, machine

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
    parser.add_argument("--before", type=Path, help="a checkout of the code to compare with")
    parser.add_argument("--rounds", type=int, default=1, help="floor, after, before: N times")
    parser.add_argument("--floor", help=argparse.SUPPRESS)  # the child: read the log, report
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # the child: rebuild, report
    args = parser.parse_args(argv)
    if args.measure:
        return _measure(json.loads(args.measure))
    if args.floor:
        return _read_log(json.loads(args.floor))

    with fresh_database(args.backend) as db_env:
        for name in [k for k in os.environ if k.startswith("STRIPEMETER_")]:
            del os.environ[name]
        os.environ.update(db_env)
        written_s, table = _write(args)
        extra = [] if args.batch_size is None else ["--batch-size", str(args.batch_size)]
        runs: list[dict[str, Any]] = []
        for n in range(args.rounds):
            floor = _floor(args, table)
            runs.append({"round": n, "code": "floor", "load": _load()} | floor)
            for code, checkout in [("after", ROOT), ("before", args.before)]:
                if checkout is None:
                    continue
                load = _load()
                found = _child(extra, checkout.resolve())
                runs.append(
                    {"round": n, "code": code, "load": load}
                    | _summarize(found, args.events)
                    | {"floor_s": floor["seconds"]}
                )
        dry = None if args.no_dry_run else _child(["--dry-run", *extra], ROOT)

    report: dict[str, Any] = {
        "benchmark": "rebuild",
        "backend": args.backend,
        "machine": machine(),
        "usage_events": args.events,
        "customers": args.customers,
        "metrics": args.metrics,
        "write_events_per_s": round(args.events / written_s, 1),
        "rebuild": _last(runs, "after"),
        "dry_run": None if dry is None else _summarize(dry, args.events),
        "runs": runs,
    }
    passed = all(r.get("exit", 0) == 0 for r in runs) and (dry is None or dry["code"] == 0)
    report["passed"] = passed
    r = report["rebuild"]  # this code's last
    log(
        f"rebuild on {args.backend}: {r['log_entries']:,} log entries ({args.events:,} usage"
        f" events) in {r['seconds']} s: {r['log_entries_per_s']:,} entries/s,"
        f" {r['usage_events_per_s']:,} usage events/s; RSS {r['rss_mib_at']} MiB at 10/50/100 %,"
        f" peak {r['peak_rss_mib']} MiB"
    )
    for run in runs:
        if run["code"] == "floor":
            log(
                f"round {run['round']} floor: {run['rows']:,} log entries read in"
                f" {run['seconds']} s ({run['rows_per_s']:,}/s), peak {run['peak_rss_mib']} MiB,"
                f" load {run['load']}"
            )
        else:
            log(
                f"round {run['round']} {run['code']}: {run['seconds']} s,"
                f" {run['usage_events_per_s']:,} usage events/s,"
                f" {run['seconds'] / run['floor_s']:.1f}x the floor,"
                f" peak {run['peak_rss_mib']} MiB, cpu {run['cpu_s']} s, load {run['load']}"
            )
    if dry is not None:
        d = report["dry_run"]
        log(
            f"dry run: {d['seconds']} s, compare {d['compare_s']} s,"
            f" differences {d['summary'].get('differences')} (exit {dry['code']})"
        )
    emit(report)
    return 0 if passed else 1


def _last(runs: list[dict[str, Any]], code: str) -> dict[str, Any]:
    return [r for r in runs if r["code"] == code][-1]


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _floor(args: argparse.Namespace, table: str) -> dict[str, Any]:
    """Read the whole log with the database driver alone, in a process of its own."""
    out = Path(f"/tmp/smbench_floor_{os.getpid()}_{uuid.uuid4().hex[:6]}.json")
    spec = {"table": table, "out": str(out), "page": args.batch_size or 50_000}
    log("+ floor: the whole log read with the driver alone")
    subprocess.run(
        [sys.executable, "-m", "benchmarks.rebuild", "--floor", json.dumps(spec)],
        cwd=ROOT,
        env=os.environ,
        check=True,
    )
    try:
        found: dict[str, Any] = json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)
    return found


def _read_log(spec: dict[str, Any]) -> int:
    """In the child: every entry, every column, a page at a time, nothing done with it."""
    columns = "originator_id, originator_version, topic, state"
    rows = size = 0
    t0 = time.monotonic()
    cpu0 = time.process_time()
    if url := os.environ.get("STRIPEMETER_DATABASE_URL"):
        import psycopg

        with psycopg.connect(url) as conn, conn.cursor("floor", binary=True) as cur:
            cur.itersize = spec["page"]
            cur.execute(
                f"SELECT notification_id, {columns} FROM {spec['table']} ORDER BY notification_id"
            )
            while page := cur.fetchmany(spec["page"]):
                rows += len(page)
                size += sum(len(r[4]) for r in page)
    else:
        import sqlite3

        path = Path(os.environ["STRIPEMETER_DATA_DIR"]) / "events.sqlite3"
        with sqlite3.connect(path) as conn:
            cur = conn.execute(f"SELECT rowid, {columns} FROM {spec['table']} ORDER BY rowid")
            while page := cur.fetchmany(spec["page"]):
                rows += len(page)
                size += sum(len(r[4]) for r in page)
        conn.close()
    seconds = time.monotonic() - t0
    Path(spec["out"]).write_text(
        json.dumps(
            {
                "rows": rows,
                "state_mib": round(size / 2**20, 1),
                "seconds": round(seconds, 2),
                "cpu_s": round(time.process_time() - cpu0, 2),
                "rows_per_s": round(rows / seconds),
                "peak_rss_mib": round(_status("VmHWM") / 1024, 1),
            }
        )
    )
    return 0


def _write(args: argparse.Namespace) -> tuple[float, str]:
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
        return written, stores.app.recorder.events_table_name  # type: ignore[attr-defined]
    finally:
        stores.close()


def _child(extra: list[str], checkout: Path) -> dict[str, Any]:
    """Run the measured rebuild of ``checkout``'s code in a process of its own."""
    out = Path(f"/tmp/smbench_rebuild_{os.getpid()}_{uuid.uuid4().hex[:6]}.json")
    spec = json.dumps({"args": ["projections", "rebuild", *extra], "out": str(out)})
    log(f"+ stripemeter projections rebuild {' '.join(extra)} (code of {checkout})")
    code = subprocess.run(
        [str(BIN / "python"), "-m", "benchmarks.rebuild", "--measure", spec],
        cwd=checkout,
        env=os.environ | {"PYTHONPATH": str(checkout)},
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
