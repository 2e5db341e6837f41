"""The load generator: wrk (a process of its own) against the ingest route, and what it cost.

A run's summary comes from the Lua script's ``WRKJSON`` line (benchmarks/wrk/);
the CPU each process of the service spent during the run is read from /proc
around it, so that a result says where the two cores went.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from benchmarks.processes import cpu_by_command, peak_rss_mb, process_cpu, system_cpu
from benchmarks.report import log
from benchmarks.service import METRIC, Service

WRK_DIR = Path(__file__).resolve().parent / "wrk"


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    non_2xx: int
    socket_errors: dict[str, int]
    latency_ms: dict[str, float]
    accepted: int  # from the response bodies, when the script parsed them (else -1)
    wrk_cpu_s: float
    server_cpu_s: float  # every process of the service (see Service.roles)
    server_cpu_by_role: dict[str, float]
    machine_busy: float  # fraction of both cores busy during the run
    peak_rss_mb_by_role: dict[str, float]  # the largest process of each role, at the end
    cpu_by_command: dict[str, float]  # CPU seconds per process name (wrk's own not included)
    raw: str

    @property
    def ok(self) -> int:
        return self.requests - self.non_2xx

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s


def run_wrk(
    svc: Service,
    script: str,
    *,
    connections: int,
    duration_s: int,
    threads: int = 2,
    extra_env: dict[str, str] | None = None,
) -> WrkResult:
    """Run wrk (its own process) against POST /v1/events/ingest; parse its JSON summary."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    env = {
        **os.environ,
        "BENCH_KEY": svc.key,
        "BENCH_METRIC": METRIC,
        "BENCH_PREFIX": uuid.uuid4().hex[:10],
        **(extra_env or {}),
    }
    command = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration_s}s",
        "--timeout",
        "10s",
        "-s",
        str(WRK_DIR / script),
        f"{svc.url}/v1/events/ingest",
    ]
    log(" ".join(command))
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy_before, total_before = system_cpu()
    procs_before = process_cpu()
    roles = svc.roles(procs_before)
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    procs_after = process_cpu()
    busy_after, total_after = system_cpu()
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    roles.update(svc.roles(procs_after))
    by_role: dict[str, float] = {}
    for pid, role in roles.items():
        # A process that ended during the run is missing from procs_after: its CPU is lost.
        if pid in procs_after:
            previous = procs_before.get(pid)
            used = procs_after[pid].cpu_s - (previous.cpu_s if previous else 0.0)
            by_role[role] = by_role.get(role, 0.0) + used
    peak_rss: dict[str, float] = {}
    for pid, role in roles.items():
        with contextlib.suppress(OSError):  # ended during the run
            peak_rss[role] = max(peak_rss.get(role, 0.0), round(peak_rss_mb(pid), 1))
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stderr}")
    match = re.search(r"^WRKJSON (.*)$", done.stdout, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"wrk printed no summary:\n{done.stdout}\n{done.stderr}")
    data = json.loads(match.group(1))
    errors = data["errors"]
    return WrkResult(
        requests=data["requests"],
        duration_s=data["duration_us"] / 1e6,
        non_2xx=errors["status"],
        socket_errors={k: v for k, v in errors.items() if k != "status"},
        latency_ms={k: v / 1000 for k, v in data["latency_us"].items()},
        accepted=data.get("accepted", -1),
        wrk_cpu_s=(after_children.ru_utime + after_children.ru_stime)
        - (before_children.ru_utime + before_children.ru_stime),
        server_cpu_s=sum(by_role.values()),
        server_cpu_by_role={role: round(seconds, 1) for role, seconds in sorted(by_role.items())},
        machine_busy=(busy_after - busy_before) / max(total_after - total_before, 1),
        peak_rss_mb_by_role=dict(sorted(peak_rss.items())),
        cpu_by_command=cpu_by_command(procs_before, procs_after, roles),
        raw=done.stdout,
    )
