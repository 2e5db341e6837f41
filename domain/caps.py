"""Usage caps: how far one customer's usage of a metric may go in a billing period.

A cap belongs to a tenant and names a metric, and either one customer
(``customer_ref``) or every customer of the metric (``customer_ref`` None).
A customer's own cap overrides the metric-wide one. Its ``limit`` bounds the
period's value as the metric's aggregation defines it (sum, count, max or
last), per customer × metric × period:

- ``hard``: an event that would take the value past the limit is refused
  (a per-event error on ``quantity``); the value never exceeds the limit.
- ``soft``: every event is accepted; once the value is past the limit the
  event's result says so (``cap: "soft"``).

Either way the first time a period reaches its cap (hard: the value reaches
the limit or an event is refused; soft: the value passes the limit), the
period records ``CapReached`` — once per period and mode, and again only if
the cap was raised since and is reached anew.

What caps never do: refuse an event that leaves the value where it is or
lowers it (a negative correction, a ``last`` event older than the latest, a
``max`` event below the maximum); look at usage that arrives after its
period's lateness window (it is a correction, carried or held by the
tenant's late policy, never refused: the usage happened and must stay on the
record); or look at operator adjustments. The recorder decides every event
inside the transaction that writes it (domain/recording.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import NamedTuple, Protocol

from domain import fields
from domain.errors import InvalidInputError


class CapMode(StrEnum):
    SOFT = "soft"
    HARD = "hard"


def parse_mode(value: str) -> CapMode:
    try:
        return CapMode(value)
    except ValueError:
        raise InvalidInputError("mode", "must be soft or hard") from None


def check_limit(limit: Decimal) -> Decimal:
    """A cap's limit: a finite, non-negative quantity."""
    if not limit.is_finite():
        raise InvalidInputError("limit", "must be a finite number")
    if limit < 0:
        raise InvalidInputError("limit", "must be at least 0")
    return fields.decimal_quantity(limit, "limit")


@dataclass(frozen=True)
class Cap:
    """One cap as set: on ``metric`` for ``customer_ref`` (None: every customer of it)."""

    metric: str
    customer_ref: str | None
    limit: Decimal
    mode: CapMode


@dataclass(frozen=True)
class MetricCaps:
    """A metric's caps: the metric-wide one and those of single customers."""

    metric_wide: Cap | None = None
    customers: Mapping[str, Cap] = field(default_factory=dict)

    def for_customer(self, customer_ref: str) -> Cap | None:
        """The cap that applies to ``customer_ref``: its own, else the metric-wide one."""
        return self.customers.get(customer_ref, self.metric_wide)

    def all(self) -> list[Cap]:
        wide = [self.metric_wide] if self.metric_wide is not None else []
        return wide + [self.customers[ref] for ref in sorted(self.customers)]

    def with_cap(self, cap: Cap) -> MetricCaps:
        if cap.customer_ref is None:
            return MetricCaps(cap, self.customers)
        return MetricCaps(self.metric_wide, {**self.customers, cap.customer_ref: cap})

    def without(self, customer_ref: str | None) -> MetricCaps:
        if customer_ref is None:
            return MetricCaps(None, self.customers)
        rest = {ref: cap for ref, cap in self.customers.items() if ref != customer_ref}
        return MetricCaps(self.metric_wide, rest)

    @property
    def empty(self) -> bool:
        return self.metric_wide is None and not self.customers


class CappedPeriod(Protocol):
    """What a cap decision reads of a usage period (``domain.usage.UsagePeriod``)."""

    @property
    def value(self) -> Decimal: ...

    def value_after(self, quantity: Decimal, occurred_at: datetime) -> Decimal: ...

    def cap_reached_at(self, mode: str) -> Decimal | None: ...


class CapDecision(NamedTuple):
    """What a cap makes of one event: refused (with the reason), past a soft cap, reached."""

    refused: str | None
    past_soft: bool
    # The value to record in ``CapReached`` when this event reaches the cap first; else None.
    reached_value: Decimal | None


def decide(
    cap: Cap, period: CappedPeriod, quantity: Decimal, occurred_at: datetime
) -> CapDecision | None:
    """Decide one on-time (or in-window late) event of ``period`` against ``cap``.

    None when the cap changes nothing for it (the common case, kept cheap: below
    a hard cap's limit, or not past a soft one's, nothing else is asked).
    """
    after = period.value_after(quantity, occurred_at)
    if cap.mode is CapMode.HARD:
        if after < cap.limit:
            return None
        before = period.value
        raises = after > before
        refused = raises and after > cap.limit
        reached = refused or raises  # raised to the limit exactly, or refused
        if not reached:
            return None
        reason = None
        if refused:
            reason = (
                f"would exceed the hard cap of {_text(cap.limit)} {cap.metric} for this period"
                f" ({_text(before)} counted)"
            )
        value = before if refused else after
        return CapDecision(reason, False, value if _first(period, cap) else None)
    if after <= cap.limit:
        return None
    crossed = after > period.value
    return CapDecision(None, True, after if crossed and _first(period, cap) else None)


def _first(period: CappedPeriod, cap: Cap) -> bool:
    """Not yet reached in this period, or reached only under a lower limit (raised since)."""
    reached_at = period.cap_reached_at(cap.mode.value)
    return reached_at is None or reached_at < cap.limit


def _text(value: Decimal) -> str:
    """A number as people write it: ``1000``, not ``1E+3``."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


@dataclass(frozen=True)
class TenantCaps:
    """A tenant's caps by metric. Immutable: each change makes a new one."""

    by_metric: Mapping[str, MetricCaps] = field(default_factory=dict)

    def set(self, cap: Cap) -> TenantCaps:
        """These caps with ``cap`` set (replacing one on the same metric and customer)."""
        current = self.by_metric.get(cap.metric, MetricCaps())
        return TenantCaps({**self.by_metric, cap.metric: current.with_cap(cap)})

    def remove(self, metric: str, customer_ref: str | None) -> TenantCaps:
        """These caps without the one on ``metric`` for ``customer_ref``."""
        rest = self.by_metric.get(metric, MetricCaps()).without(customer_ref)
        out = {name: c for name, c in self.by_metric.items() if name != metric}
        if not rest.empty:
            out[metric] = rest
        return TenantCaps(out)

    def find(self, metric: str, customer_ref: str | None) -> Cap | None:
        """The cap set exactly on ``metric`` for ``customer_ref`` (no fallback to metric-wide)."""
        rules = self.by_metric.get(metric)
        if rules is None:
            return None
        if customer_ref is None:
            return rules.metric_wide
        return rules.customers.get(customer_ref)

    def all(self) -> list[Cap]:
        """Every cap, by metric; the metric-wide one before those of single customers."""
        return [cap for name in sorted(self.by_metric) for cap in self.by_metric[name].all()]


NO_CAPS = TenantCaps()
