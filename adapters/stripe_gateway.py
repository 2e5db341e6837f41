"""The Stripe gateway: the domain's ``StripeGateway`` port over the official SDK.

Retries of one call (429, 5xx, timeouts, honouring ``Stripe-Should-Retry``,
with exponential backoff and jitter) are the SDK's own
(``max_network_retries``); what is still failing after them comes back to
the push service as ``StripeUnavailableError`` and is retried later, with
the same identifier, by the next push of that period.

Many pushes at once go over the v2 meter event stream (``send_meter_events``):
one call of up to 100 events, authenticated by a meter event session whose
token lasts 15 minutes. The session is kept and renewed a minute before it
runs out (timed on this process's monotonic clock from the lifetime Stripe
states, so a skewed wall clock cannot keep a dead token), and renewed at once
when Stripe answers 401 (``billing_meter_event_session_expired``, or a token
it no longer knows).

The signature of Stripe's webhook deliveries is checked here too
(``verify_webhook``): the service imports the SDK in this module only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import stripe

from domain.errors import InvalidInputError
from domain.pricing import Price, Tier, TransformQuantity
from domain.stripe_port import (
    MAX_STREAM_EVENTS,
    DuplicateMeterEventError,
    MeterEventRequest,
    StripeMeter,
    StripeRateLimitedError,
    StripeRejectedError,
    StripeUnavailableError,
    SubscriptionCycle,
    SubscriptionLine,
)

log = logging.getLogger(__name__)

DUPLICATE_CODES = {"resource_already_exists", "duplicate_meter_event"}
SESSION_RENEW_MARGIN_SECONDS = 60.0
# Subscriptions whose items Stripe invoices for the current period: ``past_due`` ones
# still get their next invoices. Not ``trialing``: a trial's end starts a new cycle and
# what its usage is billed at is not the items' prices alone, so it is left unpriced
# rather than guessed; nor ``incomplete``/``unpaid``/``paused``/``canceled``.
BILLED_STATUSES = frozenset({"active", "past_due"})


class SdkStripeGateway:
    def __init__(
        self,
        api_key: str,
        api_base: str | None = None,
        max_network_retries: int = 2,
        timeout_seconds: float = 20.0,
    ) -> None:
        options: dict[str, Any] = {
            "max_network_retries": max_network_retries,
            "http_client": stripe.RequestsClient(timeout=timeout_seconds),
        }
        if api_base:
            base = api_base.rstrip("/")
            options["base_addresses"] = {"api": base, "meter_events": base}
        self.client = stripe.StripeClient(api_key, **options)
        self._price_meters: dict[str, str | None] = {}
        self._account_id: str | None = None
        # The meter event session: its token, and the monotonic time to renew it by.
        self._session: tuple[str, float] | None = None
        self._session_lock = threading.Lock()

    def account_id(self) -> str:
        """The key's account, asked once (a key never changes account)."""
        if self._account_id is None:
            with _translated():
                account = self.client.v1.accounts.retrieve_current()
            self._account_id = str(account.id)
        return self._account_id

    def send_meter_event(self, request: MeterEventRequest) -> None:
        params = {
            "event_name": request.event_name,
            "identifier": request.identifier,
            "timestamp": int(request.timestamp.timestamp()),
            "payload": {
                request.customer_key: request.stripe_customer_id,
                request.value_key: str(request.value),
            },
        }
        with _translated(duplicate_means_delivered=True):
            self.client.v1.billing.meter_events.create(params)  # type: ignore[arg-type]

    def send_meter_events(self, requests: Sequence[MeterEventRequest]) -> None:
        """Up to 100 meter events in one v2 stream call (see the port for what a return means).

        A 202 confirms the call, not each event: Stripe validates them later and
        names refused ones in a ``billing.meter.error_report_triggered`` event;
        reconciliation reports the shortfall such an event leaves.
        """
        if not requests:
            return
        if len(requests) > MAX_STREAM_EVENTS:
            raise ValueError(f"at most {MAX_STREAM_EVENTS} events per stream call")
        params: dict[str, Any] = {"events": [_stream_event(r) for r in requests]}
        stream = self.client.v2.billing.meter_event_stream
        with _translated():
            token = self._session_token()
            try:
                stream.create(params, {"api_key": token})  # type: ignore[arg-type]
            except stripe.AuthenticationError as error:
                # Expired sooner than our clock says, or a token Stripe no longer knows
                # (it restarted): one new session, one more try, then it is an error.
                log.info("meter event session refused (%s): renewing it", error.code)
                token = self._session_token(refused=token)
                stream.create(params, {"api_key": token})  # type: ignore[arg-type]

    def _session_token(self, refused: str | None = None) -> str:
        """The cached session's token, or a new session's when it is due (or was refused).

        Threads share one session; a thread whose token was refused after
        another already renewed it takes the new one instead of renewing again.
        """
        with self._session_lock:
            session = self._session
            if session is not None and time.monotonic() < session[1] and session[0] != refused:
                return session[0]
            created = self.client.v2.billing.meter_event_session.create()
            lifetime = (
                datetime.fromisoformat(created.expires_at) - datetime.fromisoformat(created.created)
            ).total_seconds()
            margin = min(SESSION_RENEW_MARGIN_SECONDS, lifetime / 4)
            token = str(created.authentication_token)
            self._session = (token, time.monotonic() + lifetime - margin)
            return token

    def meter_total(
        self,
        meter_id: str,
        stripe_customer_id: str,
        start: datetime,
        end: datetime,
        *,
        retry: bool = True,
    ) -> int:
        total = 0
        # The SDK's retries ignore Retry-After (0.5-1 s apart) and go around a caller's pace.
        options: dict[str, Any] = {} if retry else {"max_network_retries": 0}
        params: dict[str, Any] = {
            "customer": stripe_customer_id,
            "start_time": int(start.timestamp()),
            "end_time": int(end.timestamp()),
            "limit": 100,
        }
        with _translated():
            page = self.client.v1.billing.meters.event_summaries.list(meter_id, params, options)  # type: ignore[arg-type]
            for summary in page.auto_paging_iter():
                total += round(float(summary.aggregated_value))
        return total

    def invoice_quantity(self, invoice_id: str, meter_id: str) -> int | None:
        with _translated():
            lines = self.client.v1.invoices.line_items.list(invoice_id, {"limit": 100})
            quantity: int | None = None
            for line in lines.auto_paging_iter():
                pricing = getattr(line, "pricing", None)
                details = getattr(pricing, "price_details", None)
                price = getattr(details, "price", None)
                price_id = price if isinstance(price, str) else getattr(price, "id", None)
                if price_id is not None and self._meter_of(price_id) == meter_id:
                    quantity = (quantity or 0) + int(line.quantity or 0)
        return quantity

    def _meter_of(self, price_id: str) -> str | None:
        """The meter a price bills (prices never change their meter, so it is cached)."""
        if price_id not in self._price_meters:
            price = self.client.v1.prices.retrieve(price_id)
            recurring = getattr(price, "recurring", None)
            self._price_meters[price_id] = getattr(recurring, "meter", None)
        return self._price_meters[price_id]

    def find_meter(self, event_name: str) -> StripeMeter | None:
        with _translated():
            meters = self.client.v1.billing.meters.list({"status": "active", "limit": 100})
            found = [m for m in meters.auto_paging_iter() if m.event_name == event_name]
        return _meter(found[0]) if found else None

    def retrieve_meter(self, meter_id: str) -> StripeMeter:
        with _translated():
            meter = self.client.v1.billing.meters.retrieve(meter_id)
        return _meter(meter)

    def create_meter(self, display_name: str, event_name: str, formula: str) -> StripeMeter:
        params: dict[str, Any] = {
            "display_name": display_name,
            "event_name": event_name,
            "default_aggregation": {"formula": formula},
            "customer_mapping": {"type": "by_id", "event_payload_key": "stripe_customer_id"},
            "value_settings": {"event_payload_key": "value"},
        }
        with _translated():
            meter = self.client.v1.billing.meters.create(params)  # type: ignore[arg-type]
        return _meter(meter)

    def customer_exists(self, stripe_customer_id: str) -> bool:
        try:
            with _translated():
                customer = self.client.v1.customers.retrieve(stripe_customer_id)
        except StripeRejectedError as error:
            if error.code == "resource_missing":
                return False
            raise
        return not getattr(customer, "deleted", False)

    def subscription_cycle(self, stripe_customer_id: str) -> SubscriptionCycle | None:
        with _translated():
            subscriptions = self.client.v1.subscriptions.list(
                {"customer": stripe_customer_id, "status": "active", "limit": 1}
            )
        for subscription in subscriptions.data:
            return SubscriptionCycle(
                anchor=datetime.fromtimestamp(subscription.billing_cycle_anchor, UTC),
                started_at=datetime.fromtimestamp(subscription.start_date, UTC),
            )
        return None

    def subscription_lines(self, stripe_customer_id: str) -> list[SubscriptionLine]:
        """Every item of the customer's billed subscriptions (``BILLED_STATUSES``).

        Items and their prices come in the list without expanding anything; a
        tiered price comes without its ``tiers`` (``tiers_unread``): Stripe sends
        them only when expanded, and ``data.items.data.price.tiers`` is five levels,
        more than the four Stripe allows, so they are read with ``retrieve_price``.
        A subscription holds at most 20 items, so one page carries every item.
        """
        params: dict[str, Any] = {"customer": stripe_customer_id, "limit": 100}
        lines = []
        with _translated():
            subscriptions = self.client.v1.subscriptions.list(params)  # type: ignore[arg-type]
            for sub in subscriptions.auto_paging_iter():
                if sub.status not in BILLED_STATUSES:
                    continue
                for item in sub["items"].data:
                    lines.append(
                        SubscriptionLine(
                            subscription_id=str(sub.id),
                            item_id=str(item.id),
                            price=price_of(item.price),
                            period_start=datetime.fromtimestamp(item.current_period_start, UTC),
                            period_end=datetime.fromtimestamp(item.current_period_end, UTC),
                        )
                    )
        return lines

    def retrieve_price(self, price_id: str) -> Price:
        """The price with its tiers (``expand=["tiers"]``, one level)."""
        with _translated():
            price = self.client.v1.prices.retrieve(price_id, {"expand": ["tiers"]})
        return price_of(price)


