"""The cost projection for 10,000 customers with a Stripe price: the endpoint's latency.

    .venv/bin/python -m benchmarks.projection --backend postgres [--customers 10000]
        [--clients 8] [--seconds 15]

Setup (not timed): the Stripe emulator in a process of its own (rate limit
off) as "Stripe", and ``stripemeter serve`` (embedded topology, a fresh
database) pointed at it with ``STRIPE_SECRET_KEY``. Over HTTP, as an
integrator would: the metric mapped to a new meter, one metered price on it
(0.5 cents a unit), N Stripe customers each subscribed to it and mapped
(through the application: ``POST /v1/customers`` checks and claims each one
against Stripe, ~0.1 s apiece), one usage event per customer over HTTP, the
projections caught up.

Timed, ``--clients`` concurrent keep-alive clients on ``GET
/v1/usage/projection``:

- *cold*: each customer's first projection, which reads its subscription and
  price from Stripe (``PriceBook``), for up to ``--seconds`` or until every
  customer was asked once;
- *warm*: customers already asked (prices cached, the TTL is an hour here),
  for ``--seconds``.

Every answer is checked: one line, the Stripe price, the amount Stripe would
bill the customer's quantity. The load generator runs on the same machine.
"""

from __future__ import annotations

import argparse
import random
import statistics
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import httpx

from benchmarks.emulator import API_KEY, emulator_process
from benchmarks.report import emit, log, machine
from benchmarks.service import METRIC, Service, service

UNIT_AMOUNT = Decimal("0.5")  # cents per unit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=8, help="concurrent HTTP clients")
    parser.add_argument("--seconds", type=float, default=15.0, help="per timed phase")
    args = parser.parse_args(argv)
    with emulator_process("--rate-limit", "0") as (url, _):
        stripe = {
            "STRIPE_SECRET_KEY": API_KEY,
            "STRIPE_API_BASE": url,
            "STRIPEMETER_PRICE_CACHE_SECONDS": "3600",
        }
        with service(args.backend, settings=stripe) as svc:
            quantities, setup_s = _set_up(svc, url, args.customers)
            refs = list(quantities)
            random.Random(5).shuffle(refs)
            cold = _phase("cold", svc, refs, quantities, args, stop_when_done=True)
            asked = refs[: cold["requests"]]
            warm = _phase("warm", svc, asked, quantities, args, stop_when_done=False)
    result = {
        "benchmark": "projection",
        "backend": args.backend,
        "customers": args.customers,
        "clients": args.clients,
        "setup_s": round(setup_s, 1),
        "cold": cold,
        "warm": warm,
        "passed": not cold["wrong"] and not warm["wrong"],
        "machine": machine(),
    }
    emit(result)
    return 0 if result["passed"] else 1


