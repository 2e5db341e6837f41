"""The sync and async clients against the real service (one shared per session)."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from sdk_service import VECTORS, Service, now

from stripemeter import (
    AsyncStripeMeterClient,
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    PermissionDeniedError,
    StripeMeterClient,
    UsageEvent,
)


def test_track_records_once_and_a_resend_is_a_duplicate(
    service: Service, api_key: str, customer: str
) -> None:
    with StripeMeterClient(api_key, base_url=service.url) as client:
        event = UsageEvent.create("api_calls", customer, 3, now(), meta={"endpoint": "/v1/search"})
        first = client.track_batch([event]).results[0]
        again = client.track_batch([event]).results[0]
        # The same content built again (the same ts) is the same event.
        rebuilt = client.track(
            "api_calls", customer, "3.0", ts=event.ts, meta={"endpoint": "/v1/search"}
        )
        moment = now()
        chosen = client.track("api_calls", customer, 4, moment, idempotency_key=f"{customer}-k1")
        chosen_again = client.track(
            "api_calls", customer, 4, moment, idempotency_key=f"{customer}-k1"
        )
        # The key again with a ts of its own (now, later): other content, so a conflict.
        reused = client.track("api_calls", customer, 4, idempotency_key=f"{customer}-k1")
        usage = service.wait_for_count(api_key, customer, 2)
        current = client.get_usage(customer)
    assert (first.status, again.status, rebuilt.status) == ("accepted", "duplicate", "duplicate")
    assert first.idempotency_key == event.content_key  # the server derived the client's key
    assert first.event is event
    assert (chosen.status, chosen_again.status) == ("accepted", "duplicate")
    assert chosen.idempotency_key == f"{customer}-k1"
    assert (reused.status, reused.field) == ("conflict", "idempotencyKey")
    assert usage["value"] == "7"
    assert [(c["metric"], c["value"], c["count"]) for c in current["counters"]] == [
        ("api_calls", "7", 2)
    ]
    assert current["customerRef"] == customer


def test_the_server_reports_the_vectors_content_keys_for_events_sent_without_one(
    service: Service, api_key: str
) -> None:
    """The vectors' own events, ingested without a key: the server names the same key."""
    vectors = json.loads(VECTORS.read_text())["vectors"]
    sendable = [
        v
        for v in vectors
        if datetime.fromisoformat(
            v["event"]["ts"].replace("Z", "+00:00").replace("z", "+00:00").replace(" ", "T")
        )
        < now()
    ]
    assert len(sendable) >= 10
    with StripeMeterClient(api_key, base_url=service.url) as client:
        answer = client.track_batch([v["event"] for v in sendable])
    assert [r.status for r in answer.results] == ["accepted"] * len(sendable) or all(
        r.status in ("accepted", "duplicate") for r in answer.results
    ), [(r.status, r.field, r.reason) for r in answer.results]
    assert [r.idempotency_key for r in answer.results] == [v["key"] for v in sendable]


def test_same_key_other_content_is_a_conflict_and_a_bad_event_an_error_beside_good_ones(
    service: Service, api_key: str, customer: str
) -> None:
    key = f"{customer}-same"
    with StripeMeterClient(api_key, base_url=service.url) as client:
        answer = client.track_batch(
            [
                {
                    "metric": "api_calls",
                    "customerRef": customer,
                    "quantity": 1,
                    "idempotencyKey": key,
                },
                {
                    "metric": "api_calls",
                    "customerRef": customer,
                    "quantity": 2,
                    "idempotencyKey": key,
                },
                UsageEvent.create("api_calls", customer, 1, now() + timedelta(hours=1)),
                UsageEvent.create("no_such_metric", customer, 1),
                {"metric": "api_calls", "customer_ref": customer, "quantity": 5},
            ]
        )
    got = [(r.index, r.status, r.field) for r in answer.results]
    assert got == [
        (0, "accepted", None),
        (1, "conflict", "idempotencyKey"),
        (2, "error", "ts"),
        (3, "error", "metric"),
        (4, "accepted", None),
    ]
    assert answer.results[2].reason == "is more than 5 minutes in the future"
    assert (answer.accepted, answer.conflicts, answer.errors) == (2, 1, 2)
    assert [r.index for r in answer.failed] == [1, 2, 3]


def test_a_batch_over_the_servers_limit_is_split_and_answered_in_order(
    service: Service, api_key: str, customer: str
) -> None:
    sent: list[int] = []

    def count_events(request: httpx.Request) -> None:
        sent.append(len(json.loads(request.content)["events"]))

    http = httpx.Client(timeout=30, event_hooks={"request": [count_events]})
    with StripeMeterClient(api_key, base_url=service.url, http_client=http) as client:
        events = [
            UsageEvent.create("api_calls", customer, 1, idempotency_key=f"{customer}-{i}")
            for i in range(2_345)
        ]
        answer = client.track_batch(events)
    http.close()
    assert sent == [1_000, 1_000, 345]
    assert [r.index for r in answer.results] == list(range(2_345))
    assert [r.idempotency_key for r in answer.results] == [e.explicit_key for e in events]
    assert answer.accepted == 2_345
    assert service.wait_for_count(api_key, customer, 2_345)["value"] == "2345"


