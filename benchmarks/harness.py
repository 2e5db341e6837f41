"""Shared machinery of the benchmarks: a fresh database, the service as a subprocess, wrk, probes.

Every benchmark starts its own ``stripemeter serve`` on a fresh database (a new
PostgreSQL database ``smbench_*`` that is dropped afterwards, or a temporary
SQLite directory), creates a fresh tenant, metric and API key with the CLI,
drives load over loopback only, and stops everything it started.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
WRK_DIR = Path(__file__).resolve().parent / "wrk"
PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
METRIC = "api_calls"
INGEST_TOTAL = "stripemeter_ingest_events_total"


def log(message: str) -> None:
    print(f"[{datetime.now(UTC).strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- databases -----------------------------------------------------------------


@contextmanager
def fresh_database(backend: str) -> Iterator[dict[str, str]]:
    """Environment variables for the service pointing at a brand-new, empty database."""
    if backend == "postgres":
        import psycopg

        name = f"smbench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        log(f"created PostgreSQL database {name}")
        try:
            yield {"STRIPEMETER_DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/{name}"}
        finally:
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            log(f"dropped PostgreSQL database {name}")
    elif backend == "sqlite":
        directory = tempfile.mkdtemp(prefix="smbench_sqlite_")
        log(f"SQLite data directory {directory}")
        try:
            yield {"STRIPEMETER_DATA_DIR": directory}
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    else:
        raise SystemExit(f"unknown backend {backend!r} (postgres or sqlite)")


# -- the service -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def system_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return total - idle, total


def process_cpu() -> dict[int, tuple[str, float]]:
    """{pid: (command name, CPU seconds)} of every process on the machine."""
    ticks = os.sysconf("SC_CLK_TCK")
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        head, _, rest = text.rpartition(")")
        fields = rest.split()
        found[int(entry.name)] = (
            head.split("(", 1)[1],
            (int(fields[11]) + int(fields[12])) / ticks,
        )
    return found


def cpu_by_command(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds per command name between two ``process_cpu()`` snapshots (top 6)."""
    totals: dict[str, float] = {}
    for pid, (name, seconds) in after.items():
        used = seconds - before.get(pid, (name, 0.0))[1]
        if used > 0:
            totals[name] = totals.get(name, 0.0) + used
    top = sorted(totals.items(), key=lambda item: -item[1])[:6]
    return {name: round(seconds, 1) for name, seconds in top}


@dataclass
class Service:
    """A running ``stripemeter serve`` with one fresh tenant, metric and key."""

    backend: str
    env: dict[str, str]
    port: int
    key: str
    tenant: str
    process: subprocess.Popen[bytes] | None = None
    client: httpx.Client = field(init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __post_init__(self) -> None:
        self.client = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=30
        )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    # -- reads ------------------------------------------------------------------

    def ready(self) -> dict[str, Any]:
        response = self.client.get("/health/ready")
        body: dict[str, Any] = response.json()
        return body

    def lag(self) -> int:
        """The largest projection lag (events) that /health/ready reports."""
        checks = self.ready()["checks"]
        lags = [c["lagEvents"] for name, c in checks.items() if name.startswith("projection:")]
        if "projectionRunner" in checks:
            log(f"projection runner failing: {checks['projectionRunner']}")
        return max(lags, default=0)

    def wait_caught_up(self, timeout: float = 120.0, interval: float = 0.01) -> float:
        """Poll until every projection's lag is 0; the seconds it took."""
        started = time.perf_counter()
        while True:
            if self.lag() == 0:
                return time.perf_counter() - started
            if time.perf_counter() - started > timeout:
                raise RuntimeError(f"projections did not catch up within {timeout} s")
            time.sleep(interval)

    def quiesce(self, timeout: float = 120.0) -> dict[str, float]:
        """Wait until nothing is being written (requests wrk abandoned at its stop included)
        and the projections have caught up; the /metrics samples at that point."""
        deadline = time.monotonic() + timeout
        last = -1.0
        while True:
            self.wait_caught_up(timeout)
            samples = self.metrics()
            accepted = sum(v for k, v in samples.items() if k.startswith(INGEST_TOTAL))
            if accepted == last:
                return samples
            last = accepted
            commits = samples.get("stripemeter_group_commit_seconds_count", 0.0)
            mean = samples.get("stripemeter_group_commit_seconds_sum", 0.0) / max(commits, 1)
            if time.monotonic() > deadline:
                raise RuntimeError("ingest did not go quiet")
            time.sleep(max(1.0, 2.5 * mean))

    def usage(self, customer: str, period: str | None = None) -> dict[str, Any]:
        params = {"customerRef": customer, "metric": METRIC}
        if period:
            params["period"] = period
        response = self.client.get("/v1/usage/current", params=params)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def counted(self, customers: int, period: str | None = None) -> tuple[int, int]:
        """(sum of quantities, count of events) over cust-0 .. cust-{customers-1}."""
        total = 0
        count = 0
        for i in range(customers):
            for counter in self.usage(f"cust-{i}", period)["counters"]:
                total += int(float(counter["sum"]))
                count += int(counter["count"])
        return total, count

    def metrics(self) -> dict[str, float]:
        """The /metrics samples, name{labels} -> value (no comments)."""
        text = self.client.get("/metrics").text
        samples = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
        return samples