def price_of(price: Any) -> Price:
    """The SDK's price as the domain's ``Price`` (amounts as exact decimals)."""
    transform = getattr(price, "transform_quantity", None)
    recurring = getattr(price, "recurring", None)
    return Price(
        id=str(price.id),
        currency=str(price.currency),
        billing_scheme=str(price.billing_scheme),
        unit_amount_decimal=_decimal(getattr(price, "unit_amount_decimal", None)),
        tiers_mode=getattr(price, "tiers_mode", None),
        tiers=tuple(
            Tier(
                up_to=None if tier.up_to is None else int(tier.up_to),
                unit_amount_decimal=_decimal(tier.unit_amount_decimal) or Decimal(0),
                flat_amount_decimal=_decimal(tier.flat_amount_decimal) or Decimal(0),
            )
            for tier in getattr(price, "tiers", None) or ()
        ),
        transform_quantity=None
        if transform is None
        else TransformQuantity(int(transform.divide_by), str(transform.round)),
        meter=getattr(recurring, "meter", None) if recurring is not None else None,
    )


def _decimal(value: Any) -> Decimal | None:
    """The SDK decodes ``*_decimal`` fields to Decimal already; a string or int also reads."""
    return None if value is None else Decimal(str(value))


def _stream_event(request: MeterEventRequest) -> dict[str, Any]:
    """A v2 stream event: like v1's, but JSON with an RFC 3339 timestamp."""
    return {
        "event_name": request.event_name,
        "identifier": request.identifier,
        "timestamp": request.timestamp.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "payload": {
            request.customer_key: request.stripe_customer_id,
            request.value_key: str(request.value),
        },
    }


