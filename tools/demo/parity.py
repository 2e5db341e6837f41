"""The parity demo's cycle: Stripe and StripeMeter set up, then usage through the period."""

from __future__ import annotations

import dataclasses
import logging
import socket
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import stripe

from adapters.persistence import open_stores
from adapters.settings import ReconcileSettings, Settings, StripeSettings
from api.app import create_app
from domain.tenancy import Scope
from stripe_emulator import EmulatorConfig
from stripe_emulator.testing import running_emulator
from tools.demo.harness import (
    CUSTOMER,
    METRIC,
    OUTSIDE_IDENTIFIER,
    START,
    DemoError,
    Http,
    Narrator,
    serving,
    stamp,
    wait_for,
)
from tools.demo.verdict import verdict


class ParityDemo:
    """The emulator, the API beside it, and the cycle's steps on the test clock."""

    def __init__(self, base: Settings, data_dir: Path, narrator: Narrator, *, drift: bool) -> None:
        self.reconcile = ReconcileSettings()  # the default closing rules the steps are timed on
        self.base, self.data_dir, self.n, self.drift = base, data_dir, narrator, drift
        self.outcomes: list[dict[str, Any]] = []

    def run(self) -> dict[str, Any]:
        config = EmulatorConfig(
            rate_limit=0, invoice_grace_seconds=self.reconcile.invoice_grace_seconds
        )
        with ExitStack() as stack:
            try:
                self.emu = stack.enter_context(running_emulator(config))
            except (OSError, RuntimeError) as error:
                raise DemoError(f"the Stripe emulator did not start: {error}") from error
            try:
                return self._with_emulator(stack)
            except stripe.StripeError as error:
                raise DemoError(f"Stripe refused a call: {error}") from error
            except httpx.HTTPError as error:
                raise DemoError(f"the StripeMeter API could not be reached: {error}") from error

    def _with_emulator(self, stack: ExitStack) -> dict[str, Any]:
        self.stripe = self.emu.client(max_network_retries=0)
        clock = self.stripe.v1.test_helpers.test_clocks.create(
            {"frozen_time": int(START.timestamp()), "name": "parity demo"}
        )
        self.clock_id: str = clock.id
        self.customer = self.stripe.v1.customers.create(
            {"name": "Acme Corp", "test_clock": self.clock_id}
        )
        sock = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        endpoint = self.stripe.v1.webhook_endpoints.create(
            {
                "url": f"{url}/v1/stripe/webhooks",
                "enabled_events": ["invoice.created", "invoice.finalized"],
            }
        )
        settings = self._settings(self.emu.url, endpoint.secret)
        key = self._tenant(settings)
        self.n.step(self.now(), f"Stripe emulator {self.emu.url}, test clock {self.clock_id}")
        self.n.say(
            f"Stripe: customer {self.customer.id} on the clock;"
            f" webhook endpoint {endpoint.id} for invoice.created/finalized"
        )
        self.n.say(f"StripeMeter API {url} (SQLite in {self.data_dir}, embedded worker)")
        self.app = create_app(settings, self.now)
        stack.enter_context(serving(self.app, sock))
        # Litestar set logging up as it started: keep the narration readable;
        # warnings and errors (a parity alarm among them) still show.
        logging.getLogger().setLevel(logging.WARNING)
        self.http = stack.enter_context(Http(url, key))
        return self._cycle()

    def now(self) -> datetime:
        """The test clock's time, which StripeMeter lives in.

        Read without the emulator's lock (one dict lookup): an advance holds
        that lock for its whole billing work, which StripeMeter's threads must
        not wait on.
        """
        return datetime.fromtimestamp(self.emu.state.now_on(self.clock_id), UTC)

    def _settings(self, emulator_url: str, webhook_secret: str) -> Settings:
        return dataclasses.replace(
            self.base,
            data_dir=self.data_dir,
            postgres=None,
            embedded_worker=True,
            writer_mode="thread",
            writer_socket=None,
            api_processes=1,
            metrics_multiprocess_dir=None,
            broker_url=None,
            push_interval_seconds=1.0,
            stripe=StripeSettings(
                secret_key="sk_test_parity_demo",
                api_base=emulator_url,
                max_network_retries=0,
                timeout_seconds=10,
                webhook_secret=webhook_secret,
            ),
            reconcile=self.reconcile,
        )

    def _tenant(self, settings: Settings) -> str:
        """A tenant and an admin key, as ``stripemeter tenants create`` and ``keys create`` do."""
        stores = open_stores(settings, self.now)
        try:
            self.tenant_id: UUID = stores.app.register_tenant("demo", "Parity demo").id
            issued = stores.app.issue_api_key(self.tenant_id, frozenset({Scope.ADMIN}))
        finally:
            stores.close()
        return issued.secret

    # -- the cycle --------------------------------------------------------------------

    def _cycle(self) -> dict[str, Any]:
        self._setup_billing()
        self._advance(START + timedelta(days=14, hours=12), "mid-period")
        self._ingest(
            [("req-1", 120, "2026-01-15T09:00:00Z"), ("req-2", 80, "2026-01-15T10:30:00Z")]
        )
        self._ingest([("req-1", 120, "2026-01-15T09:00:00Z")], note="a client retry")
        credit = self._credit(-15)
        self._wait_pushed(self.period["key"], 185)

        end = datetime.fromisoformat(self.period["end"])
        invoice = self._advance_to_draft(end + timedelta(minutes=1))
        self._ingest([("req-3", 30, stamp(end - timedelta(minutes=10)))], note="late")
        self._wait_pushed(self.period["key"], 215)

        finalizes = datetime.fromtimestamp(invoice.automatically_finalizes_at, UTC)
        margin = timedelta(seconds=self.reconcile.close_margin_seconds)
        self._advance(
            finalizes - margin + timedelta(minutes=2),
            f"{margin.seconds // 60 - 2} min before finalisation",
        )
        self._wait_line("StripeMeter to close the period", lambda line: line["closed"])
        self.n.say(f"StripeMeter closed {self.period['key']}: its total is final now")
        self._ingest([("req-4", 12, stamp(end - timedelta(minutes=5)))], note="after the close")
        carried = self._carried(end)
        drift = self._drift(end) if self.drift else None

        self._advance(finalizes + timedelta(minutes=1), "past finalisation")
        self._wait_webhook("invoice.finalized", invoice.id)
        line = self._wait_line("the recorded verdict", lambda line: line["verdict"] is not None)
        self.n.say(
            f"StripeMeter recorded {line['verdict']}; POST /v1/reconciliation/run: {line['status']}"
            + (f", {line['cause']}" if line["cause"] else "")
            + f" (local {line['local']}, Stripe {line['stripe']})"
        )
        return verdict(self, credit, carried, drift, line)

    def _setup_billing(self) -> None:
        s = self.stripe
        meter = s.v1.billing.meters.create(
            {
                "display_name": "API calls",
                "event_name": "api_calls",
                "default_aggregation": {"formula": "sum"},
                "customer_mapping": {"type": "by_id", "event_payload_key": "stripe_customer_id"},
                "value_settings": {"event_payload_key": "value"},
            }
        )
        price = s.v1.prices.create(
            {
                "currency": "usd",
                "unit_amount_decimal": "2",
                "product_data": {"name": "API calls"},
                "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
            }
        )
        self.subscription = s.v1.subscriptions.create(
            {"customer": self.customer.id, "items": [{"price": price.id}]}
        )
        self.meter_id: str = meter.id
        self.n.say(
            f"Stripe: meter {meter.id} (sum), price {price.id} (2 cents a call),"
            f" subscription {self.subscription.id} (monthly)"
        )
        declared = self.http.call(
            "POST", "/v1/meters", {"name": METRIC, "aggregation": "sum", "unit": "call"}
        )
        mapping = self.http.call(
            "POST", "/v1/mappings", {"metric": METRIC, "stripeMeterId": meter.id}
        )
        customer = self.http.call(
            "POST",
            "/v1/customers",
            {"customerRef": CUSTOMER, "stripeCustomerId": self.customer.id},
        )
        self.n.say(f"POST /v1/meters {declared['name']} ({declared['aggregation']})")
        self.n.say(
            f"POST /v1/mappings {METRIC} -> {mapping['stripeMeterId']} (push: {mapping['push']})"
        )
        self.n.say(
            f"POST /v1/customers {CUSTOMER} -> {customer['stripeCustomerId']},"
            f" {customer['billingCycle']} from {customer['billingCycleAnchor']}"
        )
        audit = self.http.call(
            "GET", "/v1/audit/invoice", params={"customerRef": CUSTOMER, "metric": METRIC}
        )
        self.period = {"key": audit["period"], "start": audit["periodStart"],
                       "end": audit["periodEnd"]}  # fmt: skip
        self.n.say(f"billing period {self.period['start']} -> {self.period['end']}")

    def _advance(self, moment: datetime, why: str) -> None:
        self.stripe.v1.test_helpers.test_clocks.advance(
            self.clock_id, {"frozen_time": int(moment.timestamp())}
        )
        self.n.step(self.now(), f"advanced: {why}")

    def _advance_to_draft(self, moment: datetime) -> Any:
        self._advance(moment, "the period has ended")
        invoices = self.stripe.v1.invoices.list({"customer": self.customer.id, "status": "draft"})
        drafts = [i for i in invoices.data if i.billing_reason == "subscription_cycle"]
        if not drafts:
            raise DemoError("Stripe drafted no invoice at the period end")
        invoice = drafts[0]
        finalizes = datetime.fromtimestamp(invoice.automatically_finalizes_at, UTC)
        self.n.say(f"Stripe drafted invoice {invoice.id}, finalising at {finalizes:%H:%M}")
        self._wait_webhook("invoice.created", invoice.id)
        return invoice

    def _wait_webhook(self, kind: str, invoice_id: str) -> None:
        """Until the emulator has delivered ``kind`` for the invoice to StripeMeter (2xx)."""

        def delivered() -> tuple[bool | None, str]:
            events = self.stripe.v1.events.list({"type": kind, "limit": 20}).data
            ids = {e.id for e in events if e.data.object["id"] == invoice_id}
            attempts = [a for a in self.emu.webhook_attempts() if a["event"] in ids]
            done = any(a["delivered"] for a in attempts)
            return (True if done else None), f"delivery attempts: {attempts}"

        wait_for(f"Stripe's {kind} webhook for {invoice_id} to be delivered", delivered)
        self.n.say(f"Stripe -> POST /v1/stripe/webhooks: {kind} {invoice_id} -> 2xx")

    def _ingest(self, events: list[tuple[str, int, str]], note: str = "") -> None:
        body = {
            "events": [
                {"metric": METRIC, "customerRef": CUSTOMER, "quantity": q, "ts": ts,
                 "idempotencyKey": key}
                for key, q, ts in events
            ]
        }  # fmt: skip
        answer = self.http.call("POST", "/v1/events/ingest", body)
        for (key, quantity, ts), result in zip(events, answer["results"], strict=True):
            outcome = result["status"] + (f", late: {result['late']}" if result.get("late") else "")
            self.outcomes.append(
                {"idempotencyKey": key, "quantity": quantity, "ts": ts,
                 "status": result["status"], "late": result.get("late"), "note": note or None}
            )  # fmt: skip
            self.n.say(
                f"POST /v1/events/ingest {key}: {quantity} at {ts}"
                + (f" ({note})" if note else "")
                + f" -> {outcome}"
            )

    def _credit(self, quantity: int) -> dict[str, Any]:
        proposed = self.http.call(
            "POST",
            "/v1/adjustments",
            {"customerRef": CUSTOMER, "metric": METRIC, "quantity": str(quantity),
             "reason": "SLA credit: 2 h outage", "actor": "ops@acme"},
            headers={"Idempotency-Key": "sla-credit-1"},
        )  # fmt: skip
        approved = self.http.call(
            "POST",
            f"/v1/adjustments/{proposed['id']}/approve",
            {"reason": "approved by finance", "actor": "finance@acme"},
        )
        self.n.say(
            f"POST /v1/adjustments {quantity} (SLA credit) -> {proposed['status']};"
            f" approve -> {approved['status']} to {approved['appliedTo']}"
        )
        return {"id": approved["id"], "quantity": approved["quantity"],
                "status": approved["status"], "appliedTo": approved["appliedTo"]}  # fmt: skip

    def audit(self, period_key: str) -> Any:
        """The invoice audit of one of the customer's periods, as the API answers it."""
        return self.http.call(
            "GET",
            "/v1/audit/invoice",
            params={"customerRef": CUSTOMER, "metric": METRIC, "period": period_key},
        )

    def _wait_pushed(self, period_key: str, total: int) -> Any:
        def pushed() -> tuple[Any, str]:
            audit = self.audit(period_key)
            counter = audit["counter"]["value"] if audit["counter"] else None
            live = audit["stripeUnitsConfirmed"].get("live")
            done = counter is not None and Decimal(counter) == total and live == total
            return (audit if done else None), f"counter {counter}, confirmed by Stripe {live}"

        audit = wait_for(f"{period_key} to count {total} and Stripe to confirm it", pushed)
        pushes = len(audit["pushes"])
        self.n.say(
            f"audit {period_key}: counter {total}, Stripe confirmed {total}"
            f" ({pushes} push{'es' if pushes > 1 else ''})"
        )
        return audit

    def _reconcile(self) -> dict[str, Any]:
        month = self.period["key"][:7]
        run = self.http.call("POST", "/v1/reconciliation/run", {"period": month, "actor": "demo"})
        lines = [x for report in run["data"] for x in report["lines"]]
        mine = [x for x in lines if x["period"] == self.period["key"]]
        if not mine:
            raise DemoError(f"no reconciliation line for period {self.period['key']}: {lines}")
        line: dict[str, Any] = mine[0]
        return line

    def _wait_line(self, what: str, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        def probe() -> tuple[dict[str, Any] | None, str]:
            line = self._reconcile()
            return (line if done(line) else None), f"last reconciliation line: {line}"

        return wait_for(what, probe)

    def _carried(self, end: datetime) -> dict[str, Any]:
        """The event that missed the close counts in the next period, and reaches Stripe."""
        following = self.audit(stamp(end))
        key = following["period"]
        audit = self._wait_pushed(key, 12)
        old = self.audit(self.period["key"])
        self.n.say(
            f"req-4 counts in the next period, {key};"
            f" {self.period['key']} stays at {old['counter']['value']}"
        )
        return {"idempotencyKey": "req-4", "quantity": 12, "period": key,
                "stripeConfirmed": audit["stripeUnitsConfirmed"].get("live")}  # fmt: skip

    def _drift(self, end: datetime) -> dict[str, Any]:
        moment = end - timedelta(minutes=2)
        self.stripe.v1.billing.meter_events.create(
            {
                "event_name": "api_calls",
                "identifier": OUTSIDE_IDENTIFIER,
                "timestamp": int(moment.timestamp()),
                "payload": {"stripe_customer_id": self.customer.id, "value": "7"},
            }
        )
        self.n.say(
            f"--drift: 7 api_calls at {stamp(moment)} sent straight to Stripe,"
            " behind StripeMeter's back"
        )
        return {"identifier": OUTSIDE_IDENTIFIER, "value": 7, "ts": stamp(moment)}
