"""Metric definitions: what a tenant counts and how.

A metric names a stream of usage (``api_calls``), the local aggregation that
turns its events into one number per period, and how late an event may arrive
and still land in its own period. The Stripe meter it feeds is named here too,
so that the push (a later step) knows where the number goes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from domain.errors import InvalidInputError
from domain.fields import stripe_event_name

METRIC_NAME = re.compile(r"^[a-z][a-z0-9_.:-]{0,63}$")
MAX_LATENESS_SECONDS = 35 * 24 * 3600  # Stripe takes no meter event older than 35 days.
DEFAULT_LATENESS_SECONDS = 48 * 3600


class Aggregation(StrEnum):
    """How a period's events become one number.

    ``sum`` adds quantities, ``count`` counts events, ``max`` keeps the largest
    quantity and ``last`` the quantity of the event with the latest time.
    """

    SUM = "sum"
    COUNT = "count"
    MAX = "max"
    LAST = "last"


@dataclass(frozen=True)
class MetricDefinition:
    name: str
    aggregation: Aggregation
    unit: str = "unit"
    lateness_seconds: int = DEFAULT_LATENESS_SECONDS
    stripe_event_name: str | None = None
    allow_negative: bool = False

    def __post_init__(self) -> None:
        if not METRIC_NAME.match(self.name):
            raise InvalidInputError(
                "name",
                "must start with a lowercase letter and use only a-z, 0-9, '_', '.', ':', '-'"
                " (at most 64 characters)",
            )
        if not 0 <= self.lateness_seconds <= MAX_LATENESS_SECONDS:
            raise InvalidInputError(
                "latenessWindowSeconds", f"must be between 0 and {MAX_LATENESS_SECONDS}"
            )
        if not 1 <= len(self.unit) <= 32:
            raise InvalidInputError("unit", "must be 1 to 32 characters")
        if self.stripe_event_name is not None:
            stripe_event_name(self.stripe_event_name)


def parse_aggregation(value: str) -> Aggregation:
    try:
        return Aggregation(value)
    except ValueError:
        allowed = ", ".join(a.value for a in Aggregation)
        raise InvalidInputError("aggregation", f"must be one of {allowed}") from None
