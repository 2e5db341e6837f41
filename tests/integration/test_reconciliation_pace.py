"""Reconciliation reads Stripe's summaries at its configured pace: no 429s, no SDK sleeps.

The emulator refuses requests beyond its rate limit per wall-clock second,
as Stripe does. A run paced below that limit makes no 429 and takes about
(lines / pace) seconds; the same run unpaced is refused (which shows the
limit is really there to be hit).
"""

from __future__ import annotations

import time
from decimal import Decimal

from adapters.metrics import Metrics
from adapters.reconciler import Reconciler, Scope
from domain.pacing import TokenBucket
from stripe_emulator.testing import RunningEmulator
from tests.helpers import submission
from tests.integration.test_reconciliation import NO_LAG
from tests.integration.world import World

CUSTOMERS = 60
EMULATOR_LIMIT = 25  # requests per second, Stripe's sandbox limit
PACE = 20  # reads per second


def customers_pushed(world: World, count: int) -> None:
    """cus_a (mapped by the fixture) and ``count - 1`` more, customer i with i units, all
    pushed: one reconciliation line each, Stripe holding i."""
    refs = ["cus_a"] + [f"cus_{i:02d}" for i in range(1, count)]
    for ref in refs[1:]:
        world.map_customer(ref)
    results = world.stores.app.usage.record_usage(
        [
            submission(world.tenant, Decimal(i), world.clock.now, key=ref, customer=ref)
            for i, ref in enumerate(refs, start=1)
        ]
    )
    assert {r.outcome.value for r in results} == {"accepted"}
    for ref in refs:
        world.push(ref)
    world.stores.views.runner.catch_up()


def _run(world: World, pace: TokenBucket | None) -> tuple[float, list[tuple[str, int | None]]]:
    reconciler = Reconciler(
        world.stores,
        world.gateway,
        world.pusher,
        Metrics(),
        NO_LAG,
        world.clock,
        threads=4,
        pace=pace,
    )
    started = time.monotonic()
    reports = reconciler.run(Scope(world.tenant), actor="ops@acme", trigger="test")
    wall = time.monotonic() - started
    return wall, [(line.status, line.stripe) for report in reports for line in report.lines]


def test_a_paced_run_makes_no_429_and_takes_lines_over_pace(
    world: World, emulator: RunningEmulator
) -> None:
    customers_pushed(world, CUSTOMERS)
    emulator.configure(rate_limit=EMULATOR_LIMIT)
    refused = emulator.rate_limiter.rejected

    wall, lines = _run(world, TokenBucket(PACE, burst=1))

    assert emulator.rate_limiter.rejected - refused == 0
    assert len(lines) == CUSTOMERS and {status for status, _ in lines} == {"ok"}
    assert sorted(stripe or 0 for _, stripe in lines) == list(range(1, CUSTOMERS + 1))
    # One token at once, then one every 1/PACE s: the floor is (60 - 1) / 20 = 2.95 s.
    assert (CUSTOMERS - 1) / PACE <= wall < (CUSTOMERS - 1) / PACE + 1.5

    # The same run unpaced goes over the limit: Stripe refuses, the lines say so.
    time.sleep(1.0)  # a fresh second of the emulator's window
    _, unpaced = _run(world, None)
    assert emulator.rate_limiter.rejected - refused > 0
    assert sum(1 for _, stripe in unpaced if stripe is None) > 0
