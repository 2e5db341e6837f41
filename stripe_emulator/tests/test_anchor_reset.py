"""``billing_cycle_anchor[type]=now`` on a subscription update, through the official SDK."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import stripe

from stripe_emulator.testing import RunningEmulator
from stripe_emulator.tests.helpers import make_meter, send

HOUR = 3600


def ts(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=UTC).timestamp())  # type: ignore[misc]


def subscribed(client: Any, anchor: int) -> tuple[Any, Any]:
    customer = client.v1.customers.create({"name": "anchored"})
    meter = make_meter(client)
    price = client.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount": 10,
            "product_data": {"name": "API calls"},
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    )
    sub = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": price.id}], "billing_cycle_anchor": anchor}
    )
    return customer, sub


def test_resetting_the_anchor_invoices_the_cut_period_and_starts_the_next(
    client: Any, emu: RunningEmulator
) -> None:
    emu.set_now(ts(2030, 3, 1), frozen=True)
    customer, sub = subscribed(client, ts(2030, 3, 1))
    reset_at = ts(2030, 3, 20, 12)
    emu.set_now(reset_at - HOUR, frozen=True)
    send(client, customer.id, 7, identifier="before", timestamp=reset_at - 2 * HOUR)

    emu.set_now(reset_at, frozen=True)
    updated = client.v1.subscriptions.update(sub.id, {"billing_cycle_anchor": {"type": "now"}})
    send(client, customer.id, 5, identifier="after", timestamp=reset_at + 60)

    assert updated.billing_cycle_anchor == reset_at
    item = updated["items"].data[0]
    assert (item.current_period_start, item.current_period_end) == (reset_at, ts(2030, 4, 20, 12))
    cut = client.v1.invoices.retrieve(updated.latest_invoice)
    assert (cut.billing_reason, cut.status) == ("subscription_update", "draft")
    assert (cut.period_start, cut.period_end) == (ts(2030, 3, 1), reset_at)
    assert cut.automatically_finalizes_at == reset_at + HOUR
    # Usage stamped before the reset, reported during the grace, still reaches the cut invoice.
    send(client, customer.id, 4, identifier="late", timestamp=reset_at - 60)
    emu.set_now(reset_at + HOUR, frozen=True)
    cut = client.v1.invoices.retrieve(cut.id)
    assert cut.status == "open"
    assert [(line.quantity, line.period.start, line.period.end) for line in cut.lines.data] == [
        (11, ts(2030, 3, 1), reset_at)
    ]

    # The next period counts from the new anchor, and its invoice is a cycle's.
    emu.set_now(ts(2030, 4, 20, 12) + HOUR, frozen=True)
    [following] = [
        i
        for i in client.v1.invoices.list({"subscription": sub.id}).data
        if i.billing_reason == "subscription_cycle"
    ]
    assert (following.period_start, following.period_end) == (reset_at, ts(2030, 4, 20, 12))
    assert following.status == "open"
    assert [line.quantity for line in following.lines.data] == [5]


def test_the_reset_emits_subscription_updated_with_the_old_anchor(
    client: Any, emu: RunningEmulator
) -> None:
    emu.set_now(ts(2030, 3, 1), frozen=True)
    _, sub = subscribed(client, ts(2030, 3, 1))
    emu.set_now(ts(2030, 3, 9), frozen=True)
    client.v1.subscriptions.update(sub.id, {"billing_cycle_anchor": {"type": "now"}})
    client.v1.subscriptions.update(sub.id, {"metadata": {"plan": "gold"}})
    client.v1.subscriptions.update(sub.id, {"billing_cycle_anchor": {"type": "unchanged"}})

    events = client.v1.events.list({"type": "customer.subscription.updated"}).data
    metadata_change, reset = events  # newest first; "unchanged" changed nothing: no event
    assert reset.data.object.id == sub.id
    assert reset.data.object.billing_cycle_anchor == ts(2030, 3, 9)
    assert reset.data.object.metadata.to_dict() == {}  # the subscription as it was then
    assert reset.data.previous_attributes.billing_cycle_anchor == ts(2030, 3, 1)
    assert metadata_change.data.previous_attributes.metadata.to_dict() == {}
    assert "billing_cycle_anchor" not in metadata_change.data.previous_attributes


@pytest.mark.parametrize(
    ("anchor", "param"),
    [
        ("now", "billing_cycle_anchor"),  # the string form before 2026-09-30.endive
        ({"type": "later"}, "billing_cycle_anchor[type]"),
    ],
)
def test_a_malformed_anchor_is_refused_by_its_param(
    client: Any, emu: RunningEmulator, anchor: Any, param: str
) -> None:
    emu.set_now(ts(2030, 3, 1), frozen=True)
    _, sub = subscribed(client, ts(2030, 3, 1))
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.subscriptions.update(sub.id, {"billing_cycle_anchor": anchor})
    assert refused.value.param == param
    assert client.v1.subscriptions.retrieve(sub.id).billing_cycle_anchor == ts(2030, 3, 1)


def test_a_canceled_subscription_keeps_its_anchor(client: Any, emu: RunningEmulator) -> None:
    emu.set_now(ts(2030, 3, 1), frozen=True)
    _, sub = subscribed(client, ts(2030, 3, 1))
    client.v1.subscriptions.cancel(sub.id)
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.subscriptions.update(sub.id, {"billing_cycle_anchor": {"type": "now"}})
    assert refused.value.param == "billing_cycle_anchor"
