"""What the service says about itself under load: projection lag and group-commit batches."""

from __future__ import annotations

import re
import statistics
import threading
import time
from typing import Any

import httpx

from benchmarks.service import Service


class LagSampler:
    """Samples the projection lag from /health/ready every ``interval`` seconds, in a thread."""

    def __init__(self, svc: Service, interval: float = 0.1) -> None:
        self.svc = svc
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self.probe_ms: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lag-sampler", daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.svc.url, timeout=10) as client:
            started = time.perf_counter()
            while not self._stop.is_set():
                tick = time.perf_counter()
                try:
                    checks = client.get("/health/ready").json()["checks"]
                    lag = max(
                        (c["lagEvents"] for n, c in checks.items() if n.startswith("projection:")),
                        default=0,
                    )
                    self.samples.append((tick - started, lag))
                    self.probe_ms.append((time.perf_counter() - tick) * 1000)
                except (httpx.HTTPError, ValueError, KeyError):
                    self.failures += 1
                self._stop.wait(max(0.0, self.interval - (time.perf_counter() - tick)))

    def __enter__(self) -> LagSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def summary(self) -> dict[str, Any]:
        lags = sorted(lag for _, lag in self.samples)
        if not lags:
            return {"samples": 0, "failures": self.failures}
        return {
            "samples": len(lags),
            "failures": self.failures,
            "p50": percentile(lags, 50),
            "p95": percentile(lags, 95),
            "max": lags[-1],
            "mean": round(statistics.fmean(lags), 1),
            "probe_ms_p50": round(percentile(sorted(self.probe_ms), 50), 1),
            "probe_ms_max": round(max(self.probe_ms), 1),
        }


def percentile(ordered: list[float] | list[int], pct: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def commit_stats(
    before: dict[str, float],
    after: dict[str, float],
    transactions: tuple[int | None, int | None] = (None, None),
) -> dict[str, Any]:
    """Group-commit batches during a run.

    With the writer process (both topologies) the API processes observe the
    ``stripemeter_group_commit_*`` histograms once per *request*, with the size
    and duration of the commit that request rode in: their count is requests,
    not commits, and their means are request-weighted (a commit of 50 events
    answering 50 requests counts 50 times). The true number of commits comes
    from the database on PostgreSQL (``transactions``: distinct inserting
    transactions in the event store before and after); on SQLite it is unknown.
    """

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    observed = delta("stripemeter_group_commit_batch_events_count")
    events = delta("stripemeter_group_commit_batch_events_sum")
    seconds = delta("stripemeter_group_commit_seconds_sum")
    accepted = outcomes(after).get("accepted", 0) - outcomes(before).get("accepted", 0)
    commits = None
    if transactions[0] is not None and transactions[1] is not None:
        commits = transactions[1] - transactions[0]
    return {
        "commits": commits,
        "mean_events_per_commit": round(accepted / commits, 1) if commits else None,
        "observations": int(observed),
        "request_weighted_events_per_commit": round(events / observed, 1) if observed else 0,
        "request_weighted_commit_ms": round(seconds / observed * 1000, 2) if observed else 0,
    }


def outcomes(samples: dict[str, float]) -> dict[str, int]:
    found = {}
    for name, value in samples.items():
        m = re.match(r'stripemeter_ingest_events_total\{outcome="(\w+)"\}', name)
        if m:
            found[m.group(1)] = int(value)
    return found
