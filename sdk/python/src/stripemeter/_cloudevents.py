"""Usage as CloudEvents 1.0, for teams whose app already produces them.

The service maps ``id`` to the idempotency key, ``subject`` to customerRef,
``type`` to the metric, ``time`` to ts and ``data`` to quantity and meta.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stripemeter._events import UsageEvent, wire_time

DEFAULT_SOURCE = "stripemeter-client-python"
CloudEventLike = UsageEvent | Mapping[str, Any]


def to_cloudevent(event: UsageEvent, source: str = DEFAULT_SOURCE) -> dict[str, Any]:
    """A usage event as a CloudEvent; its ``id`` is the event's key (the caller's or derived).

    An ``id`` is always an explicit key to the service, so the same event sent
    once as JSON without a key and once as a CloudEvent counts twice.
    """
    wire = event.to_wire()
    data: dict[str, Any] = {"quantity": wire["quantity"]}
    if event.meta:
        data["meta"] = event.meta
    return {
        "specversion": "1.0",
        "id": event.idempotency_key,
        "source": source,
        "subject": event.customer_ref,
        "type": event.metric,
        "time": wire_time(event.ts),
        "data": data,
    }


def checked_cloudevent(event: CloudEventLike, source: str) -> dict[str, Any]:
    if isinstance(event, UsageEvent):
        return to_cloudevent(event, source)
    if not isinstance(event, Mapping):
        raise TypeError(
            f"a CloudEvent must be a mapping or a UsageEvent, not {type(event).__name__}"
        )
    if event.get("specversion") != "1.0":
        raise ValueError("a CloudEvent needs specversion '1.0'")
    for name in ("id", "source", "type"):
        if not isinstance(event.get(name), str) or not event[name]:
            raise ValueError(f"a CloudEvent needs a non-empty {name!r}: retries depend on its id")
    return dict(event)
