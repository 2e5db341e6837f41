"""Hard and soft caps under writers racing as separate processes would (both backends).

Each writer is its own app instance with its own caches, as the writer
processes of two ``stripemeter serve`` stacks on one database are: a cap is
only safe if the one that loses a race decides again on the period as stored.
"""

from __future__ import annotations

import threading
from decimal import Decimal
from uuid import UUID

import pytest

from adapters.persistence import open_stores
from adapters.settings import Settings
from domain.caps import Cap, CapMode
from domain.ingest import Outcome
from domain.meters import Aggregation, MetricDefinition
from domain.recording import IngestContentionError
from domain.tenancy import Tenant
from domain.usage import UsagePeriod
from tests.conftest import FakeClock
from tests.helpers import setup_tenant, submission

WRITERS, ROUNDS, PER_CUSTOMER = 3, 12, 3
LIMIT = Decimal(40)
HARD = CapMode.HARD


def test_racing_writers_never_pass_a_hard_cap_and_reach_each_cap_once(
    settings: Settings, clock: FakeClock
) -> None:
    setup = open_stores(settings, clock)
    tenant = setup_tenant(setup)
    setup.app.set_cap(tenant, Cap("api_calls", "cus_hard", LIMIT, CapMode.HARD))
    setup.app.set_cap(tenant, Cap("api_calls", "cus_soft", LIMIT, CapMode.SOFT))
    setup.close()
    instances = [open_stores(settings, clock) for _ in range(WRITERS)]
    start = threading.Barrier(WRITERS)
    outcomes: list[Outcome] = []
    lock = threading.Lock()

    def send(writer: int) -> None:
        start.wait()
        for round_ in range(ROUNDS):
            batch = [
                submission(tenant, 1, clock.now, key=f"{who}-{writer}-{round_}-{n}", customer=who)
                for n in range(PER_CUSTOMER)
                for who in ("cus_hard", "cus_soft")
            ]
            while True:
                try:
                    results = instances[writer].app.usage.record_usage(batch)
                except IngestContentionError:
                    continue  # nothing written: sent again, as the client of a 409 would
                break
            with lock:
                outcomes.extend(r.outcome for r in results)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for stores in instances:
        stores.close()

    sent = WRITERS * ROUNDS * PER_CUSTOMER
    check = open_stores(settings, clock)
    try:
        hard = check.app.usage_period(tenant, "cus_hard", "api_calls", "2026-03")
        soft = check.app.usage_period(tenant, "cus_soft", "api_calls", "2026-03")
        assert hard.total == LIMIT  # every event is 1: the cap is met exactly, never passed
        assert soft.total == Decimal(sent)
        # Exactly the events that did not count were refused, nothing else was.
        assert outcomes.count(Outcome.ERROR) == sent - LIMIT
        assert outcomes.count(Outcome.ACCEPTED) == LIMIT + sent
        for period, mode in ((hard, "hard"), (soft, "soft")):
            reached = [
                e for e in check.app.events.get(period.id) if isinstance(e, UsagePeriod.CapReached)
            ]
            assert [(e.mode, e.limit) for e in reached] == [(mode, LIMIT)]
    finally:
        check.close()


def test_a_refusal_is_decided_on_the_period_as_stored_not_a_stale_copy(
    settings: Settings, clock: FakeClock
) -> None:
    """Writer A holds the period at its cap; writer B lowers it; A must then take more."""
    setup = open_stores(settings, clock)
    tenant = setup.app.register_tenant("acme", "Acme").id
    setup.app.declare_metric(
        tenant, MetricDefinition("credits", Aggregation.SUM, allow_negative=True)
    )
    setup.app.set_cap(tenant, Cap("credits", None, Decimal(10), CapMode.HARD))
    setup.close()
    a, b = open_stores(settings, clock), open_stores(settings, clock)
    try:
        [full] = a.app.usage.record_usage([submission(tenant, 10, clock.now, "a1", "credits")])
        assert full.outcome is Outcome.ACCEPTED  # A now caches the period at 10
        [fix] = b.app.usage.record_usage([submission(tenant, -5, clock.now, "b1", "credits")])
        assert fix.outcome is Outcome.ACCEPTED  # stored: 5
        [more] = a.app.usage.record_usage([submission(tenant, 3, clock.now, "a2", "credits")])
        assert more.outcome is Outcome.ACCEPTED
        [over] = a.app.usage.record_usage([submission(tenant, 3, clock.now, "a3", "credits")])
        assert over.outcome is Outcome.ERROR
        assert over.reason == (
            "would exceed the hard cap of 10 credits for this period (8 counted)"
        )
    finally:
        a.close()
        b.close()


def test_a_cap_set_while_the_writer_reads_the_tenant_is_enforced_for_the_next_events(
    settings: Settings, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The thread writer shares the API's tenant cache: a cap set while the writer is
    (re)reading the tenant holds for every event sent after the answer — the read begun
    before the change is used for its own batch, but not cached over the change."""
    setup = open_stores(settings, clock)
    tenant = setup_tenant(setup)
    setup.close()
    stores = open_stores(settings, clock)  # one process: the API and its writer thread
    try:
        app = stores.app
        read = app.fresh_tenant
        api_call: list[bool] = []

        def read_while_the_cap_is_set(tenant_id: UUID) -> Tenant:
            found = read(tenant_id)
            if not api_call:  # the writer's read is in flight: PUT /v1/caps runs and answers
                monkeypatch.setattr(app, "fresh_tenant", read)
                api_call.append(app.set_cap(tenant, Cap("api_calls", None, Decimal(5), HARD)))
            return found

        monkeypatch.setattr(app, "fresh_tenant", read_while_the_cap_is_set)
        first = app.usage.record_usage([submission(tenant, 1, clock.now, key="during")])
        assert api_call == [True] and first[0].outcome is Outcome.ACCEPTED
        # After the API answered: 10 more is past the hard cap of 5.
        after = app.usage.record_usage([submission(tenant, 10, clock.now, key="after")])
        assert after[0].outcome is Outcome.ERROR, after[0]
    finally:
        stores.close()