def _cli(env: dict[str, str], *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [str(BIN / "stripemeter"), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"stripemeter {' '.join(args)} failed: {done.stderr.strip()}")
    out: dict[str, Any] = json.loads(done.stdout)
    return out


@contextmanager
def service(backend: str, lateness_seconds: int = 35 * 86400) -> Iterator[Service]:
    """A fresh database, a fresh tenant/metric/key, and ``stripemeter serve`` on it."""
    with fresh_database(backend) as db_env:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STRIPEMETER_")}
        env.update(db_env, STRIPEMETER_LOG_LEVEL="WARNING")
        tenant = f"bench-{uuid.uuid4().hex[:6]}"
        _cli(env, "tenants", "create", tenant)
        _cli(
            env,
            "meters",
            "create",
            "--tenant",
            tenant,
            "--name",
            METRIC,
            "--aggregation",
            "sum",
            "--lateness-window-seconds",
            str(lateness_seconds),
        )
        key = _cli(env, "keys", "create", "--tenant", tenant, "--scopes", "ingest,read,admin")
        port = free_port()
        svc = Service(backend, env, port, key["key"], tenant)
        svc.process = subprocess.Popen(
            [str(BIN / "stripemeter"), "serve", "--port", str(port)], env=env, cwd=ROOT
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                if svc.process.poll() is not None:
                    raise RuntimeError(f"stripemeter serve exited with {svc.process.returncode}")
                try:
                    if svc.client.get("/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("stripemeter serve did not become ready within 60 s")
                time.sleep(0.1)
            log(f"stripemeter serve ({backend}) ready on port {port}, pid {svc.pid}")
            yield svc
        finally:
            svc.client.close()
            if svc.process.poll() is None:
                svc.process.send_signal(signal.SIGINT)
                try:
                    svc.process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    svc.process.kill()
                    svc.process.wait()
            log("stripemeter serve stopped")


# -- the load generator ----------------------------------------------------------


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    non_2xx: int
    socket_errors: dict[str, int]
    latency_ms: dict[str, float]
    accepted: int  # from the response bodies, when the script parsed them (else -1)
    wrk_cpu_s: float
    server_cpu_s: float
    machine_busy: float  # fraction of both cores busy during the run
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
    server_before = cpu_seconds(svc.pid)
    busy_before, total_before = system_cpu()
    procs_before = process_cpu()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    procs_after = process_cpu()
    busy_after, total_after = system_cpu()
    server_after = cpu_seconds(svc.pid)
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
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
        server_cpu_s=server_after - server_before,
        machine_busy=(busy_after - busy_before) / max(total_after - total_before, 1),
        cpu_by_command=cpu_by_command(procs_before, procs_after),
        raw=done.stdout,
    )


# -- projection lag sampling -------------------------------------------------------


class LagSampler:
    """Samples the projection lag from /health/ready every ``interval`` seconds, in a thread."""

    def __init__(self, svc: Service, interval: float = 0.1) -> None:
        self.svc = svc
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self.probe_ms: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lag-sampler", daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.svc.url, timeout=10) as client:
            started = time.perf_counter()
            while not self._stop.is_set():
                tick = time.perf_counter()
                try:
                    checks = client.get("/health/ready").json()["checks"]
                    lag = max(
                        (c["lagEvents"] for n, c in checks.items() if n.startswith("projection:")),
                        default=0,
                    )
                    self.samples.append((tick - started, lag))
                    self.probe_ms.append((time.perf_counter() - tick) * 1000)
                except (httpx.HTTPError, ValueError, KeyError):
                    self.failures += 1
                self._stop.wait(max(0.0, self.interval - (time.perf_counter() - tick)))

    def __enter__(self) -> LagSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def summary(self) -> dict[str, Any]:
        lags = sorted(lag for _, lag in self.samples)
        if not lags:
            return {"samples": 0, "failures": self.failures}
        return {
            "samples": len(lags),
            "failures": self.failures,
            "p50": percentile(lags, 50),
            "p95": percentile(lags, 95),
            "max": lags[-1],
            "mean": round(statistics.fmean(lags), 1),
            "probe_ms_p50": round(percentile(sorted(self.probe_ms), 50), 1),
            "probe_ms_max": round(max(self.probe_ms), 1),
        }


def percentile(ordered: list[float] | list[int], pct: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


# -- group-commit statistics -------------------------------------------------------


def commit_stats(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """Group-commit batches during a run, from the /metrics histograms."""

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    batches = delta("stripemeter_group_commit_batch_events_count")
    events = delta("stripemeter_group_commit_batch_events_sum")
    seconds = delta("stripemeter_group_commit_seconds_sum")
    return {
        "commits": int(batches),
        "mean_events_per_commit": round(events / batches, 1) if batches else 0,
        "mean_commit_ms": round(seconds / batches * 1000, 2) if batches else 0,
    }


def outcomes(samples: dict[str, float]) -> dict[str, int]:
    found = {}
    for name, value in samples.items():
        m = re.match(r'stripemeter_ingest_events_total\{outcome="(\w+)"\}', name)
        if m:
            found[m.group(1)] = int(value)
    return found


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "mem_gib": round(mem_kb / 1024 / 1024, 1),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "python": sys.version.split()[0],
    }


def emit(result: dict[str, Any]) -> None:
    """The machine-readable result on stdout (one JSON line)."""
    print("RESULT " + json.dumps(result, default=str), flush=True)
