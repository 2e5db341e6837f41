"""STRIPEMETER_CONFIG_FILE: ``serve`` applies the file before it answers, or does not start.

The real command, as an operator starts it, on the embedded default (the
mappings go to its built-in emulator, which is up by the time the file is
applied).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.e2e.operator import create_key, create_tenant, declare_metric
from tests.e2e.test_real_server import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "stripemeter.toml"


def environment(tmp_path: Path, config_file: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "STRIPEMETER_DATA_DIR": str(tmp_path / "data"),
        "STRIPEMETER_PORT": str(free_port()),
        "STRIPEMETER_EMULATOR_PORT": str(free_port()),
        "STRIPEMETER_LOG_LEVEL": "INFO",
        "STRIPEMETER_CONFIG_FILE": str(config_file),
    }
    env.pop("STRIPEMETER_DATABASE_URL", None)
    env.pop("STRIPE_SECRET_KEY", None)
    return env


def serve(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_serve_applies_the_file_before_it_is_ready(tmp_path: Path) -> None:
    env = environment(tmp_path, EXAMPLE)
    process = serve(env)
    base = f"http://127.0.0.1:{env['STRIPEMETER_PORT']}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        assert process.poll() is None, process.communicate()[0]
        key = create_key(env, "acme", "read")
        headers = {"Authorization": f"Bearer {key}"}
        meters = httpx.get(f"{base}/v1/meters", headers=headers).json()["data"]
        assert [(m["name"], m["aggregation"]) for m in meters] == [
            ("api_calls", "sum"),
            ("seats", "max"),
        ]
        mappings = httpx.get(f"{base}/v1/mappings", headers=headers).json()["data"]
        assert [(m["metric"], m["stripeEventName"], m["push"]) for m in mappings] == [
            ("api_calls", "api_calls", "delta"),
            ("seats", "seats_max", "value"),
        ]
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert "STRIPEMETER_CONFIG_FILE: applied 7 changes" in output


def serve_once(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``stripemeter serve`` expected to refuse and exit: its status and output."""
    return subprocess.run(
        [sys.executable, "-m", "api.cli", "serve"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_serve_refuses_to_start_on_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[metrics.api_calls]\naggregation = "median"\n')
    done = serve_once(environment(tmp_path, bad))
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"stripemeter: {bad}: metrics.api_calls.aggregation: must be one of sum, count, max, last\n"
    )


def test_serve_refuses_to_start_when_the_domain_refuses_a_change(tmp_path: Path) -> None:
    env = environment(tmp_path, EXAMPLE)
    create_tenant(env, "acme")
    declare_metric(env, "acme", "seats", "last")
    process = serve(env)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 3  # the server's own status for a failed start
    assert (
        f"STRIPEMETER_CONFIG_FILE refused, not starting: {EXAMPLE}: metrics.seats: metric"
        " 'seats' is already declared with other settings (aggregation last -> max, unit"
        " unit -> seat)"
    ) in output
