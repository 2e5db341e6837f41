"""Shared machinery of the benchmarks: a fresh database, the service as a subprocess, wrk, probes.

Every benchmark starts its own ``stripemeter serve`` on a fresh database (a new
PostgreSQL database ``smbench_*`` that is dropped afterwards, or a temporary
SQLite directory), creates a fresh tenant, metric and API key with the CLI,
drives load over loopback only, and stops everything it started.

Two topologies (``--topology``):

``embedded``
    one ``stripemeter serve`` (one API process, the embedded worker: push loop
    and built-in Stripe emulator in the API process, projections in the writer
    process that ``serve`` starts beside it).
``production``
    ``STRIPEMETER_API_PROCESSES=2 STRIPEMETER_EMBEDDED_WORKER=false stripemeter
    serve`` (a uvicorn supervisor, two API processes, the writer process) plus
    one ``stripemeter worker`` (projections and the Stripe push loop, with its
    built-in emulator), both started here on the same fresh database.

The server CPU figures cover every process of the service: ``serve`` and all
its descendants (writer, API processes) and, in production, the worker.
"""

from __future__ import annotations

import contextlib
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
TOPOLOGIES = ("embedded", "production")
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


@dataclass(frozen=True)
class Proc:
    name: str  # the command name (comm)
    ppid: int
    cpu_s: float  # user + system, all threads


def process_cpu() -> dict[int, Proc]:
    """{pid: Proc} of every process on the machine."""
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
        found[int(entry.name)] = Proc(
            head.split("(", 1)[1],
            int(fields[1]),
            (int(fields[11]) + int(fields[12])) / ticks,
        )
    return found


def descendants(roots: list[int], procs: dict[int, Proc]) -> set[int]:
    """The given pids and every process below them, in one ``process_cpu()`` snapshot."""
    children: dict[int, list[int]] = {}
    for pid, proc in procs.items():
        children.setdefault(proc.ppid, []).append(pid)
    found: set[int] = set()
    todo = [pid for pid in roots if pid in procs]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def cpu_by_command(
    before: dict[int, Proc], after: dict[int, Proc], roles: dict[int, str] | None = None
) -> dict[str, float]:
    """CPU seconds per command name between two ``process_cpu()`` snapshots (top 8);
    the service's own processes are named by their role (``roles``), e.g. ``sm:writer``."""
    roles = roles or {}
    totals: dict[str, float] = {}
    for pid, proc in after.items():
        previous = before.get(pid)
        used = proc.cpu_s - (previous.cpu_s if previous else 0.0)
        name = f"sm:{roles[pid]}" if pid in roles else proc.name
        if used > 0:
            totals[name] = totals.get(name, 0.0) + used
    top = sorted(totals.items(), key=lambda item: -item[1])[:8]
    return {name: round(seconds, 1) for name, seconds in top}


@dataclass
class Service:
    """A running ``stripemeter serve`` with one fresh tenant, metric and key."""

    backend: str
    env: dict[str, str]
    port: int
    key: str
    tenant: str
    topology: str = "embedded"
    process: subprocess.Popen[bytes] | None = None
    worker: subprocess.Popen[bytes] | None = None  # production: `stripemeter worker`
    worker_metrics_port: int = 0
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

    def roles(self, procs: dict[int, Proc] | None = None) -> dict[int, str]:
        """{pid: role} of every process of the service: ``serve`` and its descendants
        (the writer process, uvicorn's API processes), and the worker in production."""
        procs = process_cpu() if procs is None else procs
        roots = [self.pid] + ([self.worker.pid] if self.worker is not None else [])
        found = {}
        for pid in descendants(roots, procs):
            command = _cmdline(pid)
            if pid == self.pid:
                # One API process: serve is it. Several: serve is uvicorn's supervisor.
                found[pid] = "api" if self.topology == "embedded" else "serve"
            elif self.worker is not None and pid == self.worker.pid:
                found[pid] = "worker"
            elif "api.cli writer" in command:
                found[pid] = "writer"
            elif "multiprocessing.spawn" in command:
                found[pid] = "api"
            elif "resource_tracker" in command:
                found[pid] = "mp-tracker"
            else:
                found[pid] = "other"
        return found

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

    def event_store_transactions(self) -> int | None:
        """PostgreSQL: how many transactions wrote the event store so far (its rows' distinct
        ``xmin``), i.e. the writer's commits plus the setup; None on SQLite."""
        if self.backend != "postgres":
            return None
        import psycopg

        with psycopg.connect(self.env["STRIPEMETER_DATABASE_URL"]) as conn:
            row = conn.execute(
                "SELECT count(DISTINCT xmin::text) FROM stripemeter_events"
            ).fetchone()
        return int(row[0]) if row else None

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
def service(
    backend: str, lateness_seconds: int = 35 * 86400, topology: str = "embedded"
) -> Iterator[Service]:
    """A fresh database, a fresh tenant/metric/key, and the service on it in ``topology``."""
    if topology not in TOPOLOGIES:
        raise SystemExit(f"unknown topology {topology!r} ({' or '.join(TOPOLOGIES)})")
    with fresh_database(backend) as db_env:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STRIPEMETER_")}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        env.update(
            db_env,
            STRIPEMETER_LOG_LEVEL="WARNING",
            STRIPEMETER_WRITER="process",
            STRIPEMETER_EMULATOR_PORT="0",  # the built-in Stripe emulator on a free port
        )
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
        serve_env = dict(env)
        worker_env = dict(env)
        metrics_port = 0
        if topology == "production":
            metrics_port = free_port()
            serve_env.update(STRIPEMETER_API_PROCESSES="2", STRIPEMETER_EMBEDDED_WORKER="false")
            worker_env.update(STRIPEMETER_WORKER_METRICS_PORT=str(metrics_port))
        svc = Service(backend, serve_env, port, key["key"], tenant, topology)
        svc.worker_metrics_port = metrics_port
        try:
            if topology == "production":
                svc.worker = subprocess.Popen(
                    [str(BIN / "stripemeter"), "worker"], env=worker_env, cwd=ROOT
                )
            svc.process = subprocess.Popen(
                [str(BIN / "stripemeter"), "serve", "--port", str(port)], env=serve_env, cwd=ROOT
            )
            _wait_started(svc)
            log(
                f"stripemeter serve ({backend}, {topology}) ready on port {port}, pid {svc.pid}"
                + (f"; stripemeter worker pid {svc.worker.pid}" if svc.worker else "")
                + f"; processes {sorted(svc.roles().values())}"
            )
            yield svc
        finally:
            svc.client.close()
            started = svc.roles() if svc.process is not None else {}
            for proc in (svc.process, svc.worker):
                if proc is not None:
                    _stop(proc)
            # Nothing of ours may survive into the next benchmark (uvicorn's API
            # processes and the writer normally go with serve).
            grace = time.monotonic() + 3
            while time.monotonic() < grace and any(
                Path(f"/proc/{pid}").exists() for pid in started
            ):
                time.sleep(0.1)
            for pid in started:
                if Path(f"/proc/{pid}").exists():
                    with contextlib.suppress(ProcessLookupError):
                        log(f"process {pid} ({started[pid]}) outlived serve: killing it")
                        os.kill(pid, signal.SIGKILL)
            log(f"stripemeter {topology} topology stopped")


