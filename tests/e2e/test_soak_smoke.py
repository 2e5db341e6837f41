"""The soak command (benchmarks/soak.py), briefly: it runs, kills, and finds parity.

A real soak runs for 30 minutes; this one runs for half a minute of load
with a kill every few seconds, to show that the harness itself works (it
starts PostgreSQL databases, Redis, the emulator and four kinds of process,
so it takes one to two minutes and is skipped unless
``STRIPEMETER_SOAK_SMOKE=1``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        os.environ.get("STRIPEMETER_SOAK_SMOKE") != "1",
        reason="the soak smoke test runs only with STRIPEMETER_SOAK_SMOKE=1 (1-2 minutes)",
    ),
]


def test_a_short_soak_kills_processes_and_ends_in_parity() -> None:
    done = subprocess.run(
        [
            *(sys.executable, "-m", "benchmarks.soak", "--minutes", "0.5"),
            *("--customers", "10", "--rate", "20", "--kill-mean-seconds", "6"),
            *("--rss-interval", "2", "--settle-timeout", "120", "--seed", "7"),
            # Heavier than the default, so that in half a minute the calls Stripe applied
            # but did not answer (the ones a careless retry counts twice) surely happen.
            *("--fault-rate", "500=0.05,reset=0.05,timeout_after_write=0.2,partial_then_500=0.2"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stderr[-3000:]
    result = json.loads(lines[-1].removeprefix("RESULT "))
    assert done.returncode == 0, done.stdout
    assert result["passed"]
    assert sum(result["kills"].values()) >= 1
    assert result["acknowledged_events"] > 0
    assert result["parity_meters"] == 30  # 10 customers x 3 metrics, each compared
    assert result["parity_lines"] >= 30  # x the periods: one, unless a month ended meanwhile
    assert set(result["reconciliation"]) == {"ok"}
    assert {"serve", "api", "writer", "worker", "emulator"} <= set(result["rss_mib"])
