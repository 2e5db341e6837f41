"""The throughput table of docs/benchmarks.md: each figure beside its floor, in one pass.

    .venv/bin/python -m benchmarks.table [--rounds 2] [--rebuild-events 1000000] [--only NAME]

Each row runs its benchmark and the floor it is compared with one after the
other (floor, figure, floor, figure ... for ``--rounds``), each on a fresh
database, so that a ratio is never taken between runs of different moments.
It prints the markdown table with the command of every row, and exits 1 if
any benchmark failed its own checks (an event lost or counted twice).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.report import log

PY = [sys.executable, "-m"]
SINGLE = ["--mode", "single", "--connections", "100", "--duration", "15", "--warmup", "5"]
BATCH = ["--mode", "batch", "--duration", "20", "--warmup", "3"]


@dataclass
class Row:
    """One line of the table: a figure, the floor it is measured against, and how to read both."""

    name: str
    figure: list[str]
    floor: list[str] | None
    read: Callable[[dict[str, Any]], float]  # the figure's number from its RESULT
    read_floor: Callable[[dict[str, Any]], float] | None
    unit: str
    goal: str
    detail: Callable[[dict[str, Any]], str] = lambda _r: ""
    figures: list[dict[str, Any]] = field(default_factory=list)
    floors: list[dict[str, Any]] = field(default_factory=list)


def rows(rebuild_events: int) -> list[Row]:
    def ingest_rps(r: dict[str, Any]) -> float:
        return float(r["requests_per_s"])

    def single_detail(r: dict[str, Any]) -> str:
        rss = r["cpu"].get("peak_rss_mb_by_role", {})
        api = f", API RSS {rss['api']:.0f} MiB" if "api" in rss else ""
        return f"p95 {r['latency_ms']['p95']} ms, {r['non_2xx']} non-2xx{api}"

    def floor_rps(r: dict[str, Any]) -> float:
        return float(r["requests_per_s"])

    def batch_events(r: dict[str, Any]) -> float:
        return float(r["events_per_s"])

    def late_s(r: dict[str, Any]) -> float:
        return float(r["catch_up_after_ack_s"]["median"])

    def late_detail(r: dict[str, Any]) -> str:
        return f"max {r['catch_up_after_ack_s']['max']} s"

    def batch_detail(r: dict[str, Any]) -> str:
        writer = r["cpu"]["server_cores_by_role"].get("writer", 0.0)
        return f"writer {writer} cores, {r['non_2xx']} non-2xx"

    def rebuild_rate(r: dict[str, Any]) -> float:
        return float(r["rebuild"]["usage_events_per_s"])

    def rebuild_detail(r: dict[str, Any]) -> str:
        return f"peak RSS {r['rebuild']['peak_rss_mib']} MiB"

    def copy_floor(r: dict[str, Any]) -> float:
        return float(r["floor"]["events_per_s"])

    def read_floor(r: dict[str, Any]) -> float:
        # The whole log read by the driver alone, before the rebuild, in the same run.
        return float(r["usage_events"]) / float(r["rebuild"]["floor_s"])

    ingest = [*PY, "benchmarks.ingest"]
    where = {"postgres": "production", "sqlite": "embedded"}

    def single(backend: str, label: str) -> Row:
        at = ["--backend", backend, "--topology", where[backend]]
        return Row(
            f"single events, 100 conns, {label}",
            [*ingest, *at, *SINGLE],
            [*PY, "benchmarks.http_floor", "--duration", "15", *at],
            ingest_rps,
            floor_rps,
            "req/s",
            ">= 50 % of the floor, p95 <= 25 ms",
            single_detail,
        )

    def batches(backend: str, label: str, goal: int) -> Row:
        return Row(
            f"1,000-event batches, {label}",
            [*ingest, "--backend", backend, "--topology", where[backend], *BATCH],
            None,  # the run writes its own rows again as its floor (benchmarks/copy_floor.py)
            batch_events,
            copy_floor,
            "events/s",
            f">= {goal:,} events/s",
            batch_detail,
        )

    def late(backend: str, label: str) -> Row:
        command = [*PY, "benchmarks.late", "--backend", backend, "--topology", where[backend]]
        return Row(
            f"10,000 late events until counted, {label}",
            command,
            None,
            late_s,
            None,
            "s (median)",
            "<= 0.2 s",
            late_detail,
        )

    result = [
        single("postgres", "production (PostgreSQL)"),
        single("sqlite", "embedded default (SQLite)"),
        batches("postgres", "PostgreSQL", 25_000),
        batches("sqlite", "SQLite", 10_000),
        late("postgres", "PostgreSQL"),
        late("sqlite", "SQLite"),
    ]
    for backend in ("postgres", "sqlite"):
        rebuild = [*PY, "benchmarks.rebuild", "--backend", backend, "--no-dry-run"]
        result.append(
            Row(
                f"rebuild, {rebuild_events:,} usage events, {backend}",
                [*rebuild, "--events", str(rebuild_events)],
                None,
                rebuild_rate,
                read_floor,
                "usage events/s",
                ">= 50,000 usage events/s, flat memory",
                rebuild_detail,
            )
        )
    return result


def run(command: list[str]) -> dict[str, Any]:
    """Run one benchmark; its RESULT line, with ``passed`` false if it failed."""
    load = Path("/proc/loadavg").read_text().split()[0]
    log(f"load {load}: {' '.join(command[1:])}")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT ") :])
            result.setdefault("passed", done.returncode == 0)
            if done.returncode != 0:
                result["passed"] = False
            return result
    log(done.stderr[-2000:])
    raise RuntimeError(f"{' '.join(command)} printed no RESULT (exit {done.returncode})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rebuild-events", type=int, default=1_000_000)
    parser.add_argument("--only", action="append", help="rows whose name contains this")
    parser.add_argument(
        "--results",
        type=Path,
        default=Path(f"/tmp/stripemeter-table-{int(time.time())}.jsonl"),
        help="every RESULT, as it comes (the table can be printed again from it)",
    )
    parser.add_argument(
        "--from", dest="source", type=Path, help="print the table of a results file"
    )
    args = parser.parse_args(argv)
    chosen = [
        row
        for row in rows(args.rebuild_events)
        if not args.only or any(word in row.name for word in args.only)
    ]
    if args.source is not None:
        for line in args.source.read_text().splitlines():
            entry = json.loads(line)
            row = next(r for r in chosen if r.name == entry["row"])
            (row.floors if entry["floor"] else row.figures).append(entry["result"])
    else:
        log(f"results go to {args.results}")
        for row in chosen:
            # A rebuild is long: one round. Rows without a floor command carry it in their RESULT.
            for _ in range(1 if "rebuild" in row.name else args.rounds):
                for command, kept, is_floor in (
                    (row.floor, row.floors, True),
                    (row.figure, row.figures, False),
                ):
                    if command is None:
                        continue
                    kept.append(run(command))
                    with args.results.open("a") as out:
                        out.write(
                            json.dumps({"row": row.name, "floor": is_floor, "result": kept[-1]})
                            + "\n"
                        )
    results = [r for row in chosen for r in row.figures + row.floors]
    print(markdown([row for row in chosen if row.figures], [r["machine"] for r in results]))
    return 0 if all(r.get("passed", True) for r in results) else 1


def markdown(chosen: list[Row], machines: list[dict[str, Any]]) -> str:
    where = machines[-1]
    commits = sorted({m["commit"] for m in machines})
    dates = sorted(m["date"] for m in machines)
    lines = [
        f"Machine: {where['nproc']} cores ({where['cpu']}), {where['mem_gib']} GiB,"
        f" Python {where['python']}; commit {', '.join(f'`{c}`' for c in commits)};"
        f" {dates[0]} to {dates[-1]}; load average at the runs' ends"
        f" {min(float(m['loadavg'][0]) for m in machines):.1f}–"
        f"{max(float(m['loadavg'][0]) for m in machines):.1f}.",
        "",
        "| figure | measured | floor, same run | ratio | goal | also |",
        "|---|---:|---:|---:|---|---|",
    ]
    for row in chosen:
        values = [row.read(r) for r in row.figures]
        floors = [row.read_floor(r) for r in (row.floors or row.figures)] if row.read_floor else []
        ratios = [v / f for v, f in zip(values, floors, strict=False) if f]
        lines.append(
            f"| {row.name} | {_span(values)} {row.unit} | {_span(floors) if floors else '—'} |"
            f" {_span([100 * r for r in ratios], '%') if ratios else '—'} | {row.goal} |"
            f" {'; '.join(filter(None, (row.detail(r) for r in row.figures)))}"
            f"{'' if all(r.get('passed', True) for r in row.figures) else ' **FAILED**'} |"
        )
    lines += ["", "Commands, in the order they ran:", "", "```bash"]
    for row in chosen:
        for command in filter(None, (row.floor, row.figure)):
            lines.append(" ".join(["python", *command[1:]]))
    lines.append("```")
    return "\n".join(lines)


def _span(values: list[float], unit: str = "") -> str:
    if not values:
        return "—"
    low, high = min(values), max(values)
    digits = 0 if high >= 100 else 2 if high >= 1 else 3
    if len(values) == 1 or round(low, digits) == round(high, digits):
        return f"{statistics.mean(values):,.{digits}f}{unit}"
    return f"{low:,.{digits}f}–{high:,.{digits}f}{unit}"


if __name__ == "__main__":
    sys.exit(main())
