"""The parity demo's verdict: StripeMeter's recorded parity beside Stripe's finalised invoice."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TextIO

from domain.pushing import whole_units
from tools.demo.harness import CUSTOMER, DemoError, wait_for

if TYPE_CHECKING:
    from tools.demo.parity import ParityDemo


def verdict(
    demo: ParityDemo,
    credit: dict[str, Any],
    carried: dict[str, Any],
    drift: dict[str, Any] | None,
    line: dict[str, Any],
) -> dict[str, Any]:
    """What the demo prints: parity only when Stripe's invoice, StripeMeter's recorded
    verdict and the local counter all agree on the period's whole units."""
    invoice, quantity = _invoice(demo)
    recorded = _recorded(demo)
    counter = demo.audit(demo.period["key"])["counter"]
    local = whole_units(Decimal(counter["value"]))
    parity = quantity == local and recorded["verdict"] == "parity" and recorded["local"] == local
    return {
        "customer": {"customerRef": CUSTOMER, "stripeCustomerId": demo.customer.id},
        "period": demo.period,
        "localTotal": local,
        "invoice": {
            "id": invoice.id,
            "status": invoice.status,
            "quantity": quantity,
            "total": invoice.total,
            "currency": invoice.currency,
        },
        "recorded": {
            "verdict": recorded["verdict"],
            "localUnits": recorded["local"],
            "stripeTotal": recorded["stripe"],
            "invoiceId": recorded["invoiceId"],
            "invoiceQuantity": recorded["invoiceQuantity"],
        },
        "reconciliation": {k: line[k] for k in ("status", "cause", "local", "stripe")},
        "events": demo.outcomes,
        "correction": credit,
        "carried": carried,
        "drift": drift,
        "verdict": "parity" if parity else "mismatch",
        "result": "PARITY" if parity else "MISMATCH",
    }


def _recorded(demo: ParityDemo) -> dict[str, Any]:
    """StripeMeter's own record of the final parity, as the invoice audit shows it."""
    closing = wait_for(
        "the recorded parity in the invoice audit",
        lambda: (
            (c, "")
            if (c := demo.audit(demo.period["key"])["closing"]) and c["verdict"]
            else (None, "not recorded yet")
        ),
    )
    return dict(closing)


def _invoice(demo: ParityDemo) -> tuple[Any, int | None]:
    invoices = demo.stripe.v1.invoices.list({"customer": demo.customer.id, "limit": 10})
    start = int(datetime.fromisoformat(demo.period["start"]).timestamp())
    cycle = [
        i
        for i in invoices.data
        if i.billing_reason == "subscription_cycle" and i.period_start == start
    ]
    if len(cycle) != 1:
        raise DemoError(f"Stripe has {len(cycle)} invoices for the period, not one")
    invoice = cycle[0]
    quantities = [
        line.quantity
        for line in invoice.lines.data
        if line.pricing is not None
        and demo.stripe.v1.prices.retrieve(line.pricing.price_details.price).recurring.meter
        == demo.meter_id
    ]
    return invoice, (sum(quantities) if quantities else None)


def print_block(result: dict[str, Any], out: TextIO) -> None:
    customer, period, invoice = result["customer"], result["period"], result["invoice"]
    recorded, recon, carried = result["recorded"], result["reconciliation"], result["carried"]
    rows = [
        ("customer", f"{customer['customerRef']} ({customer['stripeCustomerId']})"),
        ("period", f"{period['start']} -> {period['end']}"),
        ("local total", str(result["localTotal"])),
        (
            "Stripe invoice",
            f"{invoice['id']} ({invoice['status']}): quantity {invoice['quantity']},"
            f" total {invoice['total'] / 100:.2f} {invoice['currency'].upper()}",
        ),
        (
            "recorded",
            f"{recorded['verdict']} (local {recorded['localUnits']}, Stripe"
            f" {recorded['stripeTotal']}, invoice {recorded['invoiceQuantity']})",
        ),
        ("reconciliation", recon["status"] + (f": {recon['cause']}" if recon["cause"] else "")),
        ("carried", f"{carried['quantity']} into period {carried['period']}"),
    ]
    print("", file=out)
    for label, value in rows:
        print(f"{label:<16}{value}", file=out)
    print(f"{'verdict':<16}{result['result']}", file=out)
