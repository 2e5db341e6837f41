"""Wire behaviour: auth, idempotency keys, rate limiting and injected faults."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
import stripe

from stripe_emulator.testing import TEST_API_KEY, RunningEmulator
from stripe_emulator.tests.helpers import make_meter, send


@pytest.fixture
def customer(client: Any) -> str:
    make_meter(client)
    return str(client.v1.customers.create({}).id)


def test_missing_and_invalid_key(emu: RunningEmulator) -> None:
    with pytest.raises(stripe.AuthenticationError):
        emu.client("", max_network_retries=0).v1.customers.list()
    with pytest.raises(stripe.AuthenticationError) as raised:
        emu.client("pk_live_nope", max_network_retries=0).v1.customers.list()
    assert raised.value.http_status == 401


def test_unknown_route_is_404(emu: RunningEmulator) -> None:
    response = httpx.get(
        f"{emu.url}/v1/charges", headers={"Authorization": f"Bearer {TEST_API_KEY}"}
    )
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_idempotent_replay(client: Any, emu: RunningEmulator, customer: str) -> None:
    params = {"event_name": "api_calls", "payload": {"stripe_customer_id": customer, "value": "5"}}
    first = client.v1.billing.meter_events.create(params, {"idempotency_key": "k-1"})
    again = client.v1.billing.meter_events.create(params, {"idempotency_key": "k-1"})
    assert again.identifier == first.identifier
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    assert len(emu.meter_events()) == 1


def test_idempotency_key_reused_with_other_params(client: Any, customer: str) -> None:
    base = {"event_name": "api_calls", "payload": {"stripe_customer_id": customer, "value": "5"}}
    client.v1.billing.meter_events.create(base, {"idempotency_key": "k-2"})
    other = {**base, "payload": {"stripe_customer_id": customer, "value": "6"}}
    with pytest.raises(stripe.IdempotencyError) as raised:
        client.v1.billing.meter_events.create(other, {"idempotency_key": "k-2"})
    assert raised.value.http_status == 400
    assert raised.value.json_body["error"]["type"] == "idempotency_error"


def test_idempotency_on_v2_and_module_style(
    client: Any, module_stripe: Any, emu: RunningEmulator, customer: str
) -> None:
    params = {"event_name": "api_calls", "payload": {"stripe_customer_id": customer, "value": "2"}}
    client.v2.billing.meter_events.create(params, {"idempotency_key": "v2-k"})
    client.v2.billing.meter_events.create(params, {"idempotency_key": "v2-k"})
    with pytest.raises(stripe.IdempotencyError):
        client.v2.billing.meter_events.create(
            {**params, "identifier": "x"}, {"idempotency_key": "v2-k"}
        )
    a = stripe.Customer.create(email="x@example.com", idempotency_key="cust-k")
    b = stripe.Customer.create(email="x@example.com", idempotency_key="cust-k")
    assert a.id == b.id
    assert len(emu.meter_events()) == 1


def test_rate_limit_429(client: Any, emu: RunningEmulator) -> None:
    emu.set_rate_limit(3)
    time.sleep(1 - time.monotonic() % 1)  # start at a fresh one-second window
    for _ in range(3):
        client.v1.customers.list()
    with pytest.raises(stripe.RateLimitError) as raised:
        client.v1.customers.list()
    assert raised.value.http_status == 429
    assert raised.value.code is None or raised.value.code == "rate_limit"
    assert raised.value.json_body["error"]["code"] == "rate_limit"
    assert raised.value.headers["Stripe-Should-Retry"] == "true"
    assert raised.value.headers["Retry-After"] == "1"


def test_sdk_retries_after_rate_limit(emu: RunningEmulator) -> None:
    emu.set_rate_limit(1)
    time.sleep(1 - time.monotonic() % 1)
    retrying = emu.client(max_network_retries=3)
    retrying.v1.customers.list()
    retrying.v1.customers.list()  # 429 first, then retried in the next window
    assert emu.rate_limiter.rejected >= 1


@pytest.mark.parametrize("status", ["500", "503"])
def test_injected_server_errors(
    client: Any, emu: RunningEmulator, customer: str, status: str
) -> None:
    emu.fail_next(status, path="/v1/billing/meter_events")
    with pytest.raises(stripe.APIError) as raised:
        send(client, customer)
    assert raised.value.http_status == int(status)
    assert raised.value.headers["Stripe-Should-Retry"] == "true"
    assert emu.meter_events() == []  # not applied
    send(client, customer)  # the rule was for one request only
    assert len(emu.meter_events()) == 1


def test_sdk_retries_injected_503_with_same_idempotency_key(
    emu: RunningEmulator, customer: str
) -> None:
    emu.fail_next("503", path="/v1/billing/meter_events")
    send(emu.client(max_network_retries=1), customer, 3)
    assert emu.totals()[0]["value"] == 3
    assert emu.faults.describe()["injected"][-1]["kind"] == "503"


def test_connection_reset(client: Any, emu: RunningEmulator, customer: str) -> None:
    emu.fail_next("reset", path="/v1/billing/meter_events")
    with pytest.raises(stripe.APIConnectionError):
        send(client, customer)
    assert emu.meter_events() == []


def test_timeout_after_write_leaves_the_event_stored(emu: RunningEmulator, customer: str) -> None:
    emu.fail_next("timeout_after_write", path="/v1/billing/meter_events")
    impatient = emu.client(max_network_retries=0, http_client=stripe.RequestsClient(timeout=0.2))
    with pytest.raises(stripe.APIConnectionError):
        send(impatient, customer, 4, identifier="once")
    assert emu.totals()[0]["value"] == 4  # applied although the client saw a failure
    # A naive retry with a new idempotency key and no stable identifier double counts;
    # a retry with the same identifier is refused as a duplicate.
    send(impatient, customer, 4)
    assert emu.totals()[0]["value"] == 8
    with pytest.raises(stripe.InvalidRequestError):
        send(impatient, customer, 4, identifier="once")


def test_timeout_after_write_then_same_idempotency_key_replays(
    emu: RunningEmulator, customer: str
) -> None:
    emu.fail_next("timeout_after_write", path="/v1/billing/meter_events")
    impatient = emu.client(max_network_retries=0, http_client=stripe.RequestsClient(timeout=0.2))
    params = {"event_name": "api_calls", "payload": {"stripe_customer_id": customer, "value": "4"}}
    with pytest.raises(stripe.APIConnectionError):
        impatient.v1.billing.meter_events.create(params, {"idempotency_key": "tw"})
    replay = impatient.v1.billing.meter_events.create(params, {"idempotency_key": "tw"})
    assert replay.last_response.headers["Idempotent-Replayed"] == "true"
    assert emu.totals()[0]["value"] == 4


def test_seeded_fault_rates_are_reproducible(client: Any, emu: RunningEmulator) -> None:
    def run() -> list[bool]:
        emu.set_fault_rates({"500": 0.5}, seed=7)
        outcomes = []
        for _ in range(12):
            try:
                client.v1.customers.list()
                outcomes.append(True)
            except stripe.APIError:
                outcomes.append(False)
        emu.clear_faults()
        return outcomes

    first, second = run(), run()
    assert first == second
    assert True in first and False in first


def test_control_api(emu: RunningEmulator, customer: str, client: Any) -> None:
    send(client, customer, 2, identifier="ctl")
    base = f"{emu.url}/_emulator"
    assert httpx.get(f"{base}/meter_events").json()["data"][0]["identifier"] == "ctl"
    assert httpx.get(f"{base}/totals").json()["data"][0]["value"] == 2
    httpx.post(f"{base}/faults", json={"rules": [{"kind": "503", "path": "customers", "count": 1}]})
    assert httpx.get(f"{base}/faults").json()["rules"][0]["kind"] == "503"
    with pytest.raises(stripe.APIError):
        client.v1.customers.list()
    httpx.post(f"{base}/rate_limit", json={"per_second": 0})
    httpx.post(f"{base}/lag", json={"seconds": 0.5})
    assert emu.config.summary_lag_seconds == 0.5
    clock = httpx.post(f"{base}/clock", json={"now": 2_000_000_000, "frozen": True}).json()
    assert clock == {"now": 2_000_000_000, "frozen": True}
    assert httpx.post(f"{base}/clock", json={"advance": 60}).json()["now"] == 2_000_000_060
    assert (
        httpx.post(f"{base}/config", json={"invoice_grace_seconds": 60}).json()[
            "invoice_grace_seconds"
        ]
        == 60
    )
    assert httpx.get(base).json()["counts"]["meter_events"] == 1
    assert httpx.post(f"{base}/faults", json={"rules": [{"kind": "boom"}]}).status_code == 400
    assert httpx.get(f"{base}/nope").status_code == 404
    httpx.post(f"{base}/reset")
    assert httpx.get(f"{base}/meter_events").json()["data"] == []
