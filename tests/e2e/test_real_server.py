"""The README's path, for real: the CLI sets up a tenant, scripts/run serves HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "api.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cli(env: dict[str, str], *args: str) -> dict[str, object]:
    done = subprocess.run(
        [*CLI, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    parsed: dict[str, object] = json.loads(done.stdout)
    return parsed


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    port = free_port()
    env = {
        **os.environ,
        "STRIPEMETER_DATA_DIR": str(tmp_path / "data"),
        "STRIPEMETER_PORT": str(port),
        "STRIPEMETER_EMULATOR_PORT": str(free_port()),
        "STRIPEMETER_PUSH_INTERVAL_SECONDS": "1",
    }
    env.pop("STRIPEMETER_DATABASE_URL", None)
    cli(env, "tenants", "create", "acme", "--name", "Acme Inc")
    cli(env, "meters", "create", "--tenant", "acme", "--name", "api_calls", "--aggregation", "sum")
    process = subprocess.Popen(
        [str(ROOT / "scripts" / "run")],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/health/live", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            pytest.fail("the server did not start within 60 s")
        yield base, env
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
        assert process.returncode in (0, -15), output


def test_ingest_over_http_counts_once_and_the_embedded_worker_projects(
    server: tuple[str, dict[str, str]],
) -> None:
    base, env = server
    key = str(cli(env, "keys", "create", "--tenant", "acme", "--scopes", "ingest,read")["key"])
    headers = {"Authorization": f"Bearer {key}"}
    now = datetime.now(UTC).isoformat()
    body = {
        "events": [
            {
                "metric": "api_calls",
                "customerRef": "cus_1",
                "quantity": 3,
                "ts": now,
                "idempotencyKey": "e-1",
            }
        ]
    }
    first = httpx.post(f"{base}/v1/events/ingest", json=body, headers=headers)
    again = httpx.post(f"{base}/v1/events/ingest", json=body, headers=headers)
    assert [r["status"] for r in first.json()["results"]] == ["accepted"]
    assert [r["status"] for r in again.json()["results"]] == ["duplicate"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        usage = httpx.get(
            f"{base}/v1/usage/current", params={"customerRef": "cus_1"}, headers=headers
        ).json()
        if usage["counters"]:
            break
        time.sleep(0.05)
    assert [c["value"] for c in usage["counters"]] == ["3"]
    assert httpx.get(f"{base}/health/ready").json()["status"] == "ready"
    # A revoked key is refused (a key in use may live on for the 5 s auth cache).
    revoked = cli(env, "keys", "create", "--tenant", "acme")
    cli(env, "keys", "revoke", str(revoked["id"]), "--tenant", "acme")
    refused = httpx.get(f"{base}/v1/events", headers={"Authorization": f"Bearer {revoked['key']}"})
    assert refused.status_code == 401
    assert refused.json()["detail"] == "this API key was revoked"


def test_cli_errors_are_one_clear_line(tmp_path: Path) -> None:
    env = {**os.environ, "STRIPEMETER_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run(
        [*CLI, "keys", "create", "--tenant", "nobody"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip().startswith("stripemeter: tenant ")
    bad = subprocess.run(
        [*CLI, "db", "migrate"],
        env={**env, "STRIPEMETER_DATABASE_URL": "mysql://x/y"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert "STRIPEMETER_DATABASE_URL must start with postgresql://" in bad.stderr


def test_the_readme_push_path_reaches_the_builtin_emulator(
    server: tuple[str, dict[str, str]],
) -> None:
    """No Stripe key: map, send usage, and find it pushed to the built-in emulator."""
    base, env = server
    emulator = f"http://127.0.0.1:{env['STRIPEMETER_EMULATOR_PORT']}"
    key = str(cli(env, "keys", "create", "--tenant", "acme", "--scopes", "ingest,read")["key"])
    mapping = cli(
        env, "mappings", "create", "--tenant", "acme", "--metric", "api_calls", "--create-meter"
    )
    assert mapping["stripeFormula"] == "sum"
    stripe_customer = httpx.post(
        f"{emulator}/v1/customers", data={"name": "demo"}, auth=("sk_test_x", "")
    ).json()["id"]
    cli(
        env,
        "customers",
        "map",
        "--tenant",
        "acme",
        "--customer-ref",
        "cus_9",
        "--stripe-customer-id",
        stripe_customer,
    )
    now = datetime.now(UTC).isoformat()
    events = [
        {
            "metric": "api_calls",
            "customerRef": "cus_9",
            "quantity": q,
            "ts": now,
            "idempotencyKey": f"p{q}",
        }
        for q in (2, 3, 5)
    ]
    response = httpx.post(
        f"{base}/v1/events/ingest",
        json={"events": events},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.json()["accepted"] == 3
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        audit = cli(
            env, "audit", "--tenant", "acme", "--customer-ref", "cus_9", "--metric", "api_calls"
        )
        if audit["stripeUnitsConfirmed"] == {"live": 10}:
            break
        time.sleep(0.3)
    assert audit["stripeUnitsConfirmed"] == {"live": 10}
    [push] = audit["pushes"]  # type: ignore[misc]
    assert [e["idempotencyKey"] for e in push["events"]] == ["p2", "p3", "p5"]


def test_while_the_writer_is_down_nothing_is_acknowledged_and_a_retry_counts_once(
    server: tuple[str, dict[str, str]],
) -> None:
    """Kill the writer process: ingest answers 503; `serve` restarts it; the retry is safe."""
    base, env = server
    key = str(cli(env, "keys", "create", "--tenant", "acme", "--scopes", "ingest,read")["key"])
    headers = {"Authorization": f"Bearer {key}"}
    now = datetime.now(UTC).isoformat()
    body = {
        "events": [
            {
                "metric": "api_calls",
                "customerRef": "cus_w",
                "quantity": 4,
                "ts": now,
                "idempotencyKey": "w-1",
            }
        ]
    }
    writer = subprocess.run(
        ["pgrep", "-f", f"api.cli writer --socket .*-{env['STRIPEMETER_PORT']}.sock"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert len(writer) == 1
    os.kill(int(writer[0]), signal.SIGKILL)
    refused = httpx.post(f"{base}/v1/events/ingest", json=body, headers=headers)
    assert refused.status_code == 503
    assert "retrying is safe" in refused.json()["detail"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the supervisor restarts it within seconds
        response = httpx.post(f"{base}/v1/events/ingest", json=body, headers=headers)
        if response.status_code == 200:
            break
        time.sleep(0.3)
    assert [r["status"] for r in response.json()["results"]] == ["accepted"]
    again = httpx.post(f"{base}/v1/events/ingest", json=body, headers=headers)
    assert [r["status"] for r in again.json()["results"]] == ["duplicate"]


def test_the_hostile_events_of_issue_9_through_the_writer_process(
    server: tuple[str, dict[str, str]],
) -> None:
    """The production shape (API process + writer process): each bad event is its own
    error with its field, the good events beside them are accepted, nothing is a 500."""
    base, env = server
    key = str(cli(env, "keys", "create", "--tenant", "acme", "--scopes", "ingest,read")["key"])
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def good(n: int) -> str:
        return json.dumps(
            {
                "metric": "api_calls",
                "customerRef": "cus_1",
                "quantity": 1,
                "ts": now,
                "idempotencyKey": f"good-{n}",
            }
        )

    def bad(field: str, value: str) -> str:
        fields = {"metric": '"api_calls"', "customerRef": '"cus_1"', "quantity": "1"}
        fields["ts"] = json.dumps(now)
        fields[field] = value
        return "{" + ",".join(f'"{k}":{v}' for k, v in fields.items()) + "}"

    hostile = [
        (bad("quantity", '"1e999999999"'), "quantity"),
        (bad("quantity", "1e999999999"), "quantity"),
        (bad("quantity", '"1e-999999999"'), "quantity"),
        (bad("quantity", '"5_000"'), "quantity"),
        (bad("quantity", '" 5 "'), "quantity"),
        (bad("quantity", json.dumps("١٢")), "quantity"),
        (bad("ts", '"0001-01-01T00:00:00+23:59"'), "ts"),
        (bad("ts", '"9999-12-31T23:59:59-23:59"'), "ts"),
        (bad("ts", '"1970-01-01T00:00:00Z"'), "ts"),
        (bad("meta", '{"a":' * 1000 + "1" + "}" * 1000), "meta"),
        (bad("customerRef", json.dumps("cus\u0085x")), "customerRef"),
        (bad("customerRef", json.dumps("cus\u202ex")), "customerRef"),
        (bad("customerRef", '"cus_1","quantity":1000'), "quantity"),  # a repeated key
    ]
    items = [good(0)] + [text for text, _ in hostile] + [good(1)]
    response = httpx.post(
        f"{base}/v1/events/ingest",
        content=('{"events":[' + ",".join(items) + "]}").encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert results[0]["status"] == results[-1]["status"] == "accepted"
    got = [(r["status"], r.get("field")) for r in results[1:-1]]
    assert got == [("error", field) for _, field in hostile]
    assert all(r["reason"] for r in results[1:-1])
