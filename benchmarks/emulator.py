"""The Stripe emulator as a process of its own, beside a fresh database, for the Stripe benchmarks.

``benchmarks.push`` and ``benchmarks.reconcile`` talk to it over HTTP as the
service does to Stripe, at its rate limit; its ``/_emulator`` endpoint tells
what it stored and what it refused.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import httpx

from benchmarks.databases import fresh_database
from benchmarks.processes import BIN, ROOT, free_port

API_KEY = "sk_test_bench"


@contextmanager
def emulator_and_database(backend: str, *emulator_args: str) -> Iterator[tuple[str, int]]:
    """An emulator in its own process and a fresh database for the product's settings.

    Yields the emulator's URL and process id; both are gone afterwards.
    """
    with emulator_process(*emulator_args) as (url, pid), fresh_database(backend) as db_env:
        for name in [k for k in os.environ if k.startswith("STRIPEMETER_")]:
            del os.environ[name]
        os.environ.update(db_env)
        yield url, pid


@contextmanager
def emulator_process(
    *emulator_args: str, output: IO[bytes] | None = None
) -> Iterator[tuple[str, int]]:
    """The emulator in a process of its own: its URL and process id; gone afterwards.
    ``output`` takes its stdout and stderr (default: this process's)."""
    port = free_port()
    emulator = subprocess.Popen(
        [
            *(str(BIN / "python"), "-m", "stripe_emulator", "--port", str(port)),
            *("--log-level", "warning", *emulator_args),
        ],
        cwd=ROOT,
        stdout=output,
        stderr=None if output is None else subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_started(url)
        yield url, emulator.pid
    finally:
        emulator.terminate()
        emulator.wait(timeout=30)


def _wait_started(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/_emulator", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit("the emulator did not start")


def meter_event_calls(url: str) -> dict[str, int]:
    """Requests the meter-event endpoints received, by path (v1 calls, v2 sessions, stream)."""
    state = httpx.get(f"{url}/_emulator", timeout=30).json()
    return {path: int(n) for path, n in state.get("meter_event_calls", {}).items()}


def emulator_counts(url: str) -> tuple[int, int]:
    """Meter events Stripe stored, and requests it refused with 429 (any endpoint)."""
    state = httpx.get(f"{url}/_emulator", timeout=30).json()
    return int(state["counts"]["meter_events"]), int(state["rate_limited"])


def emulator_second(url: str) -> int:
    """The emulator's current rate-limit window (see ``requests_since``)."""
    return int(httpx.get(f"{url}/_emulator/requests?since=0", timeout=30).json()["now"])


def requests_since(url: str, since: int) -> dict[str, Any]:
    """What the emulator was asked from window ``since`` on, measured on its side: per
    route the requests and 429s, and the busiest second overall and per route."""
    rows = httpx.get(f"{url}/_emulator/requests?since={since}", timeout=30).json()["data"]
    per_second: Counter[int] = Counter()
    routes: dict[str, dict[str, int]] = {}
    for row in rows:
        per_second[row["second"]] += row["count"]
        route = routes.setdefault(row["route"], {"requests": 0, "429": 0, "peak_per_s": 0})
        route["requests"] += row["count"]
        route["429"] += row["limited"]
        route["peak_per_s"] = max(route["peak_per_s"], row["count"])
    return {
        "seconds": len(per_second),
        "peak_per_s": max(per_second.values(), default=0),
        "429": sum(r["429"] for r in routes.values()),
        "routes": dict(sorted(routes.items(), key=lambda kv: -kv[1]["requests"])),
    }
