"""The version a release names, read back where an operator looks for it: the CLI's
``--version``, ``/health`` and ``/metrics`` of the API, and the worker's metrics port.

Each is compared with ``pyproject.toml``, the file a release edits, so that a
version read from anywhere else (or a stale install) fails here.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import pytest

from adapters import build_info
from adapters.metrics import Metrics
from tests.e2e.conftest import Api
from tests.e2e.test_real_server import ROOT, free_port

RELEASED = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
BUILD_INFO = re.compile(
    r'^stripemeter_build_info\{python="([^"]+)",version="([^"]+)"\} 1\.0$', re.M
)


def build_info_lines(exposition: str) -> list[tuple[str, str]]:
    """Every ``stripemeter_build_info`` series as (python, version)."""
    return BUILD_INFO.findall(exposition)


def test_the_version_is_the_released_one() -> None:
    assert RELEASED == "0.1.0"
    assert build_info.version() == RELEASED


def test_a_checkout_never_installed_reads_pyproject(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "stripemeter"\nversion = "9.8.7"\n')
    assert build_info._pyproject_version(pyproject) == "9.8.7"
    assert build_info._pyproject_version(tmp_path / "missing.toml") == build_info.UNKNOWN
    pyproject.write_text("[project]\n")
    assert build_info._pyproject_version(pyproject) == build_info.UNKNOWN


def test_stripemeter_version_prints_it() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", "--version"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == f"stripemeter {RELEASED}"


def test_health_and_metrics_of_the_api_name_the_version(api: Api) -> None:
    for path in ("/health", "/health/ready"):
        assert api.client.get(path).json()["version"] == RELEASED
    lines = build_info_lines(api.client.get("/metrics").text)
    assert lines == [(platform.python_version(), RELEASED)]


def test_several_api_processes_export_one_build_info_series(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shared-files mode (STRIPEMETER_API_PROCESSES > 1): one series, not one per process."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    from prometheus_client import generate_latest

    first, second = Metrics(multiprocess=True), Metrics(multiprocess=True)
    for metrics in (first, second):
        exposition = generate_latest(metrics.exposed).decode()
        assert build_info_lines(exposition) == [(platform.python_version(), RELEASED)]


def test_the_worker_metrics_port_names_the_version(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "STRIPEMETER_DATA_DIR": str(tmp_path / "data"),
        "STRIPEMETER_WORKER_METRICS_PORT": str(port),
        "STRIPEMETER_EMULATOR_PORT": "0",
    }
    env.pop("STRIPEMETER_DATABASE_URL", None)
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "worker", "--no-pushes"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                exposition = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).text
                break
            except httpx.TransportError:
                assert worker.poll() is None, (tmp_path / "worker.log").read_text()
                assert time.monotonic() < deadline, "the worker's metrics never answered"
                time.sleep(0.2)
        assert build_info_lines(exposition) == [(platform.python_version(), RELEASED)]
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        log.close()