def _set_up(svc: Service, url: str, customers: int) -> tuple[dict[str, int], float]:
    started = time.perf_counter()
    mapping = svc.client.post("/v1/mappings", json={"metric": METRIC, "createMeter": True})
    mapping.raise_for_status()
    with httpx.Client(base_url=url, auth=(API_KEY, ""), timeout=30) as stripe:
        price = stripe.post(
            "/v1/prices",
            data={
                "currency": "usd",
                "unit_amount_decimal": str(UNIT_AMOUNT),
                "product_data[name]": METRIC,
                "recurring[interval]": "month",
                "recurring[usage_type]": "metered",
                "recurring[meter]": mapping.json()["stripeMeterId"],
            },
        )
        price.raise_for_status()
    refs = [f"c{n:05d}" for n in range(customers)]
    log(f"subscribing {customers} Stripe customers; mapping them (in-process, unchecked)")
    # POST /v1/customers checks each id against Stripe and claims it (~0.1 s each here):
    # the setup maps them through the application instead, as benchmarks.reconcile does.
    from adapters.persistence import open_stores
    from adapters.settings import Settings

    stores = open_stores(Settings.from_env(svc.env))
    tenant = stores.app.tenant_by_slug(svc.tenant).id

    def subscribe(chunk: Sequence[str]) -> None:
        with httpx.Client(base_url=url, auth=(API_KEY, ""), timeout=60) as stripe:
            for ref in chunk:
                customer = stripe.post("/v1/customers", data={"name": ref}).json()["id"]
                sub = stripe.post(
                    "/v1/subscriptions",
                    data={"customer": customer, "items[0][price]": price.json()["id"]},
                )
                sub.raise_for_status()
                anchor = datetime.fromtimestamp(sub.json()["billing_cycle_anchor"], UTC)
                stores.app.map_customer(tenant, ref, customer, anchor)

    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(subscribe, [refs[i::4] for i in range(4)]))
    finally:
        stores.close()
    rng = random.Random(7)
    quantities = {ref: rng.randint(1, 5_000) for ref in refs}
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for offset in range(0, customers, 1_000):
        events = [
            {"metric": METRIC, "customerRef": ref, "quantity": quantities[ref], "ts": now,
             "idempotencyKey": f"u-{ref}"}
            for ref in refs[offset : offset + 1_000]
        ]  # fmt: skip
        svc.client.post("/v1/events/ingest", json={"events": events}).raise_for_status()
    svc.wait_caught_up()
    setup_s = time.perf_counter() - started
    log(f"setup done in {setup_s:.0f} s")
    return quantities, setup_s


def _expected(quantity: int) -> int:
    return int((UNIT_AMOUNT * quantity).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _phase(
    name: str,
    svc: Service,
    refs: list[str],
    quantities: dict[str, int],
    args: argparse.Namespace,
    *,
    stop_when_done: bool,
) -> dict[str, Any]:
    """``--clients`` threads asking for projections of ``refs`` (in turn) for ``--seconds``."""
    lock = threading.Lock()
    next_index = [0]
    latencies: list[float] = []
    wrong: list[str] = []
    deadline = time.perf_counter() + args.seconds

    def client() -> None:
        headers = {"Authorization": f"Bearer {svc.key}"}
        with httpx.Client(base_url=svc.url, headers=headers, timeout=60) as http:
            while time.perf_counter() < deadline:
                with lock:
                    if stop_when_done and next_index[0] >= len(refs):
                        return
                    ref = refs[next_index[0] % len(refs)]
                    next_index[0] += 1
                began = time.perf_counter()
                response = http.get("/v1/usage/projection", params={"customerRef": ref})
                took = time.perf_counter() - began
                problem = _check(response, quantities[ref])
                with lock:
                    latencies.append(took)
                    if problem:
                        wrong.append(f"{ref}: {problem}")

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.clients) as pool:
        for future in [pool.submit(client) for _ in range(args.clients)]:
            future.result()
    wall = time.perf_counter() - started
    result = _summary(latencies, wall)
    result["wrong"] = wrong[:5]
    log(f"{name}: {result}")
    return result


def _check(response: httpx.Response, quantity: int) -> str | None:
    if response.status_code != 200:
        return f"{response.status_code} {response.text[:200]}"
    lines = response.json()["lines"]
    if len(lines) != 1 or lines[0]["amountSoFar"]["amount"] != _expected(quantity):
        return f"unexpected lines {lines}"
    return None


def _summary(latencies: list[float], wall: float) -> dict[str, Any]:
    ms = sorted(t * 1000 for t in latencies)
    if not ms:
        return {"requests": 0}
    cuts = statistics.quantiles(ms, n=100) if len(ms) > 1 else [ms[0]] * 99
    return {
        "requests": len(ms),
        "wall_s": round(wall, 1),
        "per_s": round(len(ms) / wall, 1),
        "p50_ms": round(cuts[49], 1),
        "p95_ms": round(cuts[94], 1),
        "p99_ms": round(cuts[98], 1),
        "max_ms": round(ms[-1], 1),
    }


if __name__ == "__main__":
    raise SystemExit(main())
