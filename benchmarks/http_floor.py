"""The HTTP stack alone: GET /health/live (no database, no writer) under the same wrk load.

    .venv/bin/python -m benchmarks.http_floor --backend sqlite

What uvicorn + Litestar + the timing middleware can answer per second on this
machine when the handler does nothing: the ceiling that no ingest design
inside this one process can exceed.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys

from benchmarks.report import emit, log, machine
from benchmarks.service import TOPOLOGIES, service


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["postgres", "sqlite"], default="sqlite")
    parser.add_argument("--topology", choices=TOPOLOGIES, default="embedded")
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--duration", type=int, default=15)
    args = parser.parse_args(argv)
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    with service(args.backend, topology=args.topology) as svc:
        command = [
            wrk,
            "-t2",
            f"-c{args.connections}",
            f"-d{args.duration}s",
            "--latency",
            f"{svc.url}/health/live",
        ]
        log(" ".join(command))
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    percentiles = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", out, re.MULTILINE))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    report = {
        "benchmark": "http-floor",
        "backend": args.backend,
        "topology": args.topology,
        "machine": machine(),
        "connections": args.connections,
        "requests_per_s": rps,
        "latency": percentiles,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
    }
    log(f"GET /health/live ({args.topology}): {rps} req/s, latency {json.dumps(percentiles)}")
    emit(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