def test_list_events_follows_the_cursor_through_every_page(
    service: Service, api_key: str, customer: str
) -> None:
    start = now() - timedelta(minutes=1)
    with StripeMeterClient(api_key, base_url=service.url) as client:
        keys = [f"{customer}-e{i}" for i in range(25)]
        client.track_batch(
            [
                UsageEvent.create("api_calls", customer, i, idempotency_key=k)
                for i, k in enumerate(keys)
            ]
        )
        service.wait_for_count(api_key, customer, 25)
        for _ in range(100):  # the events view follows the log
            listed = list(client.list_events(customer_ref=customer, since=start, page_size=10))
            if len(listed) == 25:
                break
            time.sleep(0.1)
        none = list(client.list_events(customer_ref=customer, until=start))
    assert [e["idempotencyKey"] for e in listed] == keys
    assert [e["quantity"] for e in listed] == [str(i) for i in range(25)]
    assert none == []


def test_typed_errors_carry_status_field_and_reason(
    service: Service, api_key: str, ingest_only_key: str, customer: str
) -> None:
    with StripeMeterClient(api_key, base_url=service.url) as client:
        with pytest.raises(BadRequestError) as bad:
            list(client.list_events(page_size=5_000))
        with pytest.raises(BadRequestError) as bad_ref:
            client.get_usage("cus\x00x")
        with pytest.raises(NotFoundError):
            client.get_usage_history(customer, "no_such_metric")
        with pytest.raises(NotFoundError):
            client.get_reconciliation("2001-01")
        with pytest.raises(BadRequestError) as bad_month:
            client.get_reconciliation("2026-13")
    assert (bad.value.status, bad.value.field) == (422, "limit")
    assert bad.value.reason == "must be between 1 and 1000"
    assert bad_ref.value.field == "customerRef"
    assert bad_month.value.field == "period"
    with (
        StripeMeterClient("sk_wrong", base_url=service.url) as stranger,
        pytest.raises(AuthenticationError) as unknown,
    ):
        stranger.track("api_calls", customer, 1)
    assert unknown.value.status == 401
    with StripeMeterClient(ingest_only_key, base_url=service.url) as writer_only:
        assert writer_only.track("api_calls", customer, 1).status == "accepted"
        with pytest.raises(PermissionDeniedError):
            writer_only.get_usage(customer)


