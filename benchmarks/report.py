"""How a benchmark reports: progress on stderr, the machine it ran on, one RESULT line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.processes import ROOT


def log(message: str) -> None:
    print(f"[{datetime.now(UTC).strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    commit = _git("describe", "--always", "--dirty").strip()
    status = _git("status", "--short", "--untracked-files=no").splitlines()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "mem_gib": round(mem_kb / 1024 / 1024, 1),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit,
        # Uncommitted changes outside benchmarks/ that the measured service ran with.
        "modified": [line[3:] for line in status if not line[3:].startswith("benchmarks/")],
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        "python": sys.version.split()[0],
    }


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return done.stdout


def emit(result: dict[str, Any]) -> None:
    """The machine-readable result on stdout (one JSON line)."""
    print("RESULT " + json.dumps(result, default=str), flush=True)
