"""Time moving forward: period rollover, invoice creation and finalisation.

Whenever a clock moves (each API request looks at the wall clock; a test clock
advance looks at its own), every subscription on that clock whose period ended
gets a draft invoice and a new period. A draft finalises once the grace period
(``invoice_grace_seconds``, Stripe's default 1 h) has passed on the same clock;
until then its usage lines are recomputed, so usage reported during the grace
period still counts.
"""

from __future__ import annotations

import copy

from stripe_emulator.cycles import current_period, next_period, set_period
from stripe_emulator.errors import invalid_request
from stripe_emulator.ids import new_id
from stripe_emulator.invoices import build_lines, get_invoice, invoice_object, set_totals
from stripe_emulator.routing import ApiRequest, Router
from stripe_emulator.state import Obj, State

Period = tuple[int, int]


def tick(state: State) -> None:
    """Bring every clock's subscriptions and drafts up to that clock's now."""
    for clock_id in [None, *state.test_clocks]:
        advance_clock(state, clock_id)


def advance_clock(state: State, clock_id: str | None) -> None:
    now = state.now_on(clock_id)
    for sub in list(state.subscriptions.values()):
        if sub["test_clock"] != clock_id:
            continue
        while sub["status"] == "active" and current_period(sub)[1] <= now:
            start, end = current_period(sub)
            if sub["cancel_at_period_end"]:
                _close(state, sub, (start, end), ended_at=end)
                break
            following = next_period(sub, end)
            _open_invoice(state, sub, (start, end), following, "subscription_cycle", draft_at=end)
            set_period(sub, following)
    for invoice_id, plan in list(state.invoice_plans.items()):
        invoice = state.invoices[invoice_id]
        if invoice["test_clock"] != clock_id or invoice["status"] != "draft":
            continue
        if plan["finalizes_at"] <= now:
            finalize(state, invoice)
        else:
            _refresh(state, invoice)


def start_subscription(state: State, sub: Obj) -> None:
    """Stripe's first invoice: licensed items in advance, finalised at once."""
    period = current_period(sub)
    invoice = _open_invoice(
        state, sub, None, period, "subscription_create", draft_at=sub["created"]
    )
    finalize(state, invoice)


def reset_anchor(state: State, sub: Obj) -> None:
    """``billing_cycle_anchor[type]=now``: the running period ends now and is invoiced.

    As Stripe does: the subscription's anchor becomes now, its next period
    starts now, and the cut period gets its invoice at once (billing reason
    ``subscription_update``) with usage over [period start, now), finalised
    after the grace like a cycle's invoice. Prorations of licensed items are
    not emulated: they are billed in advance for the new period, as at a cycle.
    """
    now = state.now_on(sub["test_clock"])
    start, _ = current_period(sub)
    sub["billing_cycle_anchor"] = now
    following = next_period(sub, now)
    _open_invoice(state, sub, (start, now), following, "subscription_update", draft_at=now)
    set_period(sub, following)


def end_subscription(state: State, sub: Obj, *, invoice_now: bool) -> None:
    now = state.now_on(sub["test_clock"])
    start, _ = current_period(sub)
    if invoice_now:
        _close(state, sub, (start, now), ended_at=now)
    else:
        _cancelled(state, sub, now)


def _close(state: State, sub: Obj, usage_period: Period, *, ended_at: int) -> None:
    invoice = _open_invoice(
        state, sub, usage_period, None, "subscription_cycle", draft_at=usage_period[1]
    )
    if invoice["total"] == 0 and not invoice["lines"]["data"]:
        del state.invoices[invoice["id"]], state.invoice_plans[invoice["id"]]
    _cancelled(state, sub, ended_at)


def _cancelled(state: State, sub: Obj, at: int) -> None:
    """The subscription ends: ``customer.subscription.deleted``, as Stripe sends it."""
    sub.update(status="canceled", canceled_at=at, ended_at=at)
    state.emit("customer.subscription.deleted", copy.deepcopy(sub), test_clock=sub["test_clock"])


def _open_invoice(
    state: State,
    sub: Obj,
    usage_period: Period | None,
    advance_period: Period | None,
    reason: str,
    *,
    draft_at: int,
) -> Obj:
    invoice_id = new_id("in", 24)
    plan: Obj = {
        "subscription": sub["id"],
        "usage_period": usage_period,
        "advance_period": advance_period,
        "finalizes_at": draft_at + state.config.invoice_grace_seconds,
    }
    lines = build_lines(
        state, sub, invoice_id,
        usage_period=usage_period, advance_period=advance_period, lagged=False,
    )  # fmt: skip
    period = usage_period or (draft_at, draft_at)
    invoice = invoice_object(state, sub, invoice_id, lines, period=period, reason=reason)
    invoice["automatically_finalizes_at"] = plan["finalizes_at"]
    state.invoices[invoice_id] = invoice
    state.invoice_plans[invoice_id] = plan
    sub["latest_invoice"] = invoice_id
    state.emit("invoice.created", invoice, test_clock=sub["test_clock"])
    return invoice


def _refresh(state: State, invoice: Obj) -> None:
    plan = state.invoice_plans[invoice["id"]]
    sub = state.subscriptions[plan["subscription"]]
    lines = build_lines(
        state, sub, invoice["id"],
        usage_period=plan["usage_period"], advance_period=plan["advance_period"], lagged=False,
    )  # fmt: skip
    # Keep line ids stable across recomputation; only quantities and amounts move.
    for old, new in zip(invoice["lines"]["data"], lines, strict=False):
        new["id"] = old["id"]
    invoice["lines"]["data"] = lines
    invoice["lines"]["total_count"] = len(lines)
    set_totals(invoice)


def finalize(state: State, invoice: Obj) -> None:
    if invoice["status"] != "draft":
        raise invalid_request(f"This invoice is already {invoice['status']}.")
    _refresh(state, invoice)
    now = state.now_on(invoice["test_clock"])
    customer = state.customers.get(invoice["customer"], {})
    sequence = 1 + sum(
        1 for i in state.invoices.values() if i["customer"] == invoice["customer"] and i["number"]
    )
    invoice["number"] = f"{customer.get('invoice_prefix', 'EMU')}-{sequence:04d}"
    invoice["effective_at"] = now
    invoice["status_transitions"]["finalized_at"] = now
    invoice["automatically_finalizes_at"] = None
    # Nothing to collect: Stripe marks a zero-total invoice paid on finalisation.
    invoice["status"] = "paid" if invoice["total"] == 0 else "open"
    if invoice["status"] == "paid":
        invoice["status_transitions"]["paid_at"] = now
    set_totals(invoice)
    state.emit("invoice.finalized", invoice, test_clock=invoice["test_clock"])
    if invoice["status"] == "paid":
        state.emit("invoice.paid", invoice, test_clock=invoice["test_clock"])


def finalize_now(state: State, req: ApiRequest) -> Obj:
    invoice = get_invoice(state, req.args["id"])
    finalize(state, invoice)
    return invoice


def register(router: Router) -> None:
    router.add("POST", "/v1/invoices/{id}/finalize", finalize_now)
