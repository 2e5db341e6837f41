"""``stripemeter import``, for real: the command as a subprocess, sending to a real service.

``stripemeter serve`` (the API and its writer process) runs once per backend
(SQLite, PostgreSQL) for the module; each test has a tenant of its own on it,
runs ``stripemeter import`` as an operator would, and reads the counters back
over HTTP once the projections have caught up.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.persistence import open_stores
from adapters.settings import PostgresSettings, Settings
from domain.meters import Aggregation, MetricDefinition
from domain.tenancy import Scope
from tests.conftest import reset_postgres
from tests.e2e.test_real_server import ROOT, free_port

CLI = [sys.executable, "-m", "api.cli"]
CUSTOMERS = 5


@dataclass
class Service:
    base: str
    key: str
    env: dict[str, str]  # what `stripemeter import` runs with: the address and the key
    admin_key: str = ""  # a key with scope admin, which may import history

    def get(self, path: str, **params: str) -> Any:
        headers = {"Authorization": f"Bearer {self.key}"}
        response = httpx.get(self.base + path, params=params, headers=headers, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def head(self) -> int:
        """The event store's last position: whatever is written moves it."""
        head: int = self.get("/health/ready")["checks"]["eventStore"]["head"]
        return head

    def totals(self) -> tuple[Decimal, int]:
        """Every customer's sum and event count, once every projection has caught up."""
        deadline = time.monotonic() + 30
        while True:
            checks = self.get("/health/ready")["checks"]
            lags = [c["lagEvents"] for name, c in checks.items() if name.startswith("projection:")]
            if max(lags) == 0:
                break
            assert time.monotonic() < deadline, checks
            time.sleep(0.05)
        total, count = Decimal(0), 0
        for n in range(CUSTOMERS):
            for counter in self.get("/v1/usage/current", customerRef=f"cus_{n}")["counters"]:
                total += Decimal(counter["sum"])
                count += counter["count"]
        return total, count


