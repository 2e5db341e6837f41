"""POST /v1/replay over HTTP: dry run, apply, paging, validation, isolation, and the push after."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from dramatiq import Message
from dramatiq.brokers.stub import StubBroker

from adapters.metrics import Metrics
from adapters.push_worker import QUEUE, PushWorker
from stripe_emulator.testing import RunningEmulator
from tests.e2e.conftest import Api, event
from tests.e2e.test_stripe_api import push_all, setup_stripe

MARCH = {"since": "2026-03-01T00:00:00Z", "until": "2026-04-01T00:00:00Z"}


def services(api: Api) -> Any:
    return api.client.app.state.services


def replay(api: Api, key: str = "acme-all", **body: Any) -> Any:
    return api.call("POST", "/v1/replay", key, json={**MARCH, **body})


def set_counter(api: Api, customer: str, total: int, tenant: str = "acme") -> None:
    """Break a counter in the view, as a bug or a bad restore would."""
    svc = services(api)
    store = svc.stores.views.store
    tenant_id = svc.stores.app.tenant_by_slug(tenant).id
    with store.transaction() as tx:
        tx.execute(
            "UPDATE sm_counters SET total = ?, event_count = ? WHERE tenant_id = ?"
            " AND customer_ref = ?",
            (store.encode_decimal(Decimal(total)), total, str(tenant_id), customer),
        )


def current(api: Api, customer: str = "cus_1", key: str = "acme-read") -> str:
    usage = api.call("GET", f"/v1/usage/current?customerRef={customer}", key).json()
    return str(usage["counters"][0]["value"])


def test_a_dry_run_writes_nothing_and_apply_is_idempotent(api: Api) -> None:
    api.ingest(*[event(idempotencyKey=f"e{i}", quantity=2) for i in range(3)])
    api.settle()
    set_counter(api, "cus_1", 40)
    assert current(api) == "40"

    dry = replay(api, key="acme-read")  # a dry run needs only the read scope

    assert dry.status_code == 200, dry.text
    body = dry.json()
    assert body["mode"] == "dry-run"
    assert body["summary"] == {"examined": 1, "changed": 1, "applied": 0, "pendingEvents": 0}
    [counter] = body["counters"]
    assert (counter["customerRef"], counter["metric"], counter["period"]) == (
        "cus_1",
        "api_calls",
        "2026-03",
    )
    assert (counter["before"]["value"], counter["before"]["count"]) == ("40", 40)
    assert (counter["after"]["value"], counter["after"]["count"]) == ("6", 3)
    assert (counter["difference"], counter["changed"], counter["hoursChanged"]) == ("-34", True, 0)
    assert counter["after"]["position"] <= body["viewPosition"]
    assert (body["pushes"], body["nextCursor"]) == (None, None)
    assert current(api) == "40"  # written nothing

    assert replay(api, key="acme-read", mode="apply").status_code == 403
    applied = replay(api, mode="apply").json()
    assert applied["summary"] == {"examined": 1, "changed": 1, "applied": 1, "pendingEvents": 0}
    assert applied["counters"] == body["counters"]  # it did what the dry run said
    assert applied["pushes"] == "sweep"  # no push worker in this process: its sweep pushes
    assert current(api) == "6"

    again = replay(api, mode="apply").json()
    assert again["summary"] == {"examined": 1, "changed": 0, "applied": 0, "pendingEvents": 0}
    assert again["counters"][0]["before"] == again["counters"][0]["after"]
    assert again["pushes"] is None


def test_the_cursor_pages_through_every_counter_once(api: Api) -> None:
    for n in range(5):
        api.ingest(event(customerRef=f"cus_{n}", idempotencyKey=f"e{n}"))
    api.settle()
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        body = replay(api, limit=2, **({"cursor": cursor} if cursor else {})).json()
        pages += 1
        seen += [c["customerRef"] for c in body["counters"]]
        cursor = body["nextCursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == [f"cus_{n}" for n in range(5)]
    only = replay(api, customers=["cus_3", "cus_1"], metrics=["api_calls"]).json()
    assert [c["customerRef"] for c in only["counters"]] == ["cus_1", "cus_3"]

    first = replay(api, limit=2).json()
    other_range = api.call(
        "POST",
        "/v1/replay",
        json={
            "since": "2026-03-02T00:00:00Z",
            "until": MARCH["until"],
            "cursor": first["nextCursor"],
        },
    )
    assert other_range.status_code == 422
    assert other_range.json()["errors"][0]["field"] == "cursor"


def test_bad_requests_are_422_with_the_field(api: Api) -> None:
    def field(**body: Any) -> str:
        response = api.call("POST", "/v1/replay", json=body)
        assert response.status_code == 422, (body, response.text)
        return str(response.json()["errors"][0]["field"])

    assert field(until=MARCH["until"]) == "since"
    assert field(since="yesterday", until=MARCH["until"]) == "since"
    assert field(since=MARCH["until"], until=MARCH["since"]) == "since"
    assert field(since="2025-01-01T00:00:00Z", until="2026-03-01T00:00:00Z") == "until"
    assert field(**MARCH, metrics=["api_calls", "nope"]) == "metrics"
    assert field(**MARCH, metrics=[]) == "metrics"
    assert field(**MARCH, customers=[""]) == "customers"
    assert field(**MARCH, mode="force") == "mode"
    assert field(**MARCH, limit=0) == "limit"
    assert field(**MARCH, cursor="not-a-cursor") == "cursor"
    assert field(**MARCH, dryRun=True) == "dryRun"
    assert api.call("POST", "/v1/replay", key="", json=MARCH).status_code == 401
    assert replay(api, key="acme-ingest").status_code == 403


def test_a_tenant_replays_only_its_own_counters(api: Api) -> None:
    api.ingest(event(idempotencyKey="a", quantity=5))
    api.ingest(event(idempotencyKey="a", quantity=7), key="globex-all")
    api.settle()
    set_counter(api, "cus_1", 1, tenant="globex")

    mine = replay(api, mode="apply").json()

    assert mine["summary"]["changed"] == 0
    assert [c["after"]["value"] for c in mine["counters"]] == ["5"]
    assert current(api, key="globex-read") == "1"  # untouched by acme's apply
    theirs = replay(api, key="globex-all", mode="apply").json()
    assert [(c["before"]["value"], c["after"]["value"]) for c in theirs["counters"]] == [("1", "7")]
    assert current(api, key="globex-read") == "7"


def drain(broker: StubBroker, worker: PushWorker) -> int:
    queue = broker.queues[QUEUE]
    handled = 0
    while not queue.empty():
        worker.actor.fn(*Message.decode(queue.get_nowait()).args)
        handled += 1
    return handled


def stripe_total(emulator: RunningEmulator, customer: str) -> int:
    return sum(
        int(e["value"])
        for e in emulator.meter_events()
        if e["event_name"] == "api_calls" and e["customer"] == customer
    )


def hidden_usage(api: Api, emulator: RunningEmulator) -> tuple[str, PushWorker, StubBroker]:
    """Stripe holds 3; 2 more are counted but the broken view says 3, so no sweep pushes them."""
    live = setup_stripe(api, emulator)
    api.ingest(*[event(idempotencyKey=f"e{i}", ts="2026-03-10T11:00:00Z") for i in range(3)])
    api.settle()
    push_all(api)
    api.ingest(*[event(idempotencyKey=f"f{i}", ts="2026-03-10T11:30:00Z") for i in range(2)])
    api.settle()
    set_counter(api, "cus_1", 3)
    broker = StubBroker()
    svc = services(api)
    worker = PushWorker(svc.stores, svc.gateways, Metrics(), broker, clock=api.clock)
    worker.resend_after = 0
    assert worker.sweep().sent == 0  # the view hides the 2 units from the push loop
    assert stripe_total(emulator, live) == 3
    return live, worker, broker


def test_apply_queues_a_push_at_once_when_the_worker_runs_here(
    stripe_api: Api, emulator: RunningEmulator
) -> None:
    api = stripe_api
    live, worker, broker = hidden_usage(api, emulator)
    services(api).push_worker = worker

    applied = replay(api, mode="apply", since="2026-02-01T00:00:00Z").json()

    assert applied["summary"]["changed"] == 1
    assert applied["pushes"] == "queued"
    assert drain(broker, worker) == 2  # live and shadow (the shadow is not mapped: no call)
    assert stripe_total(emulator, live) == 5
    assert current(api) == "5"


def test_without_a_worker_here_its_sweep_pushes_the_fixed_counter(
    stripe_api: Api, emulator: RunningEmulator
) -> None:
    api = stripe_api
    live, worker, broker = hidden_usage(api, emulator)

    applied = replay(api, mode="apply", since="2026-02-01T00:00:00Z").json()

    assert applied["pushes"] == "sweep"
    assert worker.sweep().sent == 1  # the fixed counter is ahead of its ledger now
    drain(broker, worker)
    assert stripe_total(emulator, live) == 5
