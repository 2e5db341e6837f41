"""Products and prices, including metered and tiered prices kept for invoice math."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

from stripe_emulator.errors import invalid_request, missing_param, not_found
from stripe_emulator.ids import new_id
from stripe_emulator.listing import newest_first, page
from stripe_emulator.params import (
    metadata,
    one_of,
    opt_bool,
    opt_decimal,
    opt_dict,
    opt_int,
    opt_list,
    opt_str,
    req_str,
)
from stripe_emulator.periods import INTERVALS
from stripe_emulator.routing import ApiRequest, Router
from stripe_emulator.state import Obj, State


def _new_product(state: State, name: str, params: Any) -> Obj:
    product: Obj = {
        "id": new_id("prod", 14),
        "object": "product",
        "active": opt_bool(params, "active") is not False,
        "created": state.clock.now(),
        "default_price": None,
        "description": opt_str(params, "description"),
        "livemode": False,
        "metadata": metadata(params),
        "name": name,
        "type": "service",
        "updated": state.clock.now(),
    }
    state.products[product["id"]] = product
    return product


def create_product(state: State, req: ApiRequest) -> Obj:
    return _new_product(state, req_str(req.params, "name"), req.params)


def get_product(state: State, product_id: str, *, param: str = "id") -> Obj:
    product = state.products.get(product_id)
    if product is None:
        raise not_found("product", product_id, param=param)
    return product


def retrieve_product(state: State, req: ApiRequest) -> Obj:
    return get_product(state, req.args["id"])


def update_product(state: State, req: ApiRequest) -> Obj:
    product = get_product(state, req.args["id"])
    for name in ("name", "description"):
        if name in req.params:
            product[name] = opt_str(req.params, name)
    if (active := opt_bool(req.params, "active")) is not None:
        product["active"] = active
    if "metadata" in req.params:
        product["metadata"] = {**product["metadata"], **metadata(req.params)}
    product["updated"] = state.clock.now()
    return product


def list_products(state: State, req: ApiRequest) -> Obj:
    active = opt_bool(req.params, "active")
    found = [
        p for p in newest_first(state.products.values()) if active is None or p["active"] == active
    ]
    return page(found, req.params, "/v1/products")


def _decimal_str(value: Decimal | None) -> str | None:
    return None if value is None else format(value.normalize(), "f")


def _tiers(params: Any) -> list[Obj]:
    tiers: list[Obj] = []
    for i, raw in enumerate(opt_list(params, "tiers")):
        if not isinstance(raw, dict):
            raise invalid_request("Invalid tiers.", param=f"tiers[{i}]")
        up_to_raw = raw.get("up_to")
        if up_to_raw in (None, ""):
            raise missing_param(f"tiers[{i}][up_to]")
        up_to = None if up_to_raw == "inf" else opt_int(raw, "up_to")
        unit = opt_decimal(raw, "unit_amount_decimal")
        if unit is None:
            unit = Decimal(opt_int(raw, "unit_amount") or 0)
        flat = opt_decimal(raw, "flat_amount_decimal")
        if flat is None:
            flat = Decimal(opt_int(raw, "flat_amount") or 0)
        tiers.append(
            {
                "flat_amount": int(flat) if flat == int(flat) else None,
                "flat_amount_decimal": _decimal_str(flat),
                "unit_amount": int(unit) if unit == int(unit) else None,
                "unit_amount_decimal": _decimal_str(unit),
                "up_to": up_to,
            }
        )
    if tiers and tiers[-1]["up_to"] is not None:
        raise invalid_request("The last tier must have up_to=inf.", param="tiers")
    bounds = [t["up_to"] for t in tiers[:-1]]
    if any(b is None for b in bounds) or bounds != sorted(bounds):
        raise invalid_request("Tiers must be in ascending up_to order.", param="tiers")
    return tiers


def _recurring(state: State, params: Any) -> Obj | None:
    recurring = opt_dict(params, "recurring")
    if not recurring:
        return None
    interval = req_str(recurring, "interval")
    if interval not in INTERVALS:
        raise invalid_request(f"Invalid interval: {interval}", param="recurring[interval]")
    usage_type = one_of(recurring, "usage_type", ("licensed", "metered"), "licensed")
    meter = opt_str(recurring, "meter")
    if usage_type == "metered":
        if meter is None:
            # Since 2025-03-31.basil every metered price must be backed by a meter.
            raise invalid_request(
                "Metered prices must reference a billing meter.", param="recurring[meter]"
            )
        if meter not in state.meters:
            raise not_found("billing.meter", meter, param="recurring[meter]")
    return {
        "interval": interval,
        "interval_count": opt_int(recurring, "interval_count") or 1,
        "meter": meter,
        "trial_period_days": None,
        "usage_type": usage_type,
    }


def _transform_quantity(params: Any, scheme: str) -> Obj | None:
    """``transform_quantity[divide_by]`` and ``[round]``: per-unit prices only, as Stripe."""
    raw = opt_dict(params, "transform_quantity")
    if not raw:
        return None
    if scheme == "tiered":
        raise invalid_request(
            "transform_quantity cannot be used with tiered prices.", param="transform_quantity"
        )
    divide_by = opt_int(raw, "divide_by")
    if divide_by is None:
        raise missing_param("transform_quantity[divide_by]")
    if divide_by < 1:
        raise invalid_request(
            "transform_quantity[divide_by] must be at least 1.",
            param="transform_quantity[divide_by]",
        )
    rounding = opt_str(raw, "round")
    if rounding is None:
        raise missing_param("transform_quantity[round]")
    if rounding not in ("up", "down"):
        raise invalid_request(
            "Invalid transform_quantity[round]: must be one of up, down",
            param="transform_quantity[round]",
        )
    return {"divide_by": divide_by, "round": rounding}


def create_price(state: State, req: ApiRequest) -> Obj:
    params = req.params
    currency = req_str(params, "currency").lower()
    product_id = opt_str(params, "product")
    if product_id is not None:
        get_product(state, product_id, param="product")
    else:
        product_data = opt_dict(params, "product_data")
        if not product_data:
            raise missing_param("product")
        product_id = _new_product(state, req_str(product_data, "name"), product_data)["id"]
    scheme = one_of(params, "billing_scheme", ("per_unit", "tiered"), "per_unit")
    tiers, tiers_mode = _tiers(params), opt_str(params, "tiers_mode")
    unit = opt_decimal(params, "unit_amount_decimal")
    if unit is None and (raw_unit := opt_int(params, "unit_amount")) is not None:
        unit = Decimal(raw_unit)
    if scheme == "tiered":
        if not tiers or tiers_mode not in ("graduated", "volume"):
            raise invalid_request(
                "Tiered prices need tiers and tiers_mode (graduated or volume).",
                param="tiers_mode" if tiers else "tiers",
            )
    elif unit is None:
        raise missing_param("unit_amount")
    recurring = _recurring(state, params)
    transform = _transform_quantity(params, scheme)
    price: Obj = {
        "id": new_id("price", 24),
        "object": "price",
        "active": opt_bool(params, "active") is not False,
        "billing_scheme": scheme,
        "created": state.clock.now(),
        "currency": currency,
        "custom_unit_amount": None,
        "livemode": False,
        "lookup_key": opt_str(params, "lookup_key"),
        "metadata": metadata(params),
        "nickname": opt_str(params, "nickname"),
        "product": product_id,
        "recurring": recurring,
        "tax_behavior": "unspecified",
        "tiers": tiers if scheme == "tiered" else None,
        "tiers_mode": tiers_mode if scheme == "tiered" else None,
        "transform_quantity": transform,
        "type": "recurring" if recurring else "one_time",
        "unit_amount": int(unit) if unit is not None and unit == int(unit) else None,
        "unit_amount_decimal": _decimal_str(unit),
    }
    state.prices[price["id"]] = price
    state.emit("price.created", copy.deepcopy(price))
    return price


def get_price(state: State, price_id: str, *, param: str = "id") -> Obj:
    price = state.prices.get(price_id)
    if price is None:
        raise not_found("price", price_id, param=param)
    return price


def retrieve_price(state: State, req: ApiRequest) -> Obj:
    return get_price(state, req.args["id"])


def update_price(state: State, req: ApiRequest) -> Obj:
    price = get_price(state, req.args["id"])
    before = copy.deepcopy({name: price[name] for name in PRICE_UPDATABLE})
    if (active := opt_bool(req.params, "active")) is not None:
        price["active"] = active
    for name in ("nickname", "lookup_key"):
        if name in req.params:
            price[name] = opt_str(req.params, name)
    if "metadata" in req.params:
        price["metadata"] = {**price["metadata"], **metadata(req.params)}
    changed = {name: old for name, old in before.items() if price[name] != old}
    if changed:
        state.emit("price.updated", copy.deepcopy(price), previous_attributes=changed)
    return price


# What a price update may change (its amounts never change: Stripe makes a new price).
PRICE_UPDATABLE = ("active", "nickname", "lookup_key", "metadata")


def list_prices(state: State, req: ApiRequest) -> Obj:
    product, active = opt_str(req.params, "product"), opt_bool(req.params, "active")
    kind = opt_str(req.params, "type")
    found = [
        p
        for p in newest_first(state.prices.values())
        if (product is None or p["product"] == product)
        and (active is None or p["active"] == active)
        and (kind is None or p["type"] == kind)
    ]
    return page(found, req.params, "/v1/prices")


def register(router: Router) -> None:
    router.add("POST", "/v1/products", create_product)
    router.add("GET", "/v1/products", list_products)
    router.add("GET", "/v1/products/{id}", retrieve_product)
    router.add("POST", "/v1/products/{id}", update_product)
    router.add("POST", "/v1/prices", create_price)
    router.add("GET", "/v1/prices", list_prices)
    router.add("GET", "/v1/prices/{id}", retrieve_price)
    router.add("POST", "/v1/prices/{id}", update_price)
