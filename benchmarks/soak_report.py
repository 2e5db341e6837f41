"""What a soak reports: resident memory of each kind of process over time, and the summary.

RSS (``VmRSS``) of every process of the stack is sampled every few seconds.
Processes are killed and restarted, so a kind has several *incarnations*
(pids); its growth per hour is the least-squares slope over its
longest-lived incarnation, leaving out its first ``WARM_UP_S`` when it lived
three times as long (imports, caches and pools filling up are not a leak),
with that incarnation's span beside it: a slope over two minutes says
little about an hour.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from benchmarks.soak_stack import rss_kb

if TYPE_CHECKING:
    from benchmarks.soak_stack import Stack

WARM_UP_S = 60.0


@dataclass(frozen=True)
class Sample:
    t: float  # seconds since sampling started
    kind: str
    pid: int
    kib: int


@dataclass
class RssSampler:
    stack: Stack
    interval: float
    database_url: str
    samples: list[Sample] = field(default_factory=list)
    max_connections: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="soak-rss", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        started = time.monotonic()
        while True:
            now = time.monotonic() - started
            for pid, kind in self.stack.roles().items():
                kib = rss_kb(pid)
                if kib is not None:
                    self.samples.append(Sample(now, kind, pid, kib))
            self.max_connections = max(self.max_connections, self._connections())
            if self._stop.wait(self.interval):
                return

    def _connections(self) -> int:
        import psycopg

        dbname = self.database_url.rsplit("/", 1)[1]
        try:
            with psycopg.connect(self.database_url, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (dbname,)
                ).fetchone()
        except psycopg.Error:
            return 0
        return int(row[0]) - 1 if row else 0  # not this one


def rss_summary(samples: list[Sample]) -> dict[str, dict[str, Any]]:
    """Per kind: first, last and max RSS (MiB), incarnations, and growth per hour."""
    by_kind: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        by_kind[sample.kind].append(sample)
    summary = {}
    for kind, rows in sorted(by_kind.items()):
        by_pid: dict[int, list[Sample]] = defaultdict(list)
        for row in rows:
            by_pid[row.pid].append(row)
        longest = max(by_pid.values(), key=lambda r: r[-1].t - r[0].t)
        span_s = longest[-1].t - longest[0].t
        summary[kind] = {
            "first": _mib(rows[0].kib),
            "last": _mib(rows[-1].kib),
            "max": _mib(max(r.kib for r in rows)),
            "incarnations": len(by_pid),
            "longest_min": round(span_s / 60, 1),
            "growth_per_hour": _slope_per_hour(_warm(longest)) if span_s >= 60 else None,
        }
    return summary


def _warm(rows: list[Sample]) -> list[Sample]:
    """The samples after the warm-up, when the process lived long enough to leave it out."""
    if rows[-1].t - rows[0].t < 3 * WARM_UP_S:
        return rows
    return [r for r in rows if r.t >= rows[0].t + WARM_UP_S]


def _mib(kib: float) -> float:
    return round(kib / 1024, 1)


def _slope_per_hour(rows: list[Sample]) -> float:
    """Least-squares MiB per hour over one process's samples."""
    n = len(rows)
    mean_t = sum(r.t for r in rows) / n
    mean_k = sum(r.kib for r in rows) / n
    var = sum((r.t - mean_t) ** 2 for r in rows)
    cov = sum((r.t - mean_t) * (r.kib - mean_k) for r in rows)
    return _mib(cov / var * 3600) if var else 0.0


def print_report(result: dict[str, Any]) -> None:
    """The human-readable summary (the RESULT line has everything)."""
    traffic = result["reconcile_traffic"] or {"peak_per_s": "?", "429": "?"}
    lines = [
        f"soak: {result['minutes_run']} min, {result['customers']} customers,"
        f" metrics {', '.join(f'{m} ({a})' for m, a in result['metrics'].items())}",
        f"events sent: {_pairs(result['events_sent'])}",
        f"answers: {_pairs(result['answers'])};"
        f" acknowledged events {result['acknowledged_events']}",
        f"kills: {_pairs(result['kills'])}; restarted by the harness: "
        f"{_pairs(result['restarts_by_harness'])}",
        f"Stripe faults injected: {_pairs(result['stripe_faults_injected'])};"
        f" meter-event requests {_pairs(result['stripe_meter_event_requests'])}",
        f"settled in {result['settle_s']} s;"
        f" counter vs acknowledged events: {result['differences']['counter_vs_truth']}"
        f" differences over {result['parity_lines']} customer x metric x period;"
        f" Stripe vs counters: {result['differences']['stripe_vs_counter']} differences"
        f" over {result['parity_meters']} customer x meter",
        f"reconciliation: {_pairs(result['reconciliation'])} (one run; the emulator saw at"
        f" most {traffic['peak_per_s']} requests/s during it, 429 x {traffic['429']})",
        f"peak PostgreSQL connections: {result['max_pg_connections']}",
        "RSS (MiB)   first    last     max  incarnations  longest (min)  growth/h",
    ]
    for kind, row in result["rss_mib"].items():
        growth = "-" if row["growth_per_hour"] is None else f"{row['growth_per_hour']:+.1f}"
        lines.append(
            f"{kind:<10} {row['first']:>6} {row['last']:>7} {row['max']:>7}"
            f" {row['incarnations']:>13} {row['longest_min']:>14} {growth:>9}"
        )
    for name in (
        "counter_vs_truth",
        "stripe_vs_counter",
        "reconciliation_problems",
        "load_problems",
    ):
        lines += [f"  {name}: {item}" for item in result[name]]
    lines.append("PASSED" if result["passed"] else "FAILED")
    print("\n".join(lines), flush=True)


def _pairs(counts: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"
