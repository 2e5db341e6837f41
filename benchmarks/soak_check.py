"""The soak's verdict: Stripe's totals, our counters and the acknowledged events agree.

Three numbers, which must agree:

- *truth*: what the events the service acknowledged make, per customer ×
  metric × period (``Truth.expected``);
- *counter*: ``GET /v1/usage/current`` for each of those periods;
- *Stripe*: the emulator's total for the customer and the metric's meter,
  read from ``/_emulator/totals`` (every live meter event, no summary lag),
  against the counters of all periods (``per_meter``).

``settle`` waits until the worker has pushed everything (or times out);
``reconcile`` runs ``stripemeter reconcile`` for the tenant, every period
within Stripe's 35 days, without repair: a repair would hide the drift that
the soak is looking for.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from benchmarks.emulator import emulator_second, requests_since
from benchmarks.processes import BIN, ROOT
from benchmarks.report import log
from benchmarks.service import Service
from benchmarks.soak_load import METRICS, Truth


@dataclass
class Parity:
    lines: int = 0  # customer × metric × period
    meters: int = 0  # customer × metric (Stripe's totals are per customer and meter)
    counter_vs_truth: list[str] = field(default_factory=list)
    stripe_vs_counter: list[str] = field(default_factory=list)
    reconciliation: Counter[str] = field(default_factory=Counter)
    reconciliation_problems: list[str] = field(default_factory=list)
    settle_s: float = 0.0
    # What the emulator was asked during the verdict's run, by route (``requests_since``).
    reconcile_traffic: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not (
            self.counter_vs_truth or self.stripe_vs_counter or self.reconciliation_problems
        ) and set(self.reconciliation) == {"ok"}


def counters(svc: Service, truth: Truth) -> dict[tuple[str, str, str], int]:
    """{(customer, metric, period): counter} for every customer and period the events touch."""
    found: dict[tuple[str, str, str], int] = {}
    touched = {(customer, period) for customer, _, period in truth.expected()}
    for customer, period in sorted(touched):
        params = {"customerRef": customer, "period": period}
        response = svc.client.get("/v1/usage/current", params=params)
        response.raise_for_status()
        for counter in response.json()["counters"]:
            found[(customer, counter["metric"], counter["period"])] = int(float(counter["value"]))
    return found


def per_meter(local: dict[tuple[str, str, str], int]) -> dict[tuple[str, str], int]:
    """What Stripe's all-time total per customer and meter must be: the periods' deltas
    summed on a ``sum`` meter, the latest period's value on a ``last`` meter (``max``)."""
    totals: dict[tuple[str, str], int] = {}
    for (customer, metric, _), value in sorted(local.items()):  # periods in order
        key = (customer, metric)
        totals[key] = value if METRICS[metric] == "max" else totals.get(key, 0) + value
    return totals


def stripe_totals(emulator: str, svc: Service) -> dict[tuple[str, str], int]:
    """{(customer, metric): Stripe's total}, through the tenant's customer and meter mappings."""
    customers = {
        row["stripeCustomerId"]: row["customerRef"] for row in _pages(svc, "/v1/customers")
    }
    mappings = svc.client.get("/v1/mappings").json()["data"]
    meters = {m["stripeMeterId"]: m["metric"] for m in mappings}
    rows = httpx.get(f"{emulator}/_emulator/totals", timeout=60).json()["data"]
    return {
        (customers[row["customer"]], meters[row["meter"]]): int(row["value"])
        for row in rows
        if row["customer"] in customers and row["meter"] in meters
    }


def _pages(svc: Service, path: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
        body = svc.client.get(path, params=params).json()
        rows += body["data"]
        cursor = body.get("nextCursor")
        if not cursor:
            return rows


def settle(svc: Service, emulator: str, truth: Truth, timeout: float) -> float:
    """Wait until the counters hold the truth and Stripe holds the counters; the seconds it
    took (the full ``timeout`` when it never did: ``compare`` then says where)."""
    started = time.monotonic()
    expected = truth.expected()
    while time.monotonic() - started < timeout:
        try:
            svc.wait_caught_up(timeout=timeout)
            local = counters(svc, truth)
            if local == expected and stripe_totals(emulator, svc) == per_meter(local):
                return time.monotonic() - started
        except (httpx.HTTPError, RuntimeError) as error:
            log(f"soak: still settling ({error})")
        time.sleep(2)
    return time.monotonic() - started


def compare(svc: Service, emulator: str, truth: Truth, parity: Parity) -> None:
    """Per customer × metric × period, counter against truth; per customer × meter, Stripe's
    total against what the counters make."""
    expected = truth.expected()
    local = counters(svc, truth)
    parity.lines = len(expected)
    for key in sorted(set(expected) | set(local)):
        if expected.get(key) != local.get(key):
            parity.counter_vs_truth.append(
                f"{key}: counter {local.get(key)}, acknowledged events {expected.get(key)}"
            )
    stripe = stripe_totals(emulator, svc)
    ours = per_meter(local)
    parity.meters = len(ours)
    for pair in sorted(set(ours) | set(stripe)):
        if ours.get(pair) != stripe.get(pair):
            parity.stripe_vs_counter.append(
                f"{pair}: Stripe {stripe.get(pair)}, counters {ours.get(pair)}"
            )


def reconcile(env: dict[str, str], emulator: str, tenant: str, parity: Parity) -> None:
    """``stripemeter reconcile --tenant`` over every recent period, once: each line must be ``ok``.

    One run of the product is the verdict, while the worker still runs (its
    scheduled reconciliation and pushes share the emulator's limit, as they
    share an account's): a line Stripe could not be read for, after the run's
    own paced retries, is the product's failure, not retried here.
    ``parity.reconcile_traffic`` says what the emulator saw meanwhile."""
    since = emulator_second(emulator)
    _reconcile_once(env, tenant, parity)
    traffic = requests_since(emulator, since)
    parity.reconcile_traffic = traffic
    log(
        f"soak: reconciliation: {dict(parity.reconciliation)}; the emulator saw at most"
        f" {traffic['peak_per_s']} requests/s, 429 x {traffic['429']}, {traffic['routes']}"
    )


def _reconcile_once(env: dict[str, str], tenant: str, parity: Parity) -> None:
    done = subprocess.run(
        [str(BIN / "stripemeter"), "reconcile", "--tenant", tenant],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    try:
        reports = json.loads(done.stdout)["data"]
    except (ValueError, KeyError):
        parity.reconciliation_problems.append(
            f"stripemeter reconcile exited {done.returncode}: {done.stderr.strip()[-500:]}"
        )
        return
    for report in reports:
        for line in report["lines"]:
            parity.reconciliation[line["status"]] += 1
            if line["status"] != "ok":
                parity.reconciliation_problems.append(
                    f"{line['customerRef']} {line['metric']} {line['period']}: {line['status']}"
                    f" {line.get('cause', '')} (local {line['local']}, Stripe {line['stripe']})"
                )
    if done.returncode != 0:
        parity.reconciliation_problems.append(f"stripemeter reconcile exited {done.returncode}")
