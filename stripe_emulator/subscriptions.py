"""Subscriptions and their items, with billing periods counted from the anchor.

As in current API versions, ``current_period_start``/``current_period_end`` live
on each subscription item. Every item of one subscription shares one period.
"""

from __future__ import annotations

import copy

from stripe_emulator.billing_cycle import end_subscription, reset_anchor, start_subscription
from stripe_emulator.catalog import get_price
from stripe_emulator.customers import get_customer
from stripe_emulator.cycles import current_period, next_period, set_period
from stripe_emulator.errors import invalid_request, missing_param, not_found
from stripe_emulator.ids import new_id
from stripe_emulator.listing import newest_first, page
from stripe_emulator.params import (
    Params,
    metadata,
    one_of,
    opt_bool,
    opt_dict,
    opt_int,
    opt_list,
    opt_str,
    req_str,
)
from stripe_emulator.periods import boundary
from stripe_emulator.routing import ApiRequest, Router
from stripe_emulator.state import Obj, State


def get_subscription(state: State, sub_id: str, *, param: str = "id") -> Obj:
    sub = state.subscriptions.get(sub_id)
    if sub is None:
        raise not_found("subscription", sub_id, param=param)
    return sub


def create(state: State, req: ApiRequest) -> Obj:
    params = req.params
    customer = get_customer(state, req_str(params, "customer"), param="customer")
    raw_items = opt_list(params, "items")
    if not raw_items:
        raise missing_param("items")
    prices = [get_price(state, req_str(item, "price"), param="items[price]") for item in raw_items]
    recurring = [p["recurring"] for p in prices]
    if any(r is None for r in recurring):
        raise invalid_request("Subscriptions need recurring prices.", param="items")
    if len({(r["interval"], r["interval_count"]) for r in recurring}) > 1:
        raise invalid_request(
            "All prices of a subscription must share one interval.", param="items"
        )
    if len({p["currency"] for p in prices}) > 1:
        raise invalid_request(
            "All prices of a subscription must share one currency.", param="items"
        )
    now = state.now_on(customer["test_clock"])
    interval, count = recurring[0]["interval"], recurring[0]["interval_count"]
    anchor = opt_int(params, "billing_cycle_anchor") or now
    if anchor < now:
        raise invalid_request(
            "billing_cycle_anchor cannot be in the past.", param="billing_cycle_anchor"
        )
    if anchor > boundary(now, interval, count, 1):
        raise invalid_request(
            "billing_cycle_anchor cannot be later than the end of the first full period.",
            param="billing_cycle_anchor",
        )
    sub_id = new_id("sub", 24)
    items = []
    for raw, price in zip(raw_items, prices, strict=True):
        item: Obj = {
            "id": new_id("si", 14),
            "object": "subscription_item",
            "billing_thresholds": None,
            "created": now,
            "current_period_end": 0,
            "current_period_start": 0,
            "discounts": [],
            "metadata": metadata(raw),
            "price": price,
            "subscription": sub_id,
            "tax_rates": [],
        }
        if price["recurring"]["usage_type"] == "licensed":
            item["quantity"] = opt_int(raw, "quantity") or 1
        items.append(item)
    sub: Obj = {
        "id": sub_id,
        "object": "subscription",
        "billing_cycle_anchor": anchor,
        "cancel_at": None,
        "cancel_at_period_end": False,
        "canceled_at": None,
        "collection_method": one_of(
            params,
            "collection_method",
            ("charge_automatically", "send_invoice"),
            "charge_automatically",
        ),
        "created": now,
        "currency": prices[0]["currency"],
        "customer": customer["id"],
        "days_until_due": opt_int(params, "days_until_due"),
        "ended_at": None,
        "items": {
            "object": "list",
            "data": items,
            "has_more": False,
            "total_count": len(items),
            "url": f"/v1/subscription_items?subscription={sub_id}",
        },
        "latest_invoice": None,
        "livemode": False,
        "metadata": metadata(params),
        "start_date": now,
        "status": "active",
        "test_clock": customer["test_clock"],
    }
    set_period(sub, next_period(sub, now))
    state.subscriptions[sub_id] = sub
    start_subscription(state, sub)
    state.emit("customer.subscription.created", copy.deepcopy(sub), test_clock=sub["test_clock"])
    return sub


