"""A production process with no Stripe key refuses to start instead of pushing to the
built-in emulator, unless the operator asks for the emulator; the embedded default
(SQLite, ``scripts/run``) still starts with no key and no question.

Real ``stripemeter`` processes, as an operator starts them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from adapters.settings import PostgresSettings
from tests.conftest import reset_postgres
from tests.e2e.test_real_server import ROOT, free_port

REFUSAL = (
    "stripemeter: STRIPE_SECRET_KEY is not set: on PostgreSQL nothing pushes to the built-in"
    " Stripe emulator unless asked; set STRIPE_SECRET_KEY, or STRIPEMETER_STRIPE_EMULATOR=true"
    " to use the emulator on purpose"
)
EMULATOR_WARNING = "STRIPE_SECRET_KEY is not set: pushing to the built-in Stripe emulator"


def base_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPEMETER_", "STRIPE_"))}
    env.update(
        STRIPEMETER_DATA_DIR=str(tmp_path / "data"),
        STRIPEMETER_EMULATOR_PORT="0",
        STRIPEMETER_LOG_LEVEL="INFO",
        **settings,
    )
    return env


@pytest.fixture
def database_url(postgres_database: PostgresSettings) -> str:
    reset_postgres(postgres_database)
    db = postgres_database
    return f"postgresql://{db.user}:{db.password}@{db.host}:{db.port}/{db.dbname}"


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("command", [["worker"], ["serve"]])
def test_a_pushing_process_on_postgresql_without_a_key_refuses_to_start(
    tmp_path: Path, database_url: str, command: list[str]
) -> None:
    done = run(base_env(tmp_path, STRIPEMETER_DATABASE_URL=database_url), *command)
    assert done.returncode == 1
    assert done.stderr.strip() == REFUSAL  # one line, no traceback
    assert done.stdout == ""


@contextmanager
def running(env: dict[str, str], log: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "api.cli", *args],
            env=env,
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            yield process
        finally:
            process.terminate()
            process.wait(timeout=30)


def wait_for(url: str, process: subprocess.Popen[str], log: Path) -> httpx.Response:
    deadline = time.monotonic() + 60
    while True:
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                return response
        except httpx.TransportError:
            pass
        assert process.poll() is None, f"exited {process.returncode}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"{url} never answered 200:\n{log.read_text()}"
        time.sleep(0.2)


def test_the_operator_may_ask_for_the_emulator_on_postgresql(
    tmp_path: Path, database_url: str
) -> None:
    port = free_port()
    env = base_env(
        tmp_path,
        STRIPEMETER_DATABASE_URL=database_url,
        STRIPEMETER_STRIPE_EMULATOR="true",
        STRIPEMETER_WORKER_METRICS_PORT=str(port),
    )
    log = tmp_path / "worker.log"
    with running(env, log, "worker") as worker:
        metrics = wait_for(f"http://127.0.0.1:{port}/metrics", worker, log).text
        assert "stripemeter_build_info" in metrics
        deadline = time.monotonic() + 30
        while EMULATOR_WARNING not in log.read_text():  # said loudly, as before
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)


def test_a_worker_that_does_not_push_needs_no_key(tmp_path: Path, database_url: str) -> None:
    port = free_port()
    env = base_env(
        tmp_path, STRIPEMETER_DATABASE_URL=database_url, STRIPEMETER_WORKER_METRICS_PORT=str(port)
    )
    log = tmp_path / "worker.log"
    with running(env, log, "worker", "--no-pushes") as worker:
        wait_for(f"http://127.0.0.1:{port}/metrics", worker, log)


def test_the_embedded_default_starts_with_no_key_and_no_question(tmp_path: Path) -> None:
    """SQLite, the embedded worker, no Stripe setting at all: the two-command quick start."""
    port = free_port()
    env = base_env(tmp_path, STRIPEMETER_PORT=str(port))
    log = tmp_path / "serve.log"
    with running(env, log, "serve") as serve:
        health = wait_for(f"http://127.0.0.1:{port}/health/ready", serve, log).json()
        assert health["status"] == "ready"
        assert health["checks"]["broker"] == {"status": "ok", "broker": "in-process"}
        assert EMULATOR_WARNING in log.read_text()


def test_a_misspelt_opt_in_is_a_settings_error(tmp_path: Path, database_url: str) -> None:
    env = base_env(
        tmp_path, STRIPEMETER_DATABASE_URL=database_url, STRIPEMETER_STRIPE_EMULATOR="yes please"
    )
    done = run(env, "worker")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "stripemeter: STRIPEMETER_STRIPE_EMULATOR must be true or false, got 'yes please'"
    )


COMMAND_REFUSAL = (
    "stripemeter: STRIPE_SECRET_KEY is not set: on PostgreSQL no command reads or writes the"
    " built-in Stripe emulator instead of Stripe unless asked; set STRIPE_SECRET_KEY, or"
    " STRIPEMETER_STRIPE_EMULATOR=true to use the emulator on purpose"
)


def test_a_command_that_talks_to_stripe_on_postgresql_without_a_key_is_refused(
    tmp_path: Path, database_url: str
) -> None:
    """reconcile, config apply (with a mapping), mappings, customers map, stripe ownership:
    each would read or write the emulator and report its answers as Stripe's."""
    env = base_env(tmp_path, STRIPEMETER_DATABASE_URL=database_url)
    assert run(env, "tenants", "create", "acme").returncode == 0
    created = run(
        env, "meters", "create", "--tenant", "acme", "--name", "api_calls", "--aggregation", "sum"
    )
    assert created.returncode == 0, created.stderr
    commands = [
        ["reconcile", "--tenant", "acme"],
        ["config", "apply", str(ROOT / "examples" / "stripemeter.toml"), "--tenant", "acme"],
        ["mappings", "create", "--tenant", "acme", "--metric", "api_calls",
         "--stripe-event-name", "api_calls"],
        ["customers", "map", "--tenant", "acme", "--customer-ref", "c1",
         "--stripe-customer-id", "cus_1"],
        ["stripe", "ownership"],
    ]  # fmt: skip
    for command in commands:
        done = run(env, *command)
        assert (done.returncode, done.stderr.strip()) == (1, COMMAND_REFUSAL), command
    # Asked for: the same reconciliation runs, against the emulator.
    asked = run({**env, "STRIPEMETER_STRIPE_EMULATOR": "true"}, *commands[0])
    assert asked.returncode == 0, asked.stderr
    assert COMMAND_REFUSAL not in asked.stderr
