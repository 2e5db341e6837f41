"""Several `stripemeter worker` processes on one host, each with its own metrics port."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from adapters.settings import Settings
from tests.e2e.operator import migrate
from tests.e2e.test_real_server import ROOT


def free_range(size: int) -> int:
    """The first of ``size`` consecutive ports free on 127.0.0.1 now."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first: int = probe.getsockname()[1]
        if first + size > 65535:
            continue
        with contextlib.ExitStack() as held:
            try:
                for port in range(first, first + size):
                    sock = held.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return first
    raise AssertionError(f"no {size} consecutive free ports")


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "api.cli", "worker", "--no-pushes"],
            env=env,
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def wait_for_line(log: Path, text: str, process: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 60
    while True:
        for line in log.read_text().splitlines():
            if text in line:
                return line
        assert process.poll() is None, f"the worker exited:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no {text!r} in:\n{log.read_text()}"
        time.sleep(0.1)


@pytest.fixture
def worker_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {**os.environ, "STRIPEMETER_DATA_DIR": str(tmp_path / "data")}
    env.pop("STRIPEMETER_DATABASE_URL", None)
    env.pop("STRIPEMETER_WORKER_METRICS_PORT", None)
    migrate(env)
    yield env


def test_two_workers_on_one_host_take_the_first_two_free_ports_of_the_range(
    worker_env: dict[str, str], tmp_path: Path
) -> None:
    first = free_range(3)
    env = {**worker_env, "STRIPEMETER_WORKER_METRICS_PORT": f"{first}-{first + 2}"}
    workers: list[subprocess.Popen[bytes]] = []
    try:
        for number in range(2):
            log = tmp_path / f"worker-{number}.log"
            workers.append(start_worker(env, log))
            line = wait_for_line(log, "worker running", workers[-1])
            # The port chosen is logged at INFO, where an operator looks for it.
            assert "INFO stripemeter: worker running" in line
            assert line.endswith(f"metrics on 127.0.0.1:{first + number}"), line
        for port in (first, first + 1):
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
            assert metrics.status_code == 200
            assert "stripemeter_ingest_events_total" in metrics.text
        for worker in workers:
            assert worker.poll() is None
    finally:
        for worker in workers:
            worker.terminate()
            worker.wait(timeout=30)


def test_an_explicit_port_already_taken_is_one_line_and_a_failure(
    worker_env: dict[str, str],
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "api.cli", "worker"],
            env={**worker_env, "STRIPEMETER_WORKER_METRICS_PORT": str(port)},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    [line] = [line for line in done.stderr.splitlines() if line.strip()]
    assert f"127.0.0.1:{port}" in line
    assert f"STRIPEMETER_WORKER_METRICS_PORT={port}" in line
    assert "already in use" in line


@pytest.mark.parametrize(
    ("value", "ports"),
    [(None, (9464, 9473)), ("9500", (9500, 9500)), ("9500-9502", (9500, 9502)), ("0", (0, 0))],
)
def test_the_metrics_port_setting_is_a_port_or_a_range(
    value: str | None, ports: tuple[int, int]
) -> None:
    env = {} if value is None else {"STRIPEMETER_WORKER_METRICS_PORT": value}
    settings = Settings.from_env(env)
    assert (settings.worker_metrics_port, settings.worker_metrics_port_last) == ports
