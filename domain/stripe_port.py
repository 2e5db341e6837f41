"""The port to Stripe Billing: what the domain needs from it, and how it fails.

The adapter (``adapters/stripe_gateway.py``) implements it with the official
SDK; tests point that adapter at the local emulator over HTTP. Failures are
told apart by what the caller must do next:

    StripeError
     ├── StripeUnavailableError   try again later with the same request (5xx, 429, timeouts)
     │    └── StripeRateLimitedError   429: the account is over its limit; wait Retry-After
     ├── StripeRejectedError      Stripe refused it for good; do not resend it unchanged
     └── DuplicateMeterEventError Stripe already holds an event with this identifier
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from domain.pricing import Price

MAX_STREAM_EVENTS = 100  # Stripe's cap on meter events in one v2 stream call


class StripeError(Exception):
    pass


class StripeUnavailableError(StripeError):
    pass


class StripeRateLimitedError(StripeUnavailableError):
    """429: the account is over its rate limit (whoever of it asked); ``retry_after`` is
    the wait Stripe asked for, in seconds, when it said one."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StripeRejectedError(StripeError):
    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class DuplicateMeterEventError(StripeError):
    """Proof of delivery: identifiers belong to one push, so Stripe holding one means it counted."""


@dataclass(frozen=True)
class StripeMeter:
    id: str
    event_name: str
    formula: str
    status: str
    customer_key: str = "stripe_customer_id"
    value_key: str = "value"


@dataclass(frozen=True)
class MeterEventRequest:
    identifier: str
    event_name: str
    stripe_customer_id: str
    value: int
    timestamp: datetime
    customer_key: str = "stripe_customer_id"
    value_key: str = "value"


@dataclass(frozen=True)
class SubscriptionCycle:
    """When a Stripe subscription started, and the anchor its periods count from."""

    anchor: datetime
    started_at: datetime


@dataclass(frozen=True)
class SubscriptionLine:
    """One item of a customer's active subscription, with the price it bills."""

    subscription_id: str
    item_id: str
    price: Price
    period_start: datetime
    period_end: datetime


class StripeGateway(Protocol):
    def account_id(self) -> str:
        """The Stripe account this gateway's key belongs to (``acct_…``)."""

    def send_meter_event(self, request: MeterEventRequest) -> None:
        """Record one meter event (v1); raises one of the errors above."""

    def send_meter_events(self, requests: Sequence[MeterEventRequest]) -> None:
        """Record up to ``MAX_STREAM_EVENTS`` meter events in one call (the v2 event stream).

        Returning means Stripe *took the call*, not that it holds every event:
        the stream drops an identifier it already holds without a word (so
        resending a batch is safe: that is its dedup) and validates events
        asynchronously, reporting a refused one later as a
        ``billing.meter.error_report_triggered`` event. Such an event is caught
        by reconciliation, which compares Stripe's summary with the ledger and
        reports the difference. ``StripeUnavailableError``: nothing, part or all
        of the call may have been applied — resend the same identifiers.
        ``StripeRejectedError``: the call as a whole was refused (its shape).
        """

    def meter_total(
        self,
        meter_id: str,
        stripe_customer_id: str,
        start: datetime,
        end: datetime,
        *,
        retry: bool = True,
    ) -> int:
        """Stripe's aggregate (by the meter's formula) for a customer over [start, end).

        ``retry=False``: each request once, no retries of the gateway's own, a 429
        raised at once (``StripeRateLimitedError``): for a caller that paces its reads
        and retries them itself (``domain/paced_reads.py``).
        """

    def invoice_quantity(self, invoice_id: str, meter_id: str) -> int | None:
        """The quantity the invoice bills for this meter; None when it has no such line."""

    def find_meter(self, event_name: str) -> StripeMeter | None:
        """The active meter with this event name, if any."""

    def retrieve_meter(self, meter_id: str) -> StripeMeter:
        """The meter with this id; StripeRejectedError when there is none."""

    def create_meter(self, display_name: str, event_name: str, formula: str) -> StripeMeter:
        """Create a meter keyed on ``stripe_customer_id`` and ``value``."""

    def customer_exists(self, stripe_customer_id: str) -> bool: ...

    def subscription_cycle(self, stripe_customer_id: str) -> SubscriptionCycle | None:
        """The billing cycle of the customer's active subscription, when it has one."""

    def subscription_lines(self, stripe_customer_id: str) -> list[SubscriptionLine]:
        """The items of the customer's billed subscriptions, each with its price; a tiered
        price without its tiers (``Price.tiers_unread``: see ``retrieve_price``).
        StripeRejectedError when Stripe refuses to read them."""

    def retrieve_price(self, price_id: str) -> Price:
        """The price with everything that prices a line, tiers included."""
