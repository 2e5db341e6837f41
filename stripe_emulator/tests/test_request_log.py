"""``GET /_emulator/requests``: what the account was asked per second and route, 429s apart."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
import stripe

from stripe_emulator.testing import RunningEmulator


def test_requests_are_counted_per_window_and_route_with_their_429s(
    client: Any, emu: RunningEmulator
) -> None:
    customer = client.v1.customers.create({"name": "a"})
    emu.set_rate_limit(2)
    time.sleep(1 - time.monotonic() % 1)  # start at a fresh one-second window
    since = httpx.get(f"{emu.url}/_emulator/requests").json()["now"]
    client.v1.customers.retrieve(customer.id)
    client.v1.customers.retrieve(customer.id)
    with pytest.raises(stripe.RateLimitError):
        client.v1.customers.list()

    rows = httpx.get(f"{emu.url}/_emulator/requests", params={"since": since}).json()["data"]

    assert [(r["route"], r["count"], r["limited"]) for r in rows] == [
        ("GET /v1/customers", 1, 1),
        ("GET /v1/customers/{id}", 2, 0),
    ]
    assert {r["second"] for r in rows} == {since}
    emu.reset()
    assert httpx.get(f"{emu.url}/_emulator/requests").json()["data"] == []
