"""Meter events (v1 and v2) and their cancellation.

The rules applied here are the ones Stripe documents: whole-number values
(negative allowed), a timestamp within 35 days in the past and 5 minutes in the
future of the customer's clock, an ``identifier`` unique over a rolling 24 h,
and cancellation only within 24 h of receipt. Failures carry the codes Stripe
uses in meter error reports, so the stream can report the same reasons.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from stripe_emulator.errors import StripeAPIError, invalid_request
from stripe_emulator.ids import new_id
from stripe_emulator.meters import active_meter_for
from stripe_emulator.params import opt_dict, opt_str, req_str
from stripe_emulator.routing import ApiRequest, ApiResponse, Router
from stripe_emulator.state import MeterEventRecord, Obj, State, monotonic

MAX_PAST_SECONDS = 35 * 86_400
MAX_FUTURE_SECONDS = 5 * 60
DEDUP_SECONDS = 24 * 3600
CANCEL_SECONDS = 24 * 3600
_WHOLE = re.compile(r"^-?\d{1,19}$")


def iso(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def parse_iso(value: Any, param: str) -> int:
    try:
        return int(datetime.fromisoformat(str(value)).timestamp())
    except ValueError:
        raise invalid_request(f"Invalid timestamp: {value}", param=param) from None


def _rejected(code: str, message: str, param: str | None = None) -> StripeAPIError:
    return invalid_request(message, code=code, param=param)


def ingest(
    state: State,
    *,
    event_name: str,
    payload: dict[str, Any],
    identifier: str | None,
    timestamp: int | None,
    source: str,
) -> MeterEventRecord:
    """Validate and store one meter event, or raise the Stripe error it earns."""
    if identifier is not None and len(identifier) > 100:
        raise invalid_request("identifier must be at most 100 characters.", param="identifier")
    meter = active_meter_for(state, event_name)
    if meter is None:
        archived = any(m["event_name"] == event_name for m in state.meters.values())
        raise _rejected(
            "archived_meter" if archived else "no_meter",
            f"No active meter found for event_name '{event_name}'.",
            "event_name",
        )
    customer_key = meter["customer_mapping"]["event_payload_key"]
    customer_id = payload.get(customer_key)
    if customer_id in (None, ""):
        raise _rejected(
            "meter_event_no_customer_defined",
            f"The payload is missing the customer key '{customer_key}'.",
            f"payload[{customer_key}]",
        )
    if str(customer_id) not in state.customers:
        raise _rejected(
            "meter_event_customer_not_found",
            f"No such customer: '{customer_id}'",
            f"payload[{customer_key}]",
        )
    value_key = meter["value_settings"]["event_payload_key"]
    raw_value = payload.get(value_key)
    if raw_value is None and meter["default_aggregation"]["formula"] == "count":
        raw_value = "1"  # count meters ignore the value; Stripe does not require it
    if raw_value is None or isinstance(raw_value, bool) or not _WHOLE.match(str(raw_value)):
        raise _rejected(
            "meter_event_invalid_value",
            f"The value for '{value_key}' must be a whole number, got {raw_value!r}.",
            f"payload[{value_key}]",
        )
    now = state.now_for_customer(str(customer_id))
    when = now if timestamp is None else timestamp
    if when < now - MAX_PAST_SECONDS:
        raise _rejected(
            "timestamp_too_far_in_past",
            "The timestamp must be within the past 35 calendar days.",
            "timestamp",
        )
    if when > now + MAX_FUTURE_SECONDS:
        raise _rejected(
            "timestamp_in_future",
            "The timestamp cannot be more than 5 minutes in the future.",
            "timestamp",
        )
    identifier = identifier or new_id("mev_ident", 20)
    previous = state.by_identifier.get(identifier)
    if previous is not None and now - previous.received_at < DEDUP_SECONDS:
        raise _rejected(
            "resource_already_exists",
            # Stripe's own wording, which clients match on to treat a resend as delivered.
            f"An event already exists with identifier {identifier}.",
            "identifier",
        )
    record = MeterEventRecord(
        identifier=identifier,
        event_name=event_name,
        meter_id=meter["id"],
        customer_id=str(customer_id),
        value=int(str(raw_value)),
        timestamp=when,
        received_at=now,
        visible_after=monotonic() + state.config.summary_lag_seconds,
        payload={str(k): str(v) for k, v in payload.items()},
        source=source,
    )
    state.meter_events.append(record)
    state.by_identifier[identifier] = record
    return record


def cancel(state: State, event_name: str, identifier: str) -> MeterEventRecord:
    record = state.by_identifier.get(identifier)
    if record is None or record.event_name != event_name:
        raise invalid_request(
            f"No meter event with identifier '{identifier}' for event_name '{event_name}'.",
            param="cancel[identifier]",
        )
    if state.now_for_customer(record.customer_id) - record.received_at > CANCEL_SECONDS:
        raise invalid_request(
            "Meter events can only be cancelled within 24 hours of being received.",
            param="cancel[identifier]",
        )
    record.cancelled = True
    return record


def create_v1(state: State, req: ApiRequest) -> Obj:
    params = req.params
    timestamp = params.get("timestamp")
    if timestamp not in (None, "") and not _WHOLE.match(str(timestamp)):
        raise invalid_request(f"Invalid integer: {timestamp}", param="timestamp")
    record = ingest(
        state,
        event_name=req_str(params, "event_name"),
        payload=opt_dict(params, "payload"),
        identifier=opt_str(params, "identifier"),
        timestamp=None if timestamp in (None, "") else int(str(timestamp)),
        source="v1",
    )
    return {
        "object": "billing.meter_event",
        "created": record.received_at,
        "event_name": record.event_name,
        "identifier": record.identifier,
        "livemode": False,
        "payload": record.payload,
        "timestamp": record.timestamp,
    }


def v2_event_json(record: MeterEventRecord) -> Obj:
    return {
        "object": "v2.billing.meter_event",
        "created": iso(record.received_at),
        "event_name": record.event_name,
        "identifier": record.identifier,
        "livemode": False,
        "payload": record.payload,
        "timestamp": iso(record.timestamp),
    }


def create_v2(state: State, req: ApiRequest) -> Obj:
    params = req.params
    raw_ts = params.get("timestamp")
    record = ingest(
        state,
        event_name=req_str(params, "event_name"),
        payload=opt_dict(params, "payload"),
        identifier=opt_str(params, "identifier"),
        timestamp=None if raw_ts in (None, "") else parse_iso(raw_ts, "timestamp"),
        source="v2",
    )
    return v2_event_json(record)


def _cancel_params(params: dict[str, Any]) -> tuple[str, str]:
    kind = opt_str(params, "type") or "cancel"
    if kind != "cancel":
        raise invalid_request("Only type=cancel is supported.", param="type")
    identifier = req_str(opt_dict(params, "cancel"), "identifier")
    return req_str(params, "event_name"), identifier


def adjust_v1(state: State, req: ApiRequest) -> Obj:
    event_name, identifier = _cancel_params(req.params)
    cancel(state, event_name, identifier)
    # Stripe applies adjustments asynchronously and answers "pending"; the emulator
    # applies them at once but keeps the documented answer.
    return {
        "object": "billing.meter_event_adjustment",
        "cancel": {"identifier": identifier},
        "event_name": event_name,
        "livemode": False,
        "status": "pending",
        "type": "cancel",
    }


def adjust_v2(state: State, req: ApiRequest) -> ApiResponse:
    event_name, identifier = _cancel_params(req.params)
    record = cancel(state, event_name, identifier)
    return ApiResponse(
        {
            "id": new_id("mea", 24),
            "object": "v2.billing.meter_event_adjustment",
            "cancel": {"identifier": identifier},
            "created": iso(state.now_for_customer(record.customer_id)),
            "event_name": event_name,
            "livemode": False,
            "status": "pending",
            "type": "cancel",
        }
    )


def register(router: Router) -> None:
    router.add("POST", "/v1/billing/meter_events", create_v1)
    router.add("POST", "/v2/billing/meter_events", create_v2)
    router.add("POST", "/v1/billing/meter_event_adjustments", adjust_v1)
    router.add("POST", "/v2/billing/meter_event_adjustments", adjust_v2)
