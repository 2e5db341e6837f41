"""Small builders shared by the emulator tests."""

from __future__ import annotations

from typing import Any


def make_meter(
    client: Any, event_name: str = "api_calls", formula: str = "sum", **extra: Any
) -> Any:
    return client.v1.billing.meters.create(
        {
            "display_name": f"{event_name} meter",
            "event_name": event_name,
            "default_aggregation": {"formula": formula},
            **extra,
        }
    )


def send(
    client: Any, customer: str, value: Any = "1", event_name: str = "api_calls", **extra: Any
) -> Any:
    return client.v1.billing.meter_events.create(
        {
            "event_name": event_name,
            "payload": {"stripe_customer_id": customer, "value": str(value)},
            **extra,
        }
    )


def minute_floor(ts: int) -> int:
    return ts - ts % 60
