"""Review of issue 13's cost projection: failing tests where it differs from Stripe's bill."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from adapters.stripe_gateway import SdkStripeGateway
from stripe_emulator.testing import TEST_API_KEY, RunningEmulator
from tests.e2e.conftest import Api, event
from tests.e2e.test_anchor_webhook_api import move_to, work
from tests.e2e.test_projection_api import NOW, priced_customer, projection, use


def test_two_subscriptions_billing_the_same_meter_are_both_projected(
    webhook_api: Api, emulator: RunningEmulator
) -> None:
    """A customer on two active subscriptions, each with a price on the metric's meter
    (a base plan and an add-on, or a migration overlap), is billed the meter's usage by
    both: Stripe's two upcoming invoices hold one line each. The projection keeps only
    the first item it meets (``PriceBook.lookup`` returns on the first line whose
    ``price.meter`` matches, adapters/price_book.py:85-87), so its amount so far and
    total understate what Stripe bills, with nothing saying a second item was dropped;
    the issue asks for "the price of each subscription item whose meter StripeMeter
    pushes to".
    """
    api = webhook_api
    customer, _, first_sub = priced_customer(api, emulator, "usd", {"unit_amount": 7})
    stripe = emulator.client()
    first_price = stripe.v1.subscriptions.retrieve(first_sub)["items"].data[0].price
    addon = stripe.v1.prices.create(
        {
            "currency": "usd",
            "product_data": {"name": "API calls add-on"},
            "recurring": {
                "interval": "month",
                "usage_type": "metered",
                "meter": first_price.recurring.meter,
            },
            "unit_amount": 3,
        }
    )
    second_sub = stripe.v1.subscriptions.create(
        {"customer": customer, "items": [{"price": addon.id}]}
    ).id
    move_to(api, emulator, NOW)
    use(api, 10)
    work(api)

    billed = sum(
        stripe.v1.invoices.create_preview({"customer": customer, "subscription": sub}).total
        for sub in (first_sub, second_sub)
    )
    assert billed == 10 * 7 + 10 * 3  # Stripe bills the meter's 10 units on both items

    body = projection(api).json()
    assert body["total"]["amount"] == billed, body


@contextmanager
def stripe_enforcing_expand_depth() -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server answering ``GET /v1/subscriptions`` as Stripe does about
    ``expand``: a path deeper than four levels (on a list, ``data.`` is one of them) is a
    400 ``invalid_request_error``; otherwise an empty list. Also records the paths asked."""
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            paths = [v for k, values in query.items() if k.startswith("expand") for v in values]
            asked.extend(paths)
            too_deep = [p for p in paths if len(p.split(".")) > 4]
            if too_deep:
                status, body = (
                    400,
                    {
                        "error": {
                            "type": "invalid_request_error",
                            "message": "You cannot expand more than 4 levels of a property."
                            f" Property: {too_deep[0]}",
                        }
                    },
                )
            else:
                status, body = (
                    200,
                    {
                        "object": "list",
                        "url": "/v1/subscriptions",
                        "has_more": False,
                        "data": [],
                    },
                )
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", asked
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_the_subscription_read_expands_no_deeper_than_stripe_allows() -> None:
    """``SdkStripeGateway.subscription_lines`` lists subscriptions with
    ``expand: ["data.items.data.price.tiers"]`` (adapters/stripe_gateway.py:231): five
    levels. Stripe refuses any expansion deeper than four ("You cannot expand more than 4
    levels of a property"; on a list call ``data.`` counts: the well-known failure of
    ``data.items.data.price.product`` on ``subscriptions.list``), so against real Stripe
    every projection lookup fails and no customer is ever priced. The emulator ignores
    ``expand`` (it always returns tiers), which is why the parity tests pass.
    Suggested fix: list with ``expand[]=data.items`` at most and read tiered prices with
    ``prices.retrieve(id, expand=["tiers"])`` (cached per price id).
    """
    with stripe_enforcing_expand_depth() as (url, asked):
        gateway = SdkStripeGateway(TEST_API_KEY, url)
        lines = gateway.subscription_lines("cus_anyone")
    assert asked, "the gateway asked nothing of Stripe"
    assert lines == []


def test_bad_input_is_a_4xx_naming_the_field_even_without_stripe(api: Api) -> None:
    """Without Stripe configured (the embedded default before ``STRIPE_SECRET_KEY`` is set),
    ``GET /v1/usage/projection?customerRef=`` (empty) or ``period=last week`` answers 503
    "Stripe did not answer ... try again", not the 422 naming the field that the same
    request gets with Stripe: ``_projection`` builds the price book (``svc.price_book()``,
    api/routes/usage.py:199, which needs the live gateway) before ``project_cost`` checks
    ``customerRef`` and ``period``. A client told to retry bad input retries forever.
    Suggested fix: check the fields (``fields.customer_ref``, the period's shape) before
    asking for the price book.
    """
    empty = api.call("GET", "/v1/usage/projection", "acme-read", params={"customerRef": ""})
    assert empty.status_code == 422, empty.text
    assert empty.json()["errors"][0]["field"] == "customerRef"
    posted = api.call(
        "POST",
        "/v1/usage/projection",
        "acme-read",
        json={"customerRef": "cus_1", "period": "last week"},
    )
    assert posted.status_code == 422, posted.text


def test_a_period_no_invoice_covers_is_not_priced_as_billed(
    webhook_api: Api, emulator: RunningEmulator
) -> None:
    """Usage counted before the customer's Stripe subscription started sits in a period
    no invoice covers: the service itself lists it under ``notBilled`` ("before the
    customer's Stripe subscription started: counted, never pushed") and Stripe's preview
    holds none of it. ``GET /v1/usage/projection?period=2026-03`` nevertheless prices
    that period with the subscription's current price (40 units → 2.80 USD as
    ``amountSoFar`` and ``total``), presenting as "what Stripe would bill" an amount no
    invoice will ever carry. ``project_cost`` (api/queries/projection.py:66-99) prices
    every counter of any named period with ``book.lookup``, never asking whether the
    period is billed (the push side's ``NOT_BILLED``/``withdraws``, domain/pushing.py)
    nor comparing it with the subscription line's ``period_start``/``period_end``.
    Suggested fix: a period the customer's subscription does not cover gets no priced
    line (unpriced, with the not-billed reason), never an amount.
    """
    api = webhook_api
    early = event(quantity=40, ts="2026-03-05T09:00:00Z", idempotencyKey="early")
    assert api.ingest(early).json()["accepted"] == 1
    customer, _, _ = priced_customer(api, emulator, "usd", {"unit_amount": 7})
    move_to(api, emulator, NOW)
    api.ingest(event(quantity=10, ts="2026-03-12T09:00:00Z", idempotencyKey="later"))
    work(api)

    current = api.call("GET", "/v1/usage/current", "acme-read", params={"customerRef": "cus_1"})
    [not_billed] = current.json()["notBilled"]
    assert (not_billed["period"], not_billed["value"]) == ("2026-03", "40")
    preview = emulator.client().v1.invoices.create_preview({"customer": customer})
    assert [line.quantity for line in preview.lines.data] == [10]  # the 40 are billed nowhere

    body = projection(api, period="2026-03").json()
    billed = [line["amountSoFar"]["amount"] for line in body["lines"]]
    assert not any(billed) and not (body["total"] or {}).get("amount"), body
