"""Invoices: lines priced from meter usage, previews, and the invoice endpoints.

A metered line bills the usage period that just ended, its quantity being the
meter's aggregate over ``[period start, period end)`` for the customer (a
negative total bills 0). A licensed line bills the coming period in advance.
"""

from __future__ import annotations

from stripe_emulator.cycles import current_period, next_period
from stripe_emulator.errors import invalid_request, not_found
from stripe_emulator.ids import new_id
from stripe_emulator.listing import newest_first, page
from stripe_emulator.params import opt_str
from stripe_emulator.pricing import line_amount
from stripe_emulator.routing import ApiRequest, Router
from stripe_emulator.state import Obj, State
from stripe_emulator.summaries import usage

UsagePeriod = tuple[int, int]


def build_lines(
    state: State,
    sub: Obj,
    invoice_id: str,
    *,
    usage_period: UsagePeriod | None,
    advance_period: UsagePeriod | None,
    lagged: bool,
) -> list[Obj]:
    """Lines for metered items over ``usage_period`` and licensed items over ``advance_period``."""
    lines = []
    for item in sub["items"]["data"]:
        price = item["price"]
        metered = price["recurring"]["usage_type"] == "metered"
        period = usage_period if metered else advance_period
        if period is None:
            continue
        if metered:
            total = usage(
                state, price["recurring"]["meter"], sub["customer"], *period, lagged=lagged
            )
            quantity = max(0, total)
        else:
            quantity = item["quantity"]
        product = state.products.get(price["product"], {})
        lines.append(
            {
                "id": new_id("il", 24),
                "object": "line_item",
                "amount": line_amount(price, quantity),
                "currency": price["currency"],
                "description": f"{quantity} x {product.get('name', price['product'])}",
                "discount_amounts": [],
                "discountable": True,
                "discounts": [],
                "invoice": invoice_id,
                "livemode": False,
                "metadata": {},
                "parent": {
                    "type": "subscription_item_details",
                    "invoice_item_details": None,
                    "subscription_item_details": {
                        "invoice_item": None,
                        "proration": False,
                        "proration_details": {"credited_items": None},
                        "subscription": sub["id"],
                        "subscription_item": item["id"],
                    },
                },
                "period": {"start": period[0], "end": period[1]},
                "pricing": {
                    "type": "price_details",
                    "price_details": {"price": price["id"], "product": price["product"]},
                    "unit_amount_decimal": price["unit_amount_decimal"],
                },
                "quantity": quantity,
                "taxes": [],
            }
        )
    return lines


def invoice_object(
    state: State, sub: Obj, invoice_id: str, lines: list[Obj], *, period: UsagePeriod, reason: str
) -> Obj:
    created = state.now_on(sub["test_clock"])
    invoice: Obj = {
        "id": invoice_id,
        "object": "invoice",
        "account_country": "US",
        "attempt_count": 0,
        "attempted": False,
        "auto_advance": True,
        "automatically_finalizes_at": None,
        "billing_reason": reason,
        "collection_method": sub["collection_method"],
        "created": created,
        "currency": sub["currency"],
        "customer": sub["customer"],
        "description": None,
        "due_date": None,
        "effective_at": None,
        "lines": {
            "object": "list",
            "data": lines,
            "has_more": False,
            "total_count": len(lines),
            "url": f"/v1/invoices/{invoice_id}/lines",
        },
        "livemode": False,
        "metadata": {},
        "number": None,
        "parent": {
            "type": "subscription_details",
            "quote_details": None,
            "subscription_details": {"metadata": sub["metadata"], "subscription": sub["id"]},
        },
        "period_end": period[1],
        "period_start": period[0],
        "starting_balance": 0,
        "status": "draft",
        "status_transitions": {
            "finalized_at": None,
            "marked_uncollectible_at": None,
            "paid_at": None,
            "voided_at": None,
        },
        "test_clock": sub["test_clock"],
    }
    set_totals(invoice)
    return invoice


def set_totals(invoice: Obj) -> None:
    total = sum(line["amount"] for line in invoice["lines"]["data"])
    paid = total if invoice["status"] == "paid" else 0
    invoice.update(
        subtotal=total,
        subtotal_excluding_tax=total,
        total=total,
        total_excluding_tax=total,
        amount_due=total,
        amount_paid=paid,
        amount_remaining=total - paid,
        ending_balance=None if invoice["status"] == "draft" else 0,
    )


def subscription_of(invoice: Obj) -> str:
    return str(invoice["parent"]["subscription_details"]["subscription"])


def get_invoice(state: State, invoice_id: str) -> Obj:
    invoice = state.invoices.get(invoice_id)
    if invoice is None:
        raise not_found("invoice", invoice_id)
    return invoice


def retrieve(state: State, req: ApiRequest) -> Obj:
    return get_invoice(state, req.args["id"])


def list_lines(state: State, req: ApiRequest) -> Obj:
    invoice = get_invoice(state, req.args["id"])
    return page(invoice["lines"]["data"], req.params, f"/v1/invoices/{invoice['id']}/lines")


def list_(state: State, req: ApiRequest) -> Obj:
    customer, status = opt_str(req.params, "customer"), opt_str(req.params, "status")
    subscription = opt_str(req.params, "subscription")
    found = [
        i
        for i in newest_first(state.invoices.values())
        if (customer is None or i["customer"] == customer)
        and (status is None or i["status"] == status)
        and (subscription is None or subscription_of(i) == subscription)
    ]
    return page(found, req.params, "/v1/invoices")


def create_preview(state: State, req: ApiRequest) -> Obj:
    """The invoice the subscription would get at its current period's end, as of now.

    Usage comes from the same lagged view as summaries, as Stripe's upcoming
    invoice reflects recent meter events only eventually.
    """
    customer = opt_str(req.params, "customer")
    sub_id = opt_str(req.params, "subscription")
    subs = [
        s
        for s in newest_first(state.subscriptions.values())
        if s["status"] == "active"
        and (sub_id is None or s["id"] == sub_id)
        and (customer is None or s["customer"] == customer)
    ]
    if customer is None and sub_id is None:
        raise invalid_request("Provide a customer or a subscription.", param="customer")
    if not subs:
        raise invalid_request(
            "No upcoming invoices for customer: " + (customer or sub_id or ""),
            code="invoice_upcoming_none",
        )
    sub = subs[0]
    period = current_period(sub)
    invoice_id = new_id("upcoming_in", 24)
    lines = build_lines(
        state, sub, invoice_id,
        usage_period=period, advance_period=next_period(sub, period[1]), lagged=True,
    )  # fmt: skip
    preview = invoice_object(state, sub, invoice_id, lines, period=period, reason="upcoming")
    preview["created"] = period[1]
    return preview


def register(router: Router) -> None:
    router.add("GET", "/v1/invoices", list_)
    router.add("POST", "/v1/invoices/create_preview", create_preview)
    router.add("GET", "/v1/invoices/{id}", retrieve)
    router.add("GET", "/v1/invoices/{id}/lines", list_lines)
