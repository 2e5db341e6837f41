"""Customers: the payer a meter event's payload points at."""

from __future__ import annotations

from stripe_emulator.errors import invalid_request, not_found
from stripe_emulator.ids import new_id
from stripe_emulator.listing import newest_first, page
from stripe_emulator.params import metadata, opt_str
from stripe_emulator.routing import ApiRequest, Router
from stripe_emulator.state import Obj, State


def get_customer(state: State, customer_id: str, *, param: str = "id") -> Obj:
    customer = state.customers.get(customer_id)
    if customer is None:
        raise not_found("customer", customer_id, param=param)
    return customer


def create(state: State, req: ApiRequest) -> Obj:
    test_clock = opt_str(req.params, "test_clock")
    if test_clock is not None and test_clock not in state.test_clocks:
        raise not_found("test_clock", test_clock, param="test_clock")
    customer: Obj = {
        "id": new_id("cus", 14),
        "object": "customer",
        "address": None,
        "balance": 0,
        "created": state.now_on(test_clock),
        "currency": None,
        "delinquent": False,
        "description": opt_str(req.params, "description"),
        "email": opt_str(req.params, "email"),
        "invoice_prefix": new_id("X", 6)[2:].upper(),
        "livemode": False,
        "metadata": metadata(req.params),
        "name": opt_str(req.params, "name"),
        "phone": opt_str(req.params, "phone"),
        "preferred_locales": [],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": test_clock,
    }
    state.customers[customer["id"]] = customer
    return customer


def retrieve(state: State, req: ApiRequest) -> Obj:
    return get_customer(state, req.args["id"])


def update(state: State, req: ApiRequest) -> Obj:
    customer = get_customer(state, req.args["id"])
    for name in ("email", "name", "description", "phone"):
        if name in req.params:
            customer[name] = opt_str(req.params, name)
    if "metadata" in req.params:
        customer["metadata"] = {**customer["metadata"], **metadata(req.params)}
    return customer


def delete(state: State, req: ApiRequest) -> Obj:
    customer = get_customer(state, req.args["id"])
    if any(sub["customer"] == customer["id"] for sub in state.subscriptions.values()):
        # Stripe cancels the subscriptions; the emulator keeps billing simple instead.
        raise invalid_request("Cancel the customer's subscriptions before deleting it.")
    del state.customers[customer["id"]]
    return {"id": customer["id"], "object": "customer", "deleted": True}


def list_(state: State, req: ApiRequest) -> Obj:
    email, clock = opt_str(req.params, "email"), opt_str(req.params, "test_clock")
    found = [
        c
        for c in newest_first(state.customers.values())
        if (email is None or c["email"] == email) and (clock is None or c["test_clock"] == clock)
    ]
    return page(found, req.params, "/v1/customers")


def register(router: Router) -> None:
    router.add("POST", "/v1/customers", create)
    router.add("GET", "/v1/customers", list_)
    router.add("GET", "/v1/customers/{id}", retrieve)
    router.add("POST", "/v1/customers/{id}", update)
    router.add("DELETE", "/v1/customers/{id}", delete)
