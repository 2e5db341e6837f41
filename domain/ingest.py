"""What one usage event asks for, and what became of it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from uuid import UUID

from domain.caps import CapMode


@dataclass(frozen=True)
class UsageSubmission:
    """One usage event, decoded and shaped, not yet checked against the tenant's metrics."""

    tenant_id: UUID
    metric: str
    customer_ref: str
    quantity: Decimal
    occurred_at: datetime
    idempotency_key: str
    fingerprint: str
    meta: str
    derived_key: bool = False  # the key came from the header or the content, not the client
    # Sent as history (``"history": true``, admin keys only): older than the ingest horizon,
    # it goes into its own period as imported history (domain/history.py).
    history: bool = False


class Lateness(StrEnum):
    """How an accepted late event was counted.

    ``in_window``: in its own period (still open). Its period closed (invoice
    finalising, or the lateness window over): ``carried`` — counted as a
    correction in the customer's open period; ``held`` — an adjustment waits
    for approval; ``past_window`` — recorded, not counted (a max or last
    metric, which a correction cannot carry). ``history``: sent as history
    and older than the ingest horizon, counted in its own period as imported
    history, never pushed to Stripe (domain/history.py).
    """

    IN_WINDOW = "in_window"
    CARRIED = "carried"
    HELD = "held"
    PAST_WINDOW = "past_window"
    HISTORY = "history"


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"
    ERROR = "error"


@dataclass(frozen=True)
class IngestResult:
    outcome: Outcome
    idempotency_key: str
    field: str | None = None
    reason: str | None = None
    late: Lateness | None = None
    # ``soft``: accepted with its period past a soft cap; ``hard``: refused by a hard cap.
    cap: CapMode | None = None
    # The cap's mode when this event made its period record ``CapReached`` (for metrics).
    cap_reached: CapMode | None = None

    @classmethod
    def error(cls, key: str, field: str, reason: str) -> IngestResult:
        return cls(Outcome.ERROR, key, field=field, reason=reason)