@dataclass
class Served:
    """One ``stripemeter serve`` for the module, on one backend."""

    base: str
    settings: Settings
    env: dict[str, str]  # the client's environment, without the address and the key


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """``stripemeter serve`` started once per backend for the module's tests (each test has
    a tenant of its own, see ``service``): starting it is most of a small test's time."""
    data_dir = tmp_path_factory.mktemp("import") / "data"
    settings = Settings(data_dir=data_dir)
    if request.param == "postgres":
        database: PostgresSettings = request.getfixturevalue("postgres_database")
        reset_postgres(database)
        settings = Settings(data_dir=data_dir, postgres=database)
    open_stores(settings).close()  # the schema, before two processes race to make it
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRIPEMETER_")}
    env |= {
        "STRIPEMETER_DATA_DIR": str(settings.data_dir),
        "STRIPEMETER_PORT": str(port),
        "STRIPEMETER_EMULATOR_PORT": "0",
        "STRIPEMETER_LOG_LEVEL": "WARNING",
    }
    if settings.postgres is not None:
        db = settings.postgres
        env["STRIPEMETER_DATABASE_URL"] = (
            f"postgresql://{db.user}:{db.password}@{db.host}:{db.port}/{db.dbname}"
        )
        # No Stripe key here: its embedded worker pushes to the built-in emulator, on purpose.
        env["STRIPEMETER_STRIPE_EMULATOR"] = "true"
    log_path = data_dir.parent / "serve.log"
    log = log_path.open("w")
    process = subprocess.Popen(
        [*CLI, "serve"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        client_env = {k: v for k, v in env.items() if not k.startswith("STRIPEMETER_")}
        yield Served(base, settings, client_env | {"STRIPEMETER_API_URL": base})
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@pytest.fixture
def service(served: Served, request: pytest.FixtureRequest) -> Service:
    """The module's service, with a tenant (and its key) that no other test uses: its
    counters and duplicates are this test's alone."""
    stores = open_stores(served.settings)
    try:
        slug = f"t{uuid.uuid4().hex[:12]}"
        tenant = stores.app.register_tenant(slug, request.node.name[:60]).id
        stores.app.declare_metric(tenant, MetricDefinition("api_calls", Aggregation.SUM))
        key = stores.app.issue_api_key(tenant, frozenset({Scope.INGEST, Scope.READ})).secret
        admin_key = stores.app.issue_api_key(tenant, frozenset({Scope.ADMIN})).secret
    finally:
        stores.close()
    return Service(served.base, key, served.env | {"STRIPEMETER_API_KEY": key}, admin_key)


def stripemeter_import(
    service: Service, *args: str | Path, stdin: bytes | None = None
) -> tuple[int, dict[str, Any] | None, str]:
    done = subprocess.run(
        [*CLI, "import", *map(str, args)],
        env=service.env,
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        timeout=180,
        check=False,
    )
    out = done.stdout.decode()
    return done.returncode, json.loads(out) if out.strip() else None, done.stderr.decode()


def history(rows: int, start: int = 0) -> list[dict[str, Any]]:
    """``rows`` distinct events of the last minutes: every third keyed, the others not
    (the service derives their keys from their content, ``ts`` included)."""
    now = datetime.now(UTC) - timedelta(seconds=1)
    events = []
    for n in range(start, start + rows):
        event: dict[str, Any] = {
            "customerRef": f"cus_{n % CUSTOMERS}",
            "metric": "api_calls",
            "quantity": str(n % 7 + 1),
            "ts": (now - timedelta(microseconds=n * 997)).isoformat().replace("+00:00", "Z"),
        }
        if n % 3 == 0:
            event["idempotencyKey"] = f"row-{n}"
        events.append(event)
    return events


def write_csv(path: Path, events: list[dict[str, Any]]) -> Path:
    lines = ["customerRef,metric,quantity,ts,idempotencyKey,meta"]
    for e in events:
        meta = '"{""source"":""csv""}"' if "idempotencyKey" in e else ""
        cells = (e["customerRef"], e["metric"], e["quantity"], e["ts"], e.get("idempotencyKey"))
        lines.append(",".join(c or "" for c in cells) + f",{meta}")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_jsonl(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def errors_in(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def expected(events: list[dict[str, Any]]) -> tuple[Decimal, int]:
    return sum((Decimal(e["quantity"]) for e in events), Decimal(0)), len(events)


def test_csv_and_jsonl_count_once_and_an_import_run_again_is_all_duplicates(
    service: Service, tmp_path: Path
) -> None:
    csv_rows, jsonl_rows = history(1_500), history(700, start=1_500)
    csv_file = write_csv(tmp_path / "history.csv", csv_rows)
    jsonl_file = write_jsonl(tmp_path / "history.jsonl", jsonl_rows)

    code, out, err = stripemeter_import(service, csv_file, "--batch-size", "400")
    assert code == 0, err
    assert out is not None and (out["rowsRead"], out["accepted"]) == (1_500, 1_500)
    code, out, err = stripemeter_import(service, jsonl_file)
    assert code == 0, err
    assert out is not None and (out["rowsRead"], out["accepted"]) == (700, 700)
    assert "rows/s" in err and "imported 700 rows" in err
    assert not (tmp_path / "history.csv.checkpoint").exists()  # done: nothing to resume
    total = expected(csv_rows + jsonl_rows)
    assert service.totals() == total

    # The same files again, cut into other batches: every row is a duplicate.
    for file in (csv_file, jsonl_file):
        code, out, err = stripemeter_import(service, file, "--batch-size", "333")
        assert code == 0, err
        assert out is not None and out["accepted"] == 0
        assert out["duplicates"] == out["rowsRead"] > 0
    assert service.totals() == total


def test_rows_not_counted_go_to_the_errors_file_and_a_dry_run_writes_nothing(
    service: Service, tmp_path: Path
) -> None:
    good = history(4)
    now = good[0]["ts"]
    old = (datetime.now(UTC) - timedelta(days=60)).isoformat()
    lines = [
        "customerRef,metric,quantity,ts,idempotencyKey,meta",
        f"cus_0,api_calls,{good[0]['quantity']},{good[0]['ts']},,",
        f"cus_1,api_calls,abc,{now},,",  # row 2: not a number
        f"cus_1,nope,1,{now},,",  # row 3: no such metric (the writer decides)
        f"cus_1,api_calls,1,{old},,",  # row 4: older than the ingest horizon
        f"cus_1,api_calls,1,{now},,{{broken",  # row 5: meta is not JSON
        f"cus_1,api_calls,1,{now},,,surplus",  # row 6: a cell too many
        f"cus_2,api_calls,{good[2]['quantity']},{good[2]['ts']},k-2,",
        f"cus_2,api_calls,99,{good[2]['ts']},k-2,",  # row 8: same key, other content
    ]
    file = tmp_path / "mixed.csv"
    file.write_text("\n".join(lines) + "\n")
    head = service.head()

    code, out, err = stripemeter_import(service, file, "--dry-run")
    assert code == 1, err
    assert out is not None and out["dryRun"] and (out["valid"], out["rejected"]) == (5, 3)
    assert service.head() == head  # nothing written
    checked = errors_in(tmp_path / "mixed.csv.dry-run.errors.jsonl")
    assert [(e["row"], e["field"]) for e in checked] == [(2, "quantity"), (5, "meta"), (6, "row")]
    assert not (tmp_path / "mixed.csv.checkpoint").exists()

    code, out, err = stripemeter_import(service, file)
    assert code == 1, err
    assert out is not None
    assert (out["accepted"], out["conflicts"], out["rejected"]) == (2, 1, 5)
    assert "5 rejected (listed in" in err
    entries = errors_in(tmp_path / "mixed.csv.errors.jsonl")
    found = {e["row"]: (e["status"], e["field"], e["reason"]) for e in entries}
    assert found.keys() == {2, 3, 4, 5, 6, 8}
    assert found[2][:2] == ("error", "quantity")
    assert found[3] == ("error", "metric", "metric 'nope' is not declared")
    assert found[4][:2] == ("error", "ts") and "ingest horizon" in found[4][2]
    assert found[5][:2] == ("error", "meta") and "not JSON" in found[5][2]
    assert found[6] == ("error", "row", "has 7 cells where the header has 6")
    assert found[8][:2] == ("conflict", "idempotencyKey")
    assert entries[0]["input"]["quantity"] == "abc" and entries[0]["line"] == 3
    assert service.totals() == (Decimal(good[0]["quantity"]) + Decimal(good[2]["quantity"]), 2)


def test_stdin_imports_once_but_cannot_resume(service: Service, tmp_path: Path) -> None:
    events = history(300)
    data = write_jsonl(tmp_path / "h.jsonl", events).read_bytes()
    code, out, err = stripemeter_import(service, "-", "--format", "jsonl", stdin=data)
    assert code == 0, err
    assert out is not None and out["accepted"] == 300
    code, out, err = stripemeter_import(service, "-", "--format", "jsonl", stdin=data)
    assert code == 0 and out is not None and out["duplicates"] == 300
    assert service.totals() == expected(events)

    code, out, err = stripemeter_import(
        service, "-", "--format", "jsonl", "--checkpoint", tmp_path / "c", stdin=data
    )
    assert (code, out) == (2, None) and "stdin cannot be resumed" in err
    code, out, err = stripemeter_import(service, "-", stdin=data)
    assert (code, out) == (2, None) and "--format" in err


def _start(service: Service, *args: str | Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*CLI, "import", *map(str, args)],
        env=service.env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _when_checkpointed(process: subprocess.Popen[bytes], checkpoint: Path, past: int) -> int:
    """Wait until the running import's checkpoint is past byte ``past``; its offset."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "the import ended before it could be interrupted"
        try:
            offset: int = json.loads(checkpoint.read_bytes())["offset"]
        except (FileNotFoundError, ValueError):
            offset = 0
        if offset > past:
            return offset
        time.sleep(0.005)
    raise AssertionError("no checkpoint")


def test_an_import_killed_or_interrupted_resumes_and_counts_every_row_once(
    service: Service, tmp_path: Path
) -> None:
    events = history(30_000)
    file = write_csv(tmp_path / "big.csv", events)
    checkpoint = tmp_path / "big.csv.checkpoint"
    size = file.stat().st_size

    # 1. A crash: SIGKILL mid-file. The checkpoint stands where the last answered batch ended.
    process = _start(service, file, "--batch-size", "100")
    _when_checkpointed(process, checkpoint, 0)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=10)
    killed_at = json.loads(checkpoint.read_bytes())
    assert 0 < killed_at["offset"] < size

    # 2. Run again, two requests at a time: it resumes there, and Ctrl-C stops it after
    # the batches in flight, each recorded in file order.
    process = _start(service, file, "--batch-size", "100", "--in-flight", "2")
    _when_checkpointed(process, checkpoint, killed_at["offset"])
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    out = json.loads(stdout)
    assert out["resumedFrom"] == {"row": killed_at["rows"], "offset": killed_at["offset"]}
    assert not out["complete"] and b"stopping after the batches in flight" in stderr
    stopped_at = json.loads(checkpoint.read_bytes())
    assert stopped_at["rows"] == killed_at["rows"] + out["rowsRead"]
    assert killed_at["offset"] < stopped_at["offset"] < size

    # 3. And again, to the end: every row counted exactly once over the three runs.
    code, out, err = stripemeter_import(service, file, "--batch-size", "100")
    assert code == 0, err
    assert out is not None and out["complete"]
    assert out["resumedFrom"]["row"] == stopped_at["rows"]
    assert out["wholeFile"]["rows"] == 30_000 and out["wholeFile"]["rejected"] == 0
    assert not checkpoint.exists()
    assert service.totals() == expected(events)


def test_history_older_than_the_horizon_imports_into_its_own_period_with_an_admin_key(
    service: Service, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    # A calendar month some 100 days back: older than the default 35-day horizon.
    month = (now - timedelta(days=100)).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    stamp = "%Y-%m-%dT%H:%M:%SZ"
    old = [
        {
            "customerRef": "cus_0",
            "metric": "api_calls",
            "quantity": str(n),
            "ts": (month + timedelta(days=n, hours=3)).strftime(stamp),
        }
        for n in range(1, 5)
    ]
    live_at = now - timedelta(minutes=1)
    recent = {
        "customerRef": "cus_0",
        "metric": "api_calls",
        "quantity": "7",
        "ts": live_at.strftime(stamp),
        "idempotencyKey": "recent-0",
    }
    file = write_jsonl(tmp_path / "old.jsonl", [*old, recent])

    # Without --history the horizon refuses the old rows, as it always did.
    code, out, err = stripemeter_import(service, file)
    assert code == 1, err
    assert out is not None and (out["accepted"], out["rejected"], out["history"]) == (1, 4, 0)
    assert {e["field"] for e in errors_in(tmp_path / "old.jsonl.errors.jsonl")} == {"ts"}

    # History needs the admin scope: the service refuses the ingest key whole.
    code, out, err = stripemeter_import(service, file, "--history")
    assert code == 3, err
    assert "403" in err and "'admin' scope" in err

    admin_env = {**service.env, "STRIPEMETER_API_KEY": service.admin_key}
    admin = Service(service.base, service.admin_key, admin_env)
    code, out, err = stripemeter_import(admin, file, "--history")
    assert code == 0, err
    assert out is not None
    assert (out["accepted"], out["history"], out["duplicates"]) == (4, 4, 1)
    assert "(4 as history)" in err
    metrics = httpx.get(f"{service.base}/metrics", timeout=10).text
    assert "stripemeter_history_events_total 4.0" in metrics
    assert 'stripemeter_late_events_total{kind="history"}' not in metrics
    # Again: nothing counted twice.
    code, out, err = stripemeter_import(admin, file, "--history")
    assert code == 0, err
    assert out is not None and (out["accepted"], out["duplicates"]) == (0, 5)

    service.totals()  # every projection caught up
    audit = admin.get(
        "/v1/audit/invoice", customerRef="cus_0", metric="api_calls", period=f"{month:%Y-%m}"
    )
    assert audit["history"] is True
    assert audit["counter"]["count"] == 4 and Decimal(audit["counter"]["sum"]) == 10
    assert audit["closing"]["verdict"] == "history"
    assert audit["pushes"] == [] and len(audit["unpushedEvents"]) == 4
    assert "imported history" in audit["notBilledReason"]
    # The row inside the horizon, flagged all the same, was ordinary usage: counted live.
    live = admin.get(
        "/v1/audit/invoice", customerRef="cus_0", metric="api_calls", period=f"{live_at:%Y-%m}"
    )
    assert live["history"] is False and live["counter"]["count"] == 1
