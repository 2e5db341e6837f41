"""examples/: each script, run as a user runs it, against the embedded default.

One real service (``stripemeter serve``: SQLite, the writer process, the
in-process worker and emulator) on a free port; each example runs as a
subprocess with only its two settings, and must exit 0 with the lines its
README shows. A failed check must exit 1.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.operator import create_key, create_tenant, declare_metric
from tests.e2e.test_real_server import free_port

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "api.cli"]


def cli(env: dict[str, str], *args: str) -> dict[str, object]:
    done = subprocess.run(
        [*CLI, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    parsed: dict[str, object] = json.loads(done.stdout)
    return parsed


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """The embedded default on a free port; its base URL and the CLI's environment."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "STRIPEMETER_DATA_DIR": str(tmp_path_factory.mktemp("examples") / "data"),
        "STRIPEMETER_PORT": str(port),
        "STRIPEMETER_EMULATOR_PORT": str(free_port()),
        "STRIPEMETER_LOG_LEVEL": "WARNING",
    }
    env.pop("STRIPEMETER_DATABASE_URL", None)
    process = subprocess.Popen(
        [*CLI, "serve"], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        else:
            pytest.fail("the service did not become ready within 60 s")
        yield base, env
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
        assert process.returncode in (0, -15), output


def tenant_key(env: dict[str, str], slug: str) -> str:
    """A new tenant and its key, as ``tenants create`` and ``keys create`` make them."""
    create_tenant(env, slug)
    return create_key(env, slug, "ingest,read,admin")


def run_example(base: str, key: str, script: str) -> subprocess.CompletedProcess[str]:
    # Only what a user sets: the URL and the key (and PATH to find nothing else).
    env = {"STRIPEMETER_API_URL": base, "STRIPEMETER_API_KEY": key, "PATH": os.environ["PATH"]}
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / script)],
        env=env,
        cwd=ROOT / "examples",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def lines(output: str) -> list[str]:
    """The output with its run-specific parts (customer, URL, month) made stable."""
    output = re.sub(r"cus_example_[0-9a-f]{8}", "cus_example_X", output)
    output = re.sub(r"http://127\.0\.0\.1:\d+", "URL", output)
    return re.sub(r"period \d{4}-\d{2}", "period P", output).splitlines()


API_CALLS = [
    "ready: URL (sqlite)",
    "metric api_calls: sum (declared)",
    "sent req-1 (1), req-2 (2), req-3 (5) for cus_example_X: ['accepted', 'accepted', 'accepted']",
    "resent req-2 (2): duplicate",
    "sent req-3 again with quantity 50: conflict",
    "/v1/usage/current: api_calls = 8 in period P",
    "/metrics stripemeter_ingest_events_total: +3 accepted, +1 duplicate, +1 conflict",
    "ok: the resent event was counted once",
]
SEATS = [
    "ready: URL (sqlite)",
    "metric seats: max of seats in use (declared)",
    "reported 3, 5, 4 seats for cus_example_X: ['accepted', 'accepted', 'accepted']",
    "redelivered the report of 5 seats: duplicate",
    "/v1/usage/current: seats = 5 (max 5, last 4, 3 reports) in period P",
    "/metrics stripemeter_ingest_events_total: +3 accepted, +1 duplicate",
    "ok: the redelivered report was counted once",
]


@pytest.mark.parametrize(
    ("script", "expected"),
    [("api-calls/api_calls.py", API_CALLS), ("seats/seats.py", SEATS)],
    ids=["api-calls", "seats"],
)
def test_the_example_runs_and_counts_the_duplicate_once(
    service: tuple[str, dict[str, str]], script: str, expected: list[str]
) -> None:
    base, env = service
    key = tenant_key(env, script.split("/", maxsplit=1)[0])
    done = run_example(base, key, script)
    assert (done.returncode, done.stderr) == (0, ""), done.stdout
    assert lines(done.stdout) == expected
    # Run again on the same tenant: already declared, a new customer, the same checks.
    again = run_example(base, key, script)
    assert again.returncode == 0, again.stdout
    assert lines(again.stdout)[1].endswith("(already declared)")


def test_a_failed_check_exits_1_and_says_why(service: tuple[str, dict[str, str]]) -> None:
    """api_calls already declared otherwise on this tenant: the example stops at step 2."""
    base, env = service
    key = tenant_key(env, "other")
    declare_metric(env, "other", "api_calls", "max")
    done = run_example(base, key, "api-calls/api_calls.py")
    assert done.returncode == 1
    assert lines(done.stdout)[-1] == (
        "FAILED: declaring api_calls answered 409: "
        '{"type":"about:blank","title":"Conflict","status":409,'
        '"detail":"metric \'api_calls\' is already declared with other settings"}'
    )
    no_key = run_example(base, "", "seats/seats.py")
    assert (no_key.returncode, no_key.stdout) == (
        1,
        "FAILED: set STRIPEMETER_API_KEY to a key with the ingest, read and admin scopes\n",
    )


class _Proxy(http.server.BaseHTTPRequestHandler):
    """A reverse proxy in front of the service whose ingest upstream is down: 503 there,
    every other request forwarded as it is."""

    upstream = ""

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path.startswith("/v1/events/ingest"):
            status, content = 503, b"upstream ingest unavailable"
        else:
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            got = httpx.request(
                self.command, self.upstream + self.path, headers=headers, content=body
            )
            status, content = got.status_code, got.content
        self.send_response(status)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    do_GET = do_POST = _forward

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def failing_ingest(service: tuple[str, dict[str, str]]) -> Iterator[str]:
    """The proxy's base URL."""
    handler = type("Proxy", (_Proxy,), {"upstream": service[0]})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("script", "step"),
    [
        ("api-calls/api_calls.py", "sending the three requests"),
        ("seats/seats.py", "sending the three reports"),
    ],
    ids=["api-calls", "seats"],
)
def test_a_refused_request_is_a_failed_check_not_a_traceback(
    service: tuple[str, dict[str, str]], failing_ingest: str, script: str, step: str
) -> None:
    """The ingest answers 503 (behind a proxy whose upstream is down): the example says so."""
    _, env = service
    key = tenant_key(env, f"proxied-{script.split('/', maxsplit=1)[0]}")
    done = run_example(failing_ingest, key, script)
    assert (done.returncode, done.stderr) == (1, ""), done.stdout
    assert lines(done.stdout)[-1] == f"FAILED: {step} answered 503: upstream ingest unavailable"
