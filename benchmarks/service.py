"""The service under load: ``stripemeter serve`` (and worker) as subprocesses on a fresh database.

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

import argparse
import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks.databases import fresh_database
from benchmarks.processes import BIN, ROOT, Proc, cmdline, descendants, free_port, process_cpu
from benchmarks.report import log

METRIC = "api_calls"
TOPOLOGIES = ("embedded", "production")
INGEST_TOTAL = "stripemeter_ingest_events_total"


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
            command = cmdline(pid)
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


def add_set_option(parser: argparse.ArgumentParser) -> None:
    """``--set STRIPEMETER_NAME=VALUE``, repeatable: read by ``service_settings``."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a STRIPEMETER_* setting for the service's processes (repeatable)",
    )


def service_settings(pairs: Sequence[str]) -> dict[str, str]:
    """``NAME=VALUE`` pairs (a benchmark's ``--set``) as settings for the service."""
    settings = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.startswith("STRIPEMETER_"):
            raise SystemExit(f"--set takes STRIPEMETER_NAME=VALUE, got {pair!r}")
        settings[name] = value
    return settings


@contextmanager
def service(
    backend: str,
    lateness_seconds: int = 35 * 86400,
    topology: str = "embedded",
    profile_dir: str | None = None,
    settings: Mapping[str, str] | None = None,
) -> Iterator[Service]:
    """A fresh database, a fresh tenant/metric/key, and the service on it in ``topology``;
    with ``profile_dir``, ``serve``'s processes run under benchmarks/profiling/;
    ``settings`` (``STRIPEMETER_*`` variables) go to every process of the service."""
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
            STRIPEMETER_STRIPE_EMULATOR="true",  # asked for: no Stripe key on PostgreSQL too
        )
        env.update(settings or {})
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
        if profile_dir:
            hook = str(Path(__file__).resolve().parent / "profiling")
            path = os.pathsep.join(p for p in (hook, env.get("PYTHONPATH", "")) if p)
            serve_env.update(PYTHONPATH=path, BENCH_CPROFILE_DIR=profile_dir)
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