def retrieve(state: State, req: ApiRequest) -> Obj:
    return get_subscription(state, req.args["id"])


# The fields an update may change, reported in ``previous_attributes`` when they do.
UPDATABLE = ("metadata", "cancel_at_period_end", "cancel_at", "billing_cycle_anchor")


def update(state: State, req: ApiRequest) -> Obj:
    sub = get_subscription(state, req.args["id"])
    reset = _anchor_update(req.params)
    if reset and sub["status"] != "active":
        raise invalid_request(
            f"A {sub['status']} subscription's billing cycle anchor cannot be reset.",
            param="billing_cycle_anchor",
        )
    before = copy.deepcopy({name: sub[name] for name in (*UPDATABLE, "latest_invoice")})
    if "metadata" in req.params:
        sub["metadata"] = {**sub["metadata"], **metadata(req.params)}
    if (at_end := opt_bool(req.params, "cancel_at_period_end")) is not None:
        sub["cancel_at_period_end"] = at_end
        sub["cancel_at"] = current_period(sub)[1] if at_end else None
    if reset:
        reset_anchor(state, sub)
    changed = {name: old for name, old in before.items() if sub[name] != old}
    if changed:
        state.emit(
            "customer.subscription.updated",
            copy.deepcopy(sub),  # as it is now, not as a later change leaves it
            test_clock=sub["test_clock"],
            previous_attributes=changed,
        )
    return sub


def _anchor_update(params: Params) -> bool:
    """Whether the update resets the anchor to now (the only change besides ``unchanged``).

    Since API version 2026-09-30.endive the parameter is an object,
    ``billing_cycle_anchor[type]=now``, not the string ``now``.
    """
    if "billing_cycle_anchor" not in params:
        return False
    anchor = opt_dict(params, "billing_cycle_anchor")
    kind: object = anchor.get("type")
    if kind not in ("now", "unchanged"):
        raise invalid_request(
            "Invalid billing_cycle_anchor[type]: must be one of now, unchanged",
            param="billing_cycle_anchor[type]",
        )
    return kind == "now"


def cancel(state: State, req: ApiRequest) -> Obj:
    sub = get_subscription(state, req.args["id"])
    if sub["status"] == "canceled":
        raise invalid_request("This subscription is already canceled.")
    end_subscription(state, sub, invoice_now=opt_bool(req.params, "invoice_now") is True)
    return sub


def list_(state: State, req: ApiRequest) -> Obj:
    customer, status = opt_str(req.params, "customer"), opt_str(req.params, "status")
    found = [
        s
        for s in newest_first(state.subscriptions.values())
        if (customer is None or s["customer"] == customer)
        and (
            status == "all"
            or (status is None and s["status"] != "canceled")
            or s["status"] == status
        )
    ]
    return page(found, req.params, "/v1/subscriptions")


def _all_items(state: State) -> dict[str, Obj]:
    return {i["id"]: i for s in state.subscriptions.values() for i in s["items"]["data"]}


def retrieve_item(state: State, req: ApiRequest) -> Obj:
    item = _all_items(state).get(req.args["id"])
    if item is None:
        raise not_found("subscription_item", req.args["id"])
    return item


def list_items(state: State, req: ApiRequest) -> Obj:
    sub = get_subscription(state, req_str(req.params, "subscription"), param="subscription")
    return page(sub["items"]["data"], req.params, "/v1/subscription_items")


def register(router: Router) -> None:
    router.add("POST", "/v1/subscriptions", create)
    router.add("GET", "/v1/subscriptions", list_)
    router.add("GET", "/v1/subscriptions/{id}", retrieve)
    router.add("POST", "/v1/subscriptions/{id}", update)
    router.add("DELETE", "/v1/subscriptions/{id}", cancel)
    router.add("GET", "/v1/subscription_items", list_items)
    router.add("GET", "/v1/subscription_items/{id}", retrieve_item)
