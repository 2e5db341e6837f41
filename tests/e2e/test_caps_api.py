"""/v1/caps over HTTP, and what caps do to ingest answers (SQLite and PostgreSQL)."""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter
from decimal import Decimal
from typing import Any

from litestar.testing import TestClient

from adapters.settings import Settings
from api.app import create_app
from domain.tenancy import tenant_id_for
from domain.usage import UsagePeriod, usage_period_id
from tests.conftest import FakeClock
from tests.e2e.conftest import Api, event


def put_cap(api: Api, metric: str = "api_calls", key: str = "acme-all", **body: Any) -> Any:
    return api.call("PUT", f"/v1/caps/{metric}", key, json=body)


def cap_events(api: Api, customer: str = "cus_1", period: str = "2026-03") -> list[Any]:
    app = api.client.app.state.services.stores.app
    period_id = usage_period_id(tenant_id_for("acme"), customer, "api_calls", period)
    return [e for e in app.events.get(period_id) if isinstance(e, UsagePeriod.CapReached)]


def counted(api: Api, customer: str = "cus_1") -> str:
    api.settle()
    body = api.call("GET", f"/v1/usage/current?customerRef={customer}").json()
    return str(body["counters"][0]["value"]) if body["counters"] else "0"


def test_caps_are_set_listed_replaced_and_removed(api: Api) -> None:
    wide = put_cap(api, customerRef=None, limit=1000, mode="hard")
    assert wide.status_code == 200
    assert wide.json() == {
        "metric": "api_calls",
        "customerRef": None,
        "limit": "1000",
        "mode": "hard",
    }
    own = put_cap(api, customerRef="cus_vip", limit="2.5", mode="soft")
    assert own.status_code == 200
    again = put_cap(api, customerRef=None, limit=2000, mode="hard")  # replaces
    assert again.json()["limit"] == "2000"
    listed = api.call("GET", "/v1/caps", "acme-read")
    assert listed.status_code == 200
    assert listed.json() == {
        "data": [
            {"metric": "api_calls", "customerRef": None, "limit": "2000", "mode": "hard"},
            {"metric": "api_calls", "customerRef": "cus_vip", "limit": "2.5", "mode": "soft"},
        ]
    }
    # Another tenant sees none of them.
    assert api.call("GET", "/v1/caps", "globex-all").json() == {"data": []}
    removed = api.call("DELETE", "/v1/caps/api_calls?customerRef=cus_vip")
    assert removed.status_code == 200 and removed.json()["customerRef"] == "cus_vip"
    assert api.call("DELETE", "/v1/caps/api_calls?customerRef=cus_vip").status_code == 404
    assert api.call("DELETE", "/v1/caps/api_calls").json()["limit"] == "2000"
    assert api.call("GET", "/v1/caps").json() == {"data": []}


def test_bad_caps_are_refused_naming_the_field(api: Api) -> None:
    negative = put_cap(api, customerRef=None, limit=-1, mode="hard")
    assert negative.status_code == 422
    assert [e["field"] for e in negative.json()["errors"]] == ["limit"]
    mode = put_cap(api, customerRef=None, limit=1, mode="strict")
    assert mode.status_code == 422
    assert [e["field"] for e in mode.json()["errors"]] == ["mode"]
    text = put_cap(api, customerRef=None, limit="lots", mode="hard")
    assert [e["field"] for e in text.json()["errors"]] == ["limit"]
    missing = api.call("PUT", "/v1/caps/api_calls", json={"limit": 1, "mode": "hard"})
    assert missing.status_code == 422
    assert [e["field"] for e in missing.json()["errors"]] == ["customerRef"]
    unknown = put_cap(api, "nope", customerRef=None, limit=1, mode="hard")
    assert unknown.status_code == 404
    assert "nope" in unknown.json()["detail"]
    assert put_cap(api, key="acme-read", customerRef=None, limit=1, mode="hard").status_code == 403
    assert (
        put_cap(api, key="acme-ingest", customerRef=None, limit=1, mode="hard").status_code == 403
    )
    assert api.call("DELETE", "/v1/caps/api_calls", "acme-read").status_code == 403
    assert api.call("GET", "/v1/caps", "acme-ingest").status_code == 403


def test_a_hard_cap_refuses_the_event_that_would_pass_it_and_lifts_when_raised(
    api: Api,
) -> None:
    put_cap(api, customerRef=None, limit=10, mode="hard")
    body = api.ingest(
        event(idempotencyKey="a", quantity=7),
        event(idempotencyKey="b", quantity=4),
        event(idempotencyKey="c", quantity=3),
        event(idempotencyKey="d", quantity=4, customerRef="cus_2"),
    ).json()
    assert (body["accepted"], body["errors"]) == (3, 1)
    refused = body["results"][1]
    assert refused == {
        "index": 1,
        "status": "error",
        "idempotencyKey": "b",
        "field": "quantity",
        "reason": "would exceed the hard cap of 10 api_calls for this period (7 counted)",
        "cap": "hard",
    }
    assert "cap" not in body["results"][0]
    assert counted(api) == "10"
    # Raising the cap lifts it: the same key, refused before, is taken now.
    put_cap(api, customerRef=None, limit=14, mode="hard")
    assert api.ingest(event(idempotencyKey="b", quantity=4)).json()["accepted"] == 1
    assert counted(api) == "14"
    assert [(e.limit, e.value) for e in cap_events(api)] == [
        (Decimal(10), Decimal(7)),
        (Decimal(14), Decimal(14)),
    ]
    metrics = api.call("GET", "/metrics").text
    assert 'stripemeter_caps_reached_total{mode="hard"} 2.0' in metrics
    assert "stripemeter_cap_refused_events_total 1.0" in metrics


