"""Usage imported as history: older than the ingest horizon, counted in its own period.

An event sent with ``history: true`` (an admin key's import, docs/import.md)
whose time lies before the tenant's ingest horizon is not refused: it is
counted in the customer's billing period of its time, as live usage would
be, provided that period is one StripeMeter never billed live. Such a period
is opened as history (``UsagePeriod.HistoryOpened``): closed from the start,
its verdict ``history``, so that

- nothing of it is pushed to Stripe (the push sweep reads only periods
  without a verdict; ``PushService`` refuses a history period outright),
  reconciliation compares no invoice with it and closing leaves it alone;
- usage that later arrives live for it is late usage, handled by the
  tenant's late policy like any usage for a closed period, never counted
  into the history, and no history is ever carried into an open period;
- it stays counted: the counters, the usage events and the audit show it,
  and a rebuild from the log gives it back.

A period that already holds live usage (or was moved, closed, pushed) or
has not ended yet never takes history: the event is refused, naming ``ts``.
A history event inside the horizon is ordinary usage and takes the normal
path (its result carries no ``late: "history"``), except in a period that is
already history (the horizon falls inside it): it was sent as history, so it
is counted there as history, never carried into the open period and billed.
"""

from __future__ import annotations

from datetime import datetime

from domain.ingest import IngestResult, Lateness, Outcome, UsageSubmission
from domain.usage import UsagePeriod

HISTORY_REASON = "imported from before the ingest horizon"
# Why no Stripe invoice covers a history period (the audit's and the usage API's words).
HISTORY_NOT_BILLED = (
    "imported history (older than the ingest horizon): counted here, never pushed to Stripe"
)


def count_history(item: UsageSubmission, period: UsagePeriod, now: datetime) -> IngestResult:
    """Count ``item`` in ``period`` as imported history, or the error saying why it cannot.

    ``period`` is the customer's period holding the item's time (new, or as
    stored); it is opened as history when it holds nothing yet.
    """
    if not period.history:
        if period.version > 1:
            return IngestResult.error(
                item.idempotency_key,
                "ts",
                f"falls in period {period.period} of customer {period.customer_ref!r},"
                " which holds live usage: history is imported only into periods that"
                " StripeMeter never counted live",
            )
        if now < period.period_end:
            return IngestResult.error(
                item.idempotency_key,
                "ts",
                f"falls in period {period.period}, which has not ended"
                f" (it ends {period.period_end:%Y-%m-%dT%H:%M:%SZ}): history is imported"
                " only into periods that have ended",
            )
        period.open_as_history(HISTORY_REASON)
    period.record_usage(
        item.idempotency_key, item.quantity, item.occurred_at, item.meta, late=False
    )
    return IngestResult(Outcome.ACCEPTED, item.idempotency_key, late=Lateness.HISTORY)
