"""The untimed setup of ``benchmarks.reconcile``: customers pushed once, then drift planted.

With the emulator's rate limit off, on a fresh database: a tenant,
one ``sum`` metric mapped to an emulator meter, N customers each mapped to a
Stripe customer of the emulator, a few usage events each in the current period
(``record_usage``, 1,000-event batches), the projections caught up, and every
period pushed once (``PushService.push``), so Stripe holds every total. Then
about 1 % of the customers drift on purpose, in three known ways: a meter
event sent to Stripe behind StripeMeter's back (drift, "outside"), the
confirmed push cancelled in Stripe (drift, "missing"), and extra usage that is
not pushed yet (pending, "unpushed").
"""

from __future__ import annotations

import argparse
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import httpx

from adapters.stripe_gateway import SdkStripeGateway
from benchmarks.emulator import API_KEY
from benchmarks.report import log
from domain.stripe_port import MeterEventRequest

METRIC = "api_calls"
OUTSIDE = "events sent to Stripe outside StripeMeter"
MISSING = "Stripe lacks confirmed pushes (lost, or cancelled in Stripe)"
UNPUSHED = "events after the last push"

Line = tuple[str, str, int, int | None]  # what a report line says: status, cause, local, stripe


class CountingGateway(SdkStripeGateway):
    """The SDK gateway, counting the calls it makes and when each started and ended.

    A call is one gateway method call; the SDK may send it more than once
    (its retries of 429s), which the emulator counts as ``rate_limited``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.summaries: list[tuple[float, float]] = []  # (start, end) perf_counter
            self.sends = 0

    def meter_total(
        self, meter_id: str, stripe_customer_id: str, start: Any, end: Any, *, retry: bool = True
    ) -> int:
        began = time.perf_counter()
        try:
            return super().meter_total(meter_id, stripe_customer_id, start, end, retry=retry)
        finally:
            ended = time.perf_counter()
            with self._lock:
                self.summaries.append((began, ended))

    def send_meter_event(self, request: MeterEventRequest) -> None:
        with self._lock:
            self.sends += 1
        super().send_meter_event(request)


@dataclass(frozen=True)
class Planted:
    tenant: UUID
    refs: list[str]
    expected: dict[str, Line]  # what each customer's line must say once drift is planted
    planted: dict[str, str]  # {customer ref: how it was made to drift}
    seconds: float  # the setup's wall time


def set_up(
    args: argparse.Namespace,
    app: Any,
    catch_up: Callable[[], object],
    gateway: CountingGateway,
    url: str,
) -> Planted:
    """Tenant, metric, N mapped customers with usage, every period pushed once, then drift."""
    from domain.mappings import MeterMapping
    from domain.meters import Aggregation, MetricDefinition
    from domain.pushing import PushOutcome, PushService, Target
    from domain.usage import usage_period_id

    setup_started = time.perf_counter()
    tenant = app.register_tenant("bench", "Bench").id
    app.declare_metric(tenant, MetricDefinition(METRIC, Aggregation.SUM))
    meter = gateway.create_meter(METRIC, METRIC, "sum")
    app.map_meter(tenant, MeterMapping(METRIC, meter.id, meter.event_name, meter.formula))

    refs = [f"c{n:05d}" for n in range(args.customers)]
    log(f"creating and mapping {args.customers} Stripe customers (rate limit off)")
    stripe_ids: dict[str, str] = {}
    with httpx.Client(base_url=url, auth=(API_KEY, ""), timeout=30) as http:
        for ref in refs:
            response = http.post("/v1/customers", data={"name": ref})
            response.raise_for_status()
            stripe_ids[ref] = response.json()["id"]
            app.map_customer(tenant, ref, stripe_ids[ref], None)

    rng = random.Random(11)
    now = datetime.now(UTC)
    local: dict[str, int] = dict.fromkeys(refs, 0)
    log(f"recording {args.events} events per customer")
    _record(app, tenant, [ref for ref in refs for _ in range(args.events)], now, rng, local, "e")
    catch_up()

    log(f"pushing {args.customers} periods (setup only)")
    pusher = PushService(app, {Target.LIVE: gateway})
    period_ids = {
        ref: usage_period_id(tenant, ref, METRIC, app.period_for(tenant, ref, now).key)
        for ref in refs
    }
    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = Counter(pool.map(pusher.push, period_ids.values()))
    if outcomes != Counter({PushOutcome.CONFIRMED: args.customers}):
        raise SystemExit(f"setup push failed: {dict(outcomes)}")

    log("planting drift")
    expected, planted = _plant(args, app, tenant, refs, stripe_ids, local, rng, url, now)
    catch_up()
    setup_s = time.perf_counter() - setup_started
    log(f"setup done in {setup_s:.0f} s; planted {dict(Counter(planted.values()))}")

    return Planted(tenant, refs, expected, planted, setup_s)


def _record(
    app: Any,
    tenant: UUID,
    customers: list[str],
    moment: datetime,
    rng: random.Random,
    local: dict[str, int],
    prefix: str,
) -> None:
    """``record_usage`` in 1,000-event batches, one event per entry of ``customers``."""
    from domain.idempotency import fingerprint
    from domain.ingest import UsageSubmission

    for offset in range(0, len(customers), 1_000):
        batch = []
        for n, customer in enumerate(customers[offset : offset + 1_000], offset):
            quantity = Decimal(rng.randint(1, 5))
            local[customer] += int(quantity)
            batch.append(
                UsageSubmission(
                    tenant, METRIC, customer, quantity, moment, f"{prefix}{n}",
                    fingerprint(METRIC, customer, quantity, moment, "{}"), "{}",
                )
            )  # fmt: skip
        results = app.usage.record_usage(batch)
        refused = [r for r in results if r.outcome.value != "accepted"]
        if refused:
            raise SystemExit(f"record_usage refused {len(refused)} events: {refused[0]}")


def _plant(
    args: argparse.Namespace,
    app: Any,
    tenant: UUID,
    refs: list[str],
    stripe_ids: dict[str, str],
    local: dict[str, int],
    rng: random.Random,
    url: str,
    now: datetime,
) -> tuple[dict[str, Line], dict[str, str]]:
    """Make some customers drift in known ways; what each line must then say:
    {ref: (status, cause, local, stripe)}, and {ref: kind} of the planted ones."""
    count = max(3, round(args.customers * args.drift))
    chosen = rng.sample(refs, count)
    missing = chosen[: max(1, count // 5)]
    outside = chosen[len(missing) : len(missing) + (count - len(missing)) // 2]
    unpushed = chosen[len(missing) + len(outside) :]
    stripe = dict(local)  # every period was pushed once: Stripe holds every total
    with httpx.Client(base_url=url, auth=(API_KEY, ""), timeout=30) as http:
        for ref in outside:
            value = rng.randint(1, 9)
            response = http.post(
                "/v1/billing/meter_events",
                data={
                    "event_name": METRIC,
                    "payload[stripe_customer_id]": stripe_ids[ref],
                    "payload[value]": str(value),
                },
            )
            response.raise_for_status()
            stripe[ref] += value
        for ref in missing:
            events = http.get("/_emulator/meter_events", params={"customer": stripe_ids[ref]})
            [event] = events.json()["data"]
            response = http.post(
                "/v1/billing/meter_event_adjustments",
                data={
                    "event_name": METRIC,
                    "type": "cancel",
                    "cancel[identifier]": event["identifier"],
                },
            )
            response.raise_for_status()
            stripe[ref] = 0
    _record(app, tenant, unpushed, now, rng, local, "extra")
    expected: dict[str, Line] = {ref: ("ok", "", local[ref], stripe[ref]) for ref in refs}
    planted: dict[str, str] = {}
    for kind, group, status, cause in (
        ("outside", outside, "drift", OUTSIDE),
        ("missing", missing, "drift", MISSING),
        ("unpushed", unpushed, "pending", UNPUSHED),
    ):
        for ref in group:
            expected[ref] = (status, cause, local[ref], stripe[ref])
            planted[ref] = kind
    return expected, planted