def _meter(meter: Any) -> StripeMeter:
    customer_key = "stripe_customer_id"
    mapping = getattr(meter, "customer_mapping", None)
    if mapping is not None and getattr(mapping, "event_payload_key", None):
        customer_key = mapping.event_payload_key
    value_key = "value"
    settings = getattr(meter, "value_settings", None)
    if settings is not None and getattr(settings, "event_payload_key", None):
        value_key = settings.event_payload_key
    return StripeMeter(
        id=meter.id,
        event_name=meter.event_name,
        formula=meter.default_aggregation.formula,
        status=meter.status,
        customer_key=customer_key,
        value_key=value_key,
    )


@contextmanager
def _translated(*, duplicate_means_delivered: bool = False) -> Iterator[None]:
    """Map the SDK's exceptions onto the port's three outcomes."""
    try:
        yield
    except stripe.RateLimitError as error:
        raise StripeRateLimitedError(str(error), _retry_after(error)) from error
    except stripe.APIConnectionError as error:
        raise StripeUnavailableError(str(error)) from error
    except stripe.StripeError as error:
        status = error.http_status or 0
        if status >= 500 or status == 409:
            raise StripeUnavailableError(str(error)) from error
        code = getattr(error, "code", None)
        message = str(getattr(error, "user_message", None) or error)
        if duplicate_means_delivered and (
            code in DUPLICATE_CODES or "already exists with identifier" in message
        ):
            raise DuplicateMeterEventError(message) from error
        raise StripeRejectedError(message, code) from error


def _retry_after(error: stripe.StripeError) -> float | None:
    """The seconds a 429's ``Retry-After`` asks for (a number; Stripe sends no dates)."""
    value = (error.headers or {}).get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def verify_webhook(payload: str, signature: str, secret: str) -> None:
    """Check a webhook delivery's ``Stripe-Signature`` header against the endpoint's secret.

    The SDK's own check (HMAC of the timestamped payload, and the timestamp
    within its default tolerance, which refuses a replayed old delivery). A
    delivery that does not verify is invalid input naming the header, so that
    the sender is told (422) and nothing is read from it.
    """
    try:
        stripe.WebhookSignature.verify_header(
            payload, signature, secret, tolerance=stripe.Webhook.DEFAULT_TOLERANCE
        )
    except (stripe.SignatureVerificationError, ValueError) as error:
        log.warning("refused a webhook delivery: %s", error)
        raise InvalidInputError("Stripe-Signature", f"does not verify: {error}") from None
