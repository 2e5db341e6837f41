"""Test clocks: frozen time for a group of customers, moved forward on request.

Stripe advances asynchronously (status ``advancing`` then ``ready``); the
emulator does the work inside the advance call and answers ``ready``, which a
client polling for ``ready`` handles the same way.
"""

from __future__ import annotations

from stripe_emulator.billing_cycle import advance_clock
from stripe_emulator.errors import invalid_request, not_found
from stripe_emulator.ids import new_id
from stripe_emulator.listing import newest_first, page
from stripe_emulator.params import opt_str, req_int
from stripe_emulator.routing import ApiRequest, Router
from stripe_emulator.state import Obj, State

DELETES_AFTER_SECONDS = 30 * 86_400


def get_clock(state: State, clock_id: str) -> Obj:
    clock = state.test_clocks.get(clock_id)
    if clock is None:
        raise not_found("test_helpers.test_clock", clock_id)
    return clock


def create(state: State, req: ApiRequest) -> Obj:
    frozen_time = req_int(req.params, "frozen_time")
    clock: Obj = {
        "id": new_id("clock", 24),
        "object": "test_helpers.test_clock",
        "created": state.clock.now(),
        "deletes_after": state.clock.now() + DELETES_AFTER_SECONDS,
        "frozen_time": frozen_time,
        "livemode": False,
        "name": opt_str(req.params, "name"),
        "status": "ready",
        "status_details": {},
    }
    state.test_clocks[clock["id"]] = clock
    return clock


def retrieve(state: State, req: ApiRequest) -> Obj:
    return get_clock(state, req.args["id"])


def advance(state: State, req: ApiRequest) -> Obj:
    clock = get_clock(state, req.args["id"])
    frozen_time = req_int(req.params, "frozen_time")
    if frozen_time <= clock["frozen_time"]:
        raise invalid_request(
            "The frozen_time must be after the test clock's current frozen_time.",
            param="frozen_time",
        )
    clock["frozen_time"] = frozen_time
    advance_clock(state, clock["id"])
    return clock


def delete(state: State, req: ApiRequest) -> Obj:
    clock = get_clock(state, req.args["id"])
    # Deleting a clock deletes the objects living in its time, as in Stripe.
    customers = {c for c, obj in state.customers.items() if obj["test_clock"] == clock["id"]}
    for sub_id in [s for s, obj in state.subscriptions.items() if obj["customer"] in customers]:
        del state.subscriptions[sub_id]
    for customer_id in customers:
        del state.customers[customer_id]
    del state.test_clocks[clock["id"]]
    return {"id": clock["id"], "object": "test_helpers.test_clock", "deleted": True}


def list_(state: State, req: ApiRequest) -> Obj:
    return page(
        newest_first(state.test_clocks.values()), req.params, "/v1/test_helpers/test_clocks"
    )


def register(router: Router) -> None:
    router.add("POST", "/v1/test_helpers/test_clocks", create)
    router.add("GET", "/v1/test_helpers/test_clocks", list_)
    router.add("GET", "/v1/test_helpers/test_clocks/{id}", retrieve)
    router.add("DELETE", "/v1/test_helpers/test_clocks/{id}", delete)
    router.add("POST", "/v1/test_helpers/test_clocks/{id}/advance", advance)
