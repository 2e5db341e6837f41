"""``stripemeter import`` of a generated history file against the embedded default.

    PYTHONPATH=$PWD .venv/bin/python -m benchmarks.import_history [--rows 1000000]
        [--format csv|jsonl] [--batch 1000] [--in-flight 1] [--backend sqlite|postgres]

Starts the embedded service (``stripemeter serve``: one API process and its
writer process, SQLite in a fresh directory; ``--backend postgres`` for a
fresh PostgreSQL database), writes ``--rows`` rows (100 customers, quantities
1 to 7, every third row with an ``idempotencyKey``, the others keyed by the
service from their content, each with its own ``ts`` in the last minutes),
and runs ``stripemeter import FILE`` as a subprocess. Reports rows/s from the
importer's start to its exit, the importer's peak RSS (``ru_maxrss`` from
``wait4``) and each service process's peak RSS (``VmHWM``), then reads the
counters back: the benchmark fails unless every row counted exactly once.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchmarks.processes import ROOT, peak_rss_mb
from benchmarks.report import emit, log, machine
from benchmarks.service import METRIC, service

CUSTOMERS = 100


def write_history(path: Path, rows: int, fmt: str) -> tuple[int, int]:
    """The file, and the (sum, count) it must add up to."""
    now = datetime.now(UTC) - timedelta(seconds=5)
    total = 0
    with path.open("w") as out:
        if fmt == "csv":
            out.write("customerRef,metric,quantity,ts,idempotencyKey,meta\n")
        for n in range(rows):
            quantity = n % 7 + 1
            total += quantity
            ts = (now - timedelta(microseconds=n * 500)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            key = f"h-{n}" if n % 3 == 0 else ""
            customer = f"cust-{n % CUSTOMERS}"
            if fmt == "csv":
                out.write(f"{customer},{METRIC},{quantity},{ts},{key},\n")
            else:
                event = {"customerRef": customer, "metric": METRIC, "quantity": quantity, "ts": ts}
                if key:
                    event["idempotencyKey"] = key
                out.write(json.dumps(event, separators=(",", ":")) + "\n")
    return total, rows


def run_import(url: str, key: str, path: Path, batch: int, in_flight: int) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRIPEMETER_")}
    env |= {
        "STRIPEMETER_API_URL": url,
        "STRIPEMETER_API_KEY": key,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p),
    }
    started = time.perf_counter()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "api.cli", "import", str(path)),
            *("--batch-size", str(batch), "--in-flight", str(in_flight)),
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    out = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    process.stdout.close()
    if process.returncode != 0:
        raise SystemExit(f"stripemeter import exited with {process.returncode}")
    summary = json.loads(out)
    return {
        "seconds": round(seconds, 1),
        "importer_seconds": summary["seconds"],
        "rows_per_second": round(summary["rowsRead"] / seconds),
        "importer_rows_per_second": summary["rowsPerSecond"],
        "accepted": summary["accepted"],
        "duplicates": summary["duplicates"],
        "rejected": summary["rejected"],
        "importer_peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "importer_cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--in-flight", type=int, default=1, help="the import's --in-flight")
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, service(args.backend) as svc:
        path = Path(folder) / f"history.{args.format}"
        expected = write_history(path, args.rows, args.format)
        log(f"{args.rows:,} rows written to {path} ({path.stat().st_size / 2**20:,.1f} MiB)")
        result = run_import(svc.url, svc.key, path, args.batch, args.in_flight)
        log(f"imported: {result}")
        service_rss = {
            f"{role}_peak_rss_mib": round(peak_rss_mb(pid), 1) for pid, role in svc.roles().items()
        }
        svc.wait_caught_up(timeout=1800)
        counted = svc.counted(CUSTOMERS)
    passed = counted == expected and result["accepted"] == args.rows
    log(
        f"import_history: {args.rows:,} rows in {result['seconds']} s ="
        f" {result['rows_per_second']:,} rows/s; importer peak RSS"
        f" {result['importer_peak_rss_mib']} MiB; service {service_rss};"
        f" counted {counted} of {expected}: {'PASSED' if passed else 'FAILED'}"
    )
    emit(
        {
            "benchmark": "import_history",
            "backend": args.backend,
            "format": args.format,
            "rows": args.rows,
            "batch": args.batch,
            "in_flight": args.in_flight,
            **result,
            **service_rss,
            "counted": counted,
            "expected": expected,
            "passed": passed,
            "machine": machine(),
        }
    )
    if not passed:
        sys.exit(1)


if __name__ == "__main__":
    main()
