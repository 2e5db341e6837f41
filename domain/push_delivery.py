"""How the intents of one push call reach Stripe: a v1 call each, or one v2 stream call.

Delivery only calls Stripe and says, per intent, what the ledger must record:
Stripe holds it (``held``: how we know), Stripe refused it for good
(``refused``), or the answer is unknown (neither: resend the same
identifier later). Recording it is the push service's job.

A stream call answers for the call, not for each event: a 202 means every
event is held or will be validated later (a refused one shows as a
``billing.meter.error_report_triggered`` event and as a shortfall that
reconciliation reports); a failure means any part of it may have been
applied, which is safe because every event keeps its identifier and the
stream drops the ones it already holds. A stream call refused as a whole
falls back to one v1 call per event, so that one bad event costs only itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from domain.stripe_port import (
    DuplicateMeterEventError,
    MeterEventRequest,
    StripeGateway,
    StripeRejectedError,
    StripeUnavailableError,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    held: str | None = None  # "response" or "duplicate": Stripe holds the event
    refused: str | None = None  # why Stripe will never take it
    unavailable: str | None = None  # the answer is unknown: resend the same identifier


def deliver_each(gateway: StripeGateway, requests: Sequence[MeterEventRequest]) -> list[Verdict]:
    """One v1 call per event: each answer speaks for its own event."""
    verdicts: list[Verdict] = []
    for request in requests:
        try:
            gateway.send_meter_event(request)
            verdicts.append(Verdict(held="response"))
        except DuplicateMeterEventError:
            verdicts.append(Verdict(held="duplicate"))
        except StripeUnavailableError as error:
            verdicts.append(Verdict(unavailable=str(error)))
        except StripeRejectedError as error:
            verdicts.append(Verdict(refused=str(error)))
    return verdicts


def deliver_stream(
    gateway: StripeGateway,
    requests: Sequence[MeterEventRequest],
    on_call: Callable[[int], None] = lambda _: None,
) -> list[Verdict]:
    """All events in one stream call (at most ``MAX_STREAM_EVENTS``); ``on_call`` counts it."""
    on_call(len(requests))
    try:
        gateway.send_meter_events(requests)
    except StripeUnavailableError as error:
        return [Verdict(unavailable=str(error))] * len(requests)
    except StripeRejectedError as error:
        log.warning(
            "Stripe refused a stream call of %d events (%s): sending them one by one",
            len(requests),
            error,
        )
        return deliver_each(gateway, requests)
    return [Verdict(held="response")] * len(requests)
