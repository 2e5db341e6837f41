"""Aggregation of meter events, as read back by summaries and invoices.

``sum`` adds values, ``count`` counts events, ``last`` takes the value of the
event with the latest timestamp (ties: the one received last). Cancelled events
never count. Summaries and previews only see events older than the configured
lag, which is how the emulator models Stripe's eventual consistency.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from stripe_emulator.customers import get_customer
from stripe_emulator.errors import invalid_request, missing_param
from stripe_emulator.listing import page
from stripe_emulator.meters import get_meter
from stripe_emulator.params import one_of, opt_int, req_str
from stripe_emulator.routing import ApiRequest, Router
from stripe_emulator.state import MeterEventRecord, Obj, State, monotonic

WINDOW_SECONDS = {"minute": 60, "hour": 3600, "day": 86_400}


def aggregate(records: Iterable[MeterEventRecord], formula: str) -> int:
    chosen = list(records)
    if formula == "count":
        return len(chosen)
    if formula == "last":
        # Stable max: a later-received event wins a timestamp tie.
        latest: MeterEventRecord | None = None
        for record in chosen:
            if latest is None or record.timestamp >= latest.timestamp:
                latest = record
        return 0 if latest is None else latest.value
    return sum(record.value for record in chosen)


def events_for(
    state: State, meter_id: str, customer_id: str, start: int, end: int, *, lagged: bool
) -> list[MeterEventRecord]:
    """Live events of one meter and customer with ``start <= timestamp < end``."""
    horizon = monotonic()
    return [
        r
        for r in state.meter_events
        if r.meter_id == meter_id
        and r.customer_id == customer_id
        and not r.cancelled
        and start <= r.timestamp < end
        and (not lagged or r.visible_after <= horizon)
    ]


def usage(
    state: State, meter_id: str, customer_id: str, start: int, end: int, *, lagged: bool
) -> int:
    formula = state.meters[meter_id]["default_aggregation"]["formula"]
    return aggregate(events_for(state, meter_id, customer_id, start, end, lagged=lagged), formula)


def _summary(meter_id: str, customer_id: str, start: int, end: int, value: int) -> Obj:
    digest = hashlib.sha1(f"{meter_id}|{customer_id}|{start}|{end}".encode()).hexdigest()
    return {
        "id": f"mtrusg_test_{digest}",
        "object": "billing.meter_event_summary",
        "aggregated_value": value,
        "end_time": end,
        "livemode": False,
        "meter": meter_id,
        "start_time": start,
    }


def list_summaries(state: State, req: ApiRequest) -> Obj:
    meter = get_meter(state, req.args["id"])
    params = req.params
    customer_id = req_str(params, "customer")
    get_customer(state, customer_id, param="customer")
    start, end = opt_int(params, "start_time"), opt_int(params, "end_time")
    if start is None:
        raise missing_param("start_time")
    if end is None:
        raise missing_param("end_time")
    window = params.get("value_grouping_window")
    grouping = (
        None
        if window in (None, "")
        else one_of(params, "value_grouping_window", ("hour", "day"), "day")
    )
    step = WINDOW_SECONDS[grouping or "minute"]
    for name, value in (("start_time", start), ("end_time", end)):
        if value % step:
            boundary = {"minute": "minute", "hour": "hour", "day": "day (00:00 UTC)"}
            raise invalid_request(
                f"{name} must be aligned with {boundary[grouping or 'minute']} boundaries.",
                param=name,
            )
    if end <= start:
        raise invalid_request("end_time must be after start_time.", param="end_time")
    records = events_for(state, meter["id"], customer_id, start, end, lagged=True)
    formula = meter["default_aggregation"]["formula"]
    if grouping is None:
        summaries = [_summary(meter["id"], customer_id, start, end, aggregate(records, formula))]
    else:
        buckets: dict[int, list[MeterEventRecord]] = {}
        for record in records:
            bucket = record.timestamp - (record.timestamp - start) % step
            buckets.setdefault(bucket, []).append(record)
        # Stripe lists only windows that hold usage, newest first.
        summaries = [
            _summary(meter["id"], customer_id, b, b + step, aggregate(buckets[b], formula))
            for b in sorted(buckets, reverse=True)
        ]
    return page(summaries, params, f"/v1/billing/meters/{meter['id']}/event_summaries")


def register(router: Router) -> None:
    router.add("GET", "/v1/billing/meters/{id}/event_summaries", list_summaries)