def _wait_started(svc: Service, timeout: float = 60.0) -> None:
    """Until serve answers /health/ready (and, in production, the worker its metrics port
    and the projections have caught up, which proves the worker follows the log)."""
    assert svc.process is not None
    deadline = time.monotonic() + timeout
    while True:
        for name, proc in (("serve", svc.process), ("worker", svc.worker)):
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"stripemeter {name} exited with {proc.returncode}")
        try:
            ok = svc.client.get("/health/ready").status_code == 200
            if ok and svc.worker is not None:
                metrics_url = f"http://127.0.0.1:{svc.worker_metrics_port}/metrics"
                ok = httpx.get(metrics_url, timeout=5).status_code == 200
            if ok:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the service did not become ready within {timeout} s")
        time.sleep(0.1)
    svc.wait_caught_up(timeout=timeout)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
    server_cpu_s: float  # every process of the service (see Service.roles)
    server_cpu_by_role: dict[str, float]
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
        cpu_by_command=cpu_by_command(procs_before, procs_after, roles),
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


def commit_stats(
    before: dict[str, float],
    after: dict[str, float],
    transactions: tuple[int | None, int | None] = (None, None),
) -> dict[str, Any]:
    """Group-commit batches during a run.

    With the writer process (both topologies) the API processes observe the
    ``stripemeter_group_commit_*`` histograms once per *request*, with the size
    and duration of the commit that request rode in: their count is requests,
    not commits, and their means are request-weighted (a commit of 50 events
    answering 50 requests counts 50 times). The true number of commits comes
    from the database on PostgreSQL (``transactions``: distinct inserting
    transactions in the event store before and after); on SQLite it is unknown.
    """

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    observed = delta("stripemeter_group_commit_batch_events_count")
    events = delta("stripemeter_group_commit_batch_events_sum")
    seconds = delta("stripemeter_group_commit_seconds_sum")
    accepted = outcomes(after).get("accepted", 0) - outcomes(before).get("accepted", 0)
    commits = None
    if transactions[0] is not None and transactions[1] is not None:
        commits = transactions[1] - transactions[0]
    return {
        "commits": commits,
        "mean_events_per_commit": round(accepted / commits, 1) if commits else None,
        "observations": int(observed),
        "request_weighted_events_per_commit": round(events / observed, 1) if observed else 0,
        "request_weighted_commit_ms": round(seconds / observed * 1000, 2) if observed else 0,
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
    status = subprocess.run(
        ["git", "status", "--short", "--untracked-files=no"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.splitlines()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "mem_gib": round(mem_kb / 1024 / 1024, 1),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit,
        # Uncommitted changes outside benchmarks/ that the measured service ran with.
        "modified": [line[3:] for line in status if not line[3:].startswith("benchmarks/")],
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        "python": sys.version.split()[0],
    }


def emit(result: dict[str, Any]) -> None:
    """The machine-readable result on stdout (one JSON line)."""
    print("RESULT " + json.dumps(result, default=str), flush=True)
