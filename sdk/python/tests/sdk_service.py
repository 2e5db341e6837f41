"""The real service for the SDK's tests: the embedded default, started by the test.

A ``Service`` sets up a tenant, its metrics and keys with the CLI, then runs
``stripemeter serve`` in a session of its own, so that a test can kill the
whole process group (API process and writer process) and start it again on
the same port and data folder.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[3]
VECTORS = ROOT / "sdk" / "vectors" / "content-keys.json"
KEY_SCOPES = ("ingest,read,admin", "ingest")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Service:
    """One StripeMeter service (SQLite in ``data_dir``) on a fixed port."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "STRIPEMETER_DATA_DIR": str(data_dir),
            "STRIPEMETER_PORT": str(self.port),
            "STRIPEMETER_EMULATOR_PORT": str(free_port()),
            "STRIPEMETER_LOG_LEVEL": "WARNING",
        }
        self.env.pop("STRIPEMETER_DATABASE_URL", None)
        self.env.pop("STRIPEMETER_API_KEY", None)
        self.process: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"serve-{self.port}.log"

    def cli(self, *args: str) -> Any:
        done = subprocess.run(
            [sys.executable, "-m", "api.cli", *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return json.loads(done.stdout)

    def set_up(self) -> dict[str, str]:
        """Tenant ``acme`` with the vectors' metrics; keys by scope (one CLI process for all)."""
        commands = [
            ["tenants", "create", "acme"],
            *(
                ["meters", "create", "--tenant", "acme", "--name", name, "--aggregation", "sum"]
                for name in ("api_calls", "gb_hours")
            ),
            [
                "meters",
                "create",
                "--tenant",
                "acme",
                "--name",
                "credits",
                "--aggregation",
                "sum",
                "--allow-negative",
            ],
            # The vectors' events are from early 2026: let the tenant take them.
            ["tenants", "horizon", "--tenant", "acme", "--days", "36600"],
            *(["keys", "create", "--tenant", "acme", "--scopes", s] for s in KEY_SCOPES),
        ]
        script = (
            "import contextlib, io, json, sys\n"
            "from api.cli import main\n"
            "outputs = []\n"
            "for argv in json.loads(sys.argv[1]):\n"
            "    out = io.StringIO()\n"
            "    with contextlib.redirect_stdout(out):\n"
            "        assert main(argv) == 0, argv\n"
            "    outputs.append(json.loads(out.getvalue()))\n"
            "print(json.dumps(outputs))\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script, json.dumps(commands)],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        outputs = json.loads(done.stdout)
        keys = outputs[-len(KEY_SCOPES) :]
        return {scopes: str(k["key"]) for scopes, k in zip(KEY_SCOPES, keys, strict=True)}

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "api.cli", "serve"],
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health/live", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"the service did not start within 60 s: {self.log.read_text()}")

    def kill(self) -> None:
        """SIGKILL to the whole process group: no shutdown, no flush."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def counters(self, key: str, customer_ref: str) -> list[dict[str, Any]]:
        answer = httpx.get(
            f"{self.url}/v1/usage/current",
            params={"customerRef": customer_ref},
            headers={"Authorization": f"Bearer {key}"},
        )
        answer.raise_for_status()
        counters: list[dict[str, Any]] = answer.json()["counters"]
        return counters

    def wait_for_count(
        self, key: str, customer_ref: str, count: int, within: float = 30
    ) -> dict[str, Any]:
        """The customer's api_calls counter once it has ``count`` events (or the last seen)."""
        deadline = time.monotonic() + within
        seen: dict[str, Any] = {}
        while time.monotonic() < deadline:
            found = [c for c in self.counters(key, customer_ref) if c["metric"] == "api_calls"]
            seen = found[0] if found else {}
            if seen.get("count", 0) >= count:
                # Let the projection settle: a second look must agree.
                time.sleep(0.3)
                again = [c for c in self.counters(key, customer_ref) if c["metric"] == "api_calls"]
                return again[0]
            time.sleep(0.1)
        return seen


def now() -> datetime:
    return datetime.now(timezone.utc)