def test_a_new_period_lifts_a_hard_cap(api: Api) -> None:
    put_cap(api, customerRef="cus_1", limit=5, mode="hard")
    assert api.ingest(event(idempotencyKey="m1", quantity=5)).json()["accepted"] == 1
    assert api.ingest(event(idempotencyKey="m2", quantity=1)).json()["errors"] == 1
    api.clock.advance(days=20)  # April 4th
    april = event(idempotencyKey="a1", quantity=5, ts="2026-04-04T11:00:00Z")
    assert api.ingest(april).json()["accepted"] == 1


def test_a_soft_cap_marks_results_past_it_and_records_reaching_it_once(api: Api) -> None:
    put_cap(api, customerRef=None, limit=10, mode="soft")
    results = [
        api.ingest(event(idempotencyKey=f"s{n}", quantity=4)).json()["results"][0] for n in range(4)
    ]
    assert [r["status"] for r in results] == ["accepted"] * 4
    assert [r.get("cap") for r in results] == [None, None, "soft", "soft"]
    assert counted(api) == "16"
    assert [(e.mode, e.limit, e.value) for e in cap_events(api)] == [
        ("soft", Decimal(10), Decimal(12))
    ]
    metrics = api.call("GET", "/metrics").text
    assert 'stripemeter_caps_reached_total{mode="soft"} 1.0' in metrics


def test_many_concurrent_clients_never_pass_a_hard_cap(api: Api) -> None:
    """16 clients at once, 25 single-event requests each, against a cap of 150 units."""
    put_cap(api, customerRef="cus_1", limit=150, mode="hard")
    statuses: Counter[str] = Counter()
    refused: list[dict[str, Any]] = []
    lock = threading.Lock()
    start = threading.Barrier(16)

    def client(number: int) -> None:
        start.wait()
        for n in range(25):
            response = api.ingest(event(idempotencyKey=f"c{number}-{n}", quantity=1 + n % 3))
            assert response.status_code == 200
            result = response.json()["results"][0]
            with lock:
                statuses[result["status"]] += 1
                if result["status"] == "error":
                    refused.append(result)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = Decimal(counted(api))
    assert total <= 150
    # Every refused event is one the cap refused; every accepted one is counted.
    assert all(r["field"] == "quantity" and r["cap"] == "hard" for r in refused)
    assert statuses["accepted"] + statuses["error"] == 400
    sent = sum((1 + n % 3) for n in range(25)) * 16
    refused_units = sum(1 + int(r["idempotencyKey"].split("-")[1]) % 3 for r in refused)
    assert total == sent - refused_units
    assert statuses["error"] > 0  # the cap was hit
    assert len(cap_events(api)) == 1


def test_a_counted_event_resent_after_a_restart_is_a_duplicate_not_a_cap_refusal(
    api: Api, settings: Settings, clock: FakeClock
) -> None:
    """An event counted up to the hard cap and sent again (a client retry after a timeout)
    to a writer that has not seen its key (a restarted serve, or another one) is a
    ``duplicate``, not refused by the cap; other content under its key is a ``conflict``."""
    assert put_cap(api, customerRef=None, limit=10, mode="hard").status_code == 200
    first = api.ingest(event(quantity=10, idempotencyKey="order-1")).json()
    assert first["results"][0]["status"] == "accepted"

    # The same serve restarted (or a second one on the same database): a fresh writer.
    fresh = dataclasses.replace(settings, embedded_worker=False, writer_mode="thread")
    with TestClient(app=create_app(fresh, clock)) as client:
        again = client.post(
            "/v1/events/ingest",
            headers={"Authorization": f"Bearer {api.keys['acme-all']}"},
            json={
                "events": [
                    event(quantity=11, idempotencyKey="order-1"),
                    event(quantity=10, idempotencyKey="order-1"),
                    event(quantity=11, idempotencyKey="order-1"),
                ]
            },
        ).json()
        resent = client.post(
            "/v1/events/ingest",
            headers={"Authorization": f"Bearer {api.keys['acme-all']}"},
            json={"events": [event(quantity=10, idempotencyKey="order-1")]},
        ).json()
    # Each answers to the stored claim, not to the first of its batch.
    assert [r["status"] for r in again["results"]] == ["conflict", "duplicate", "conflict"]
    assert resent["results"][0]["status"] == "duplicate"
    assert counted(api) == "10"


def test_the_same_refused_event_twice_in_a_batch_counts_one_period_reaching_its_cap(
    api: Api,
) -> None:
    """A batch holding the same event twice, refused by the hard cap, refuses both, and
    ``stripemeter_caps_reached_total`` counts one period reaching its cap, as the
    period records ``CapReached`` once."""
    assert put_cap(api, customerRef=None, limit=5, mode="hard").status_code == 200
    same = event(quantity=10, idempotencyKey="twice")
    answer = api.ingest(same, same).json()
    assert [r["status"] for r in answer["results"]] == ["error", "error"]
    assert len(cap_events(api)) == 1
    metrics = api.call("GET", "/metrics").text
    assert 'stripemeter_caps_reached_total{mode="hard"} 1.0' in metrics, [
        line for line in metrics.splitlines() if line.startswith("stripemeter_caps_reached")
    ]
