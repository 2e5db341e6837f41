"""Review of issue 13's hard caps: failing tests for what the caps promise and do not keep."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from adapters.persistence import open_stores
from adapters.settings import Settings
from domain.caps import Cap, CapMode
from domain.ingest import Outcome
from domain.tenancy import Tenant
from tests.conftest import FakeClock
from tests.e2e.conftest import Api, event
from tests.helpers import setup_tenant, submission

HARD = CapMode.HARD


def put_cap(api: Api, **body: Any) -> Any:
    return api.call("PUT", "/v1/caps/api_calls", json=body)


def test_a_cap_set_while_the_writer_reads_the_tenant_is_enforced_for_the_next_events(
    settings: Settings, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/caps.md: "At once for the serve that took the call ... in the thread writer
    (STRIPEMETER_WRITER=thread) the writer shares the API's cache. Events sent after the
    answer are decided under the new cap." Not when the writer thread was (re)loading the
    tenant (its 5 s cache entry had expired) while ``PUT /v1/caps`` ran: the API's
    ``set_cap`` refreshes the cache, then the writer's load, begun before the change,
    stores the tenant without the cap over it, and events sent after the answer pass the
    hard cap for up to ``TENANT_CACHE_SECONDS``.

    From ``TtlCache.get_or_load`` (domain/caching.py:87-96) storing its load
    unconditionally, used by ``MeteringApp.cached_tenant`` (domain/application.py:123);
    ``GroupCommitWriter.tenant_changed`` (adapters/group_commit.py:68) does nothing. The
    writer process's ``_record`` avoids it by refreshing on the commit thread; the thread
    writer has no such step.
    """
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


def test_the_same_refused_event_twice_in_a_batch_counts_one_period_reaching_its_cap(
    api: Api,
) -> None:
    """``stripemeter_caps_reached_total`` counts "periods that reached a cap"
    (docs/caps.md), and the period records ``CapReached`` once. A batch holding the same
    event twice (a client that retries inside its own batch), refused by the hard cap,
    counts two: the second copy's result is the first one's object
    (domain/recording.py:147-153, ``results[position] = refused``), ``cap_reached``
    included, and ``Metrics.observe`` (adapters/metrics.py:254-263) counts each result
    carrying ``cap_reached``.
    """
    assert put_cap(api, customerRef=None, limit=5, mode="hard").status_code == 200
    same = event(quantity=10, idempotencyKey="twice")
    answer = api.ingest(same, same).json()
    assert [r["status"] for r in answer["results"]] == ["error", "error"]
    metrics = api.call("GET", "/metrics").text
    assert 'stripemeter_caps_reached_total{mode="hard"} 1.0' in metrics, [
        line for line in metrics.splitlines() if line.startswith("stripemeter_caps_reached")
    ]