def test_the_key_and_the_address_come_from_the_environment(
    service: Service, api_key: str, customer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRIPEMETER_API_KEY", api_key)
    monkeypatch.setenv("STRIPEMETER_API_URL", service.url + "/")
    with StripeMeterClient() as client:
        assert client.base_url == service.url
        assert client.track("api_calls", customer, 1).status == "accepted"


def test_reads_usage_history_projection_audit_and_reconciliation(
    service: Service, api_key: str, customer: str
) -> None:
    # Reconciliation compares customers mapped to Stripe: map one on the built-in emulator.
    service.cli("mappings", "create", "--tenant", "acme", "--metric", "api_calls", "--create-meter")
    emulator = f"http://127.0.0.1:{service.env['STRIPEMETER_EMULATOR_PORT']}"
    stripe_customer = httpx.post(
        f"{emulator}/v1/customers", data={"name": customer}, auth=("sk_test_x", "")
    ).json()["id"]
    service.cli(
        "customers",
        "map",
        "--tenant",
        "acme",
        "--customer-ref",
        customer,
        "--stripe-customer-id",
        stripe_customer,
    )
    with StripeMeterClient(api_key, base_url=service.url) as client:
        client.track("api_calls", customer, 5, idempotency_key=f"{customer}-r")
        service.wait_for_count(api_key, customer, 1)
        history = client.get_usage_history(customer, "api_calls", granularity="hour")
        projection = client.get_projection(customer)
        audit = client.get_invoice_audit(customer, "api_calls")
        month = now().strftime("%Y-%m")
        reports = client.run_reconciliation(period=month, actor="sdk-test")
        report = client.get_reconciliation(month)
        adjustments = list(client.list_adjustments())
    assert sum(int(b["sum"]) for b in history["buckets"]) == 5
    assert projection["customerRef"] == customer
    assert projection["period"]["key"] == month
    assert audit["counter"]["value"] == "5"
    pushed = [e["idempotencyKey"] for p in audit["pushes"] for e in p["events"]]
    unpushed = [e["idempotencyKey"] for e in audit["unpushedEvents"]]
    assert pushed + unpushed == [f"{customer}-r"]
    assert [r["month"] for r in reports] == [month]
    assert report["runId"] == reports[0]["runId"]
    [line] = [line for line in report["lines"] if line["customerRef"] == customer]
    assert (line["metric"], line["local"], line["stripeCustomerId"]) == (
        "api_calls",
        5,
        stripe_customer,
    )
    assert isinstance(adjustments, list)


def test_the_async_client_has_the_same_surface(
    service: Service, api_key: str, customer: str
) -> None:
    async def scenario() -> dict[str, Any]:
        async with AsyncStripeMeterClient(api_key, base_url=service.url) as client:
            moment = now()
            first = await client.track(
                "api_calls", customer, 2, moment, idempotency_key="a" + customer
            )
            again = await client.track(
                "api_calls", customer, 2, moment, idempotency_key="a" + customer
            )
            batch = await client.track_batch(
                [UsageEvent.create("api_calls", customer, 1) for _ in range(3)]
            )
            for _ in range(100):  # the events view follows the log
                listed = [e async for e in client.list_events(customer_ref=customer, page_size=2)]
                if len(listed) == 4:
                    break
                await asyncio.sleep(0.1)
            try:
                await client.get_usage("")
            except BadRequestError as error:
                refused = error
            for _ in range(100):
                usage = await client.get_usage(customer, metric="api_calls")
                if usage["counters"] and usage["counters"][0]["count"] == 4:
                    break
                await asyncio.sleep(0.1)
            return {
                "statuses": (first.status, again.status),
                # Three events built in a row differ only by their ts: three events.
                "batch": [r.status for r in batch.results],
                "listed": len(listed),
                "refused": refused.field,
                "value": usage["counters"][0]["value"],
            }

    assert asyncio.run(scenario()) == {
        "statuses": ("accepted", "duplicate"),
        "batch": ["accepted"] * 3,
        "listed": 4,
        "refused": "customerRef",
        "value": "5",
    }


def test_cloudevents_go_to_the_ingest_route_as_a_batch(
    service: Service, api_key: str, customer: str
) -> None:
    """Lightly: the server side of CloudEvents lands separately; run once it serves them."""
    document = httpx.get(f"{service.url}/schema/openapi.json").text
    if "cloudevents" not in document:
        pytest.skip("this service does not take CloudEvents yet")
    with StripeMeterClient(api_key, base_url=service.url) as client:
        event = UsageEvent.create("api_calls", customer, 2)
        answer = client.send_cloudevents(
            [
                event,
                {
                    "specversion": "1.0",
                    "id": f"{customer}-ce",
                    "source": "test",
                    "subject": customer,
                    "type": "api_calls",
                    "time": now().isoformat(),
                    "data": {"quantity": 3},
                },
            ]
        )
        again = client.send_cloudevents([event])
    assert [r.status for r in answer.results] == ["accepted", "accepted"]
    assert [r.idempotency_key for r in answer.results] == [event.idempotency_key, f"{customer}-ce"]
    assert [r.status for r in again.results] == ["duplicate"]
    assert datetime.now(timezone.utc)  # keep the import honest


def test_a_widget_token_is_minted_for_one_customer_and_reads_only_its_usage(
    service: Service, api_key: str, ingest_only_key: str, customer: str
) -> None:
    with StripeMeterClient(api_key, base_url=service.url) as client:
        client.track("api_calls", customer, 7, now())
        minted = client.create_widget_token(customer, lifetime_seconds=60)
        with pytest.raises(BadRequestError) as refused:
            client.create_widget_token(customer, lifetime_seconds=0)
    async_minted = asyncio.run(_mint_async(service, api_key, customer))
    with (
        StripeMeterClient(ingest_only_key, base_url=service.url) as ingest_only,
        pytest.raises(PermissionDeniedError),
    ):
        ingest_only.create_widget_token(customer)
    assert minted["customerRef"] == customer
    assert minted["token"].startswith("smw_")
    assert refused.value.field == "lifetimeSeconds"
    assert async_minted["customerRef"] == customer
    assert async_minted["token"] != minted["token"]
    # What the widget does with it: its customer's usage, and nothing with it as an API key.
    for _ in range(100):
        usage = httpx.get(
            f"{service.url}/v1/widget/usage",
            headers={"Authorization": f"Bearer {minted['token']}"},
            timeout=5,
        )
        if usage.status_code == 200 and usage.json()["metrics"]:
            break
        time.sleep(0.1)
    assert usage.status_code == 200, usage.text
    assert usage.json()["customerRef"] == customer
    with (
        StripeMeterClient(minted["token"], base_url=service.url) as as_key,
        pytest.raises(AuthenticationError),
    ):
        as_key.get_usage(customer)


async def _mint_async(service: Service, api_key: str, customer: str) -> dict[str, Any]:
    async with AsyncStripeMeterClient(api_key, base_url=service.url) as client:
        return dict(await client.create_widget_token(customer))
