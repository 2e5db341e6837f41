"""Billing meters: what a meter event's name maps to and how it aggregates."""

from __future__ import annotations

from stripe_emulator.errors import invalid_request, not_found
from stripe_emulator.ids import new_id
from stripe_emulator.listing import newest_first, page
from stripe_emulator.params import one_of, opt_dict, opt_str, req_str
from stripe_emulator.routing import ApiRequest, Router
from stripe_emulator.state import Obj, State

FORMULAS = ("sum", "count", "last")


def get_meter(state: State, meter_id: str) -> Obj:
    meter = state.meters.get(meter_id)
    if meter is None:
        raise not_found("billing.meter", meter_id)
    return meter


def active_meter_for(state: State, event_name: str) -> Obj | None:
    for meter in state.meters.values():
        if meter["event_name"] == event_name and meter["status"] == "active":
            return meter
    return None


def _ensure_event_name_free(state: State, event_name: str) -> None:
    if active_meter_for(state, event_name) is not None:
        raise invalid_request(
            f"An active meter with event_name '{event_name}' already exists.",
            param="event_name",
        )


def create(state: State, req: ApiRequest) -> Obj:
    params = req.params
    display_name = req_str(params, "display_name")
    event_name = req_str(params, "event_name")
    if len(event_name) > 100:
        raise invalid_request("event_name must be at most 100 characters.", param="event_name")
    aggregation = opt_dict(params, "default_aggregation")
    if not aggregation:
        raise invalid_request(
            "Missing required param: default_aggregation.", param="default_aggregation"
        )
    formula = req_str(aggregation, "formula")
    if formula not in FORMULAS:
        raise invalid_request(
            f"Invalid formula: must be one of {', '.join(FORMULAS)}",
            param="default_aggregation[formula]",
        )
    mapping = opt_dict(params, "customer_mapping")
    if mapping and opt_str(mapping, "type") not in (None, "by_id"):
        raise invalid_request(
            "customer_mapping[type] must be by_id.", param="customer_mapping[type]"
        )
    window = opt_str(params, "event_time_window")
    if window is not None:
        window = one_of(params, "event_time_window", ("day", "hour"), "day")
    _ensure_event_name_free(state, event_name)
    now = state.clock.now()
    meter: Obj = {
        "id": new_id("mtr_test", 32),
        "object": "billing.meter",
        "created": now,
        "customer_mapping": {
            "event_payload_key": opt_str(mapping, "event_payload_key") or "stripe_customer_id",
            "type": "by_id",
        },
        "default_aggregation": {"formula": formula},
        "display_name": display_name,
        "event_name": event_name,
        "event_time_window": window,
        "livemode": False,
        "status": "active",
        "status_transitions": {"deactivated_at": None},
        "updated": now,
        "value_settings": {
            "event_payload_key": opt_str(opt_dict(params, "value_settings"), "event_payload_key")
            or "value"
        },
    }
    state.meters[meter["id"]] = meter
    return meter


def retrieve(state: State, req: ApiRequest) -> Obj:
    return get_meter(state, req.args["id"])


def update(state: State, req: ApiRequest) -> Obj:
    meter = get_meter(state, req.args["id"])
    if "display_name" in req.params:
        meter["display_name"] = req_str(req.params, "display_name")
    meter["updated"] = state.clock.now()
    return meter


def deactivate(state: State, req: ApiRequest) -> Obj:
    meter = get_meter(state, req.args["id"])
    if meter["status"] != "active":
        raise invalid_request("This meter is already inactive.")
    now = state.clock.now()
    meter.update(status="inactive", updated=now, status_transitions={"deactivated_at": now})
    return meter


def reactivate(state: State, req: ApiRequest) -> Obj:
    meter = get_meter(state, req.args["id"])
    if meter["status"] == "active":
        raise invalid_request("This meter is already active.")
    _ensure_event_name_free(state, meter["event_name"])
    meter.update(
        status="active", updated=state.clock.now(), status_transitions={"deactivated_at": None}
    )
    return meter


def list_(state: State, req: ApiRequest) -> Obj:
    status = opt_str(req.params, "status")
    found = [
        m for m in newest_first(state.meters.values()) if status is None or m["status"] == status
    ]
    return page(found, req.params, "/v1/billing/meters")


def register(router: Router) -> None:
    router.add("POST", "/v1/billing/meters", create)
    router.add("GET", "/v1/billing/meters", list_)
    router.add("GET", "/v1/billing/meters/{id}", retrieve)
    router.add("POST", "/v1/billing/meters/{id}", update)
    router.add("POST", "/v1/billing/meters/{id}/deactivate", deactivate)
    router.add("POST", "/v1/billing/meters/{id}/reactivate", reactivate)
