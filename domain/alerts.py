"""Usage alerts: a tenant's rule on one metric, for one customer or all of its customers.

Three kinds, each a threshold on what one customer × metric × billing period
has reached so far:

- ``usage``: the period's counter (the metric's sum, count, max or last) is at
  or above ``threshold`` (a quantity);
- ``spend``: the line's amount, in minor units of ``currency``, is at or above
  ``threshold`` (a whole number) — the amount billed so far, or the forecast to
  period end (``basis``), as pricing answers it (domain/spend.py);
- ``spike``: the counter is at least ``threshold`` times (a factor, 1 or more)
  what the previous period had reached at the same elapsed point
  (``spike_breached`` in domain/alert_incidents.py says exactly how).

A rule is an aggregate; its changes (created, replaced, deleted) are events.
What happens when a rule is breached lives in domain/alert_incidents.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain import fields
from domain.errors import ConflictError, InvalidInputError
from domain.meters import Aggregation

MAX_COOLDOWN_SECONDS = 366 * 24 * 3600
MAX_SPIKE_FACTOR = Decimal(1_000_000)
CURRENCY_LENGTH = 3


class AlertKind(StrEnum):
    USAGE = "usage"
    SPEND = "spend"
    SPIKE = "spike"


class SpendBasis(StrEnum):
    AMOUNT_SO_FAR = "amount_so_far"
    FORECAST = "forecast"


@dataclass(frozen=True)
class AlertSpec:
    """Everything a rule says; a replacement gives all of it again."""

    metric: str
    customer_ref: str | None  # None: every customer of the metric
    kind: AlertKind
    threshold: Decimal  # usage: a quantity; spend: minor units; spike: a factor
    basis: SpendBasis | None  # spend only
    currency: str | None  # spend only, lower case ("usd", "jpy")
    enabled: bool
    cooldown_seconds: int


def _choice(field: str, value: str, enum: type[StrEnum]) -> Any:
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(m.value for m in enum)
        raise InvalidInputError(field, f"must be one of {allowed}") from None


def check_spec(
    *,
    metric: str,
    customer_ref: str | None,
    kind: str,
    threshold: Decimal,
    basis: str | None,
    currency: str | None,
    enabled: bool,
    cooldown_seconds: int,
    aggregation: Aggregation,
) -> AlertSpec:
    """The rule as given, or an ``InvalidInputError`` naming the first field it refuses.

    ``aggregation`` is the metric's (the caller looked it up: an undeclared
    metric is the caller's refusal). Field names are the API's.
    """
    fields.metric(metric)
    if customer_ref is not None:
        fields.customer_ref(customer_ref)
    alert_kind: AlertKind = _choice("kind", kind, AlertKind)
    threshold = fields.decimal_quantity(threshold, "threshold")
    if threshold < 0:
        raise InvalidInputError("threshold", "must be zero or more")
    spend_basis: SpendBasis | None = None
    if alert_kind is AlertKind.SPEND:
        if basis is None:
            raise InvalidInputError(
                "basis", "is required for a spend alert (amount_so_far or forecast)"
            )
        spend_basis = _choice("basis", basis, SpendBasis)
        if currency is None:
            raise InvalidInputError("currency", "is required for a spend alert (e.g. usd)")
        if len(currency) != CURRENCY_LENGTH or not currency.isascii() or not currency.isalpha():
            raise InvalidInputError("currency", "must be a three-letter ISO currency code")
        currency = currency.lower()
        if threshold != threshold.to_integral_value():
            raise InvalidInputError(
                "threshold", "must be a whole number of the currency's minor units"
            )
    else:
        if basis is not None:
            raise InvalidInputError("basis", "must be null unless kind is spend")
        if currency is not None:
            raise InvalidInputError("currency", "must be null unless kind is spend")
    if alert_kind is AlertKind.SPIKE:
        if aggregation not in (Aggregation.SUM, Aggregation.COUNT):
            raise InvalidInputError(
                "metric", f"a spike alert needs a sum or count metric, not {aggregation.value}"
            )
        if not 1 <= threshold <= MAX_SPIKE_FACTOR:
            raise InvalidInputError(
                "threshold", f"a spike factor must be between 1 and {MAX_SPIKE_FACTOR}"
            )
    if not 0 <= cooldown_seconds <= MAX_COOLDOWN_SECONDS:
        raise InvalidInputError(
            "cooldownSeconds", f"must be between 0 and {MAX_COOLDOWN_SECONDS} (366 days)"
        )
    return AlertSpec(
        metric,
        customer_ref,
        alert_kind,
        threshold,
        spend_basis,
        currency,
        enabled,
        cooldown_seconds,
    )


def _spec_fields(spec: AlertSpec) -> dict[str, Any]:
    """A spec as stored in an event: plain values with stable names."""
    return {
        "metric": spec.metric,
        "customer_ref": spec.customer_ref,
        "kind": spec.kind.value,
        "threshold": spec.threshold,
        "basis": spec.basis.value if spec.basis else None,
        "currency": spec.currency,
        "enabled": spec.enabled,
        "cooldown_seconds": spec.cooldown_seconds,
    }


class AlertRule(Aggregate):
    """One alert rule of one tenant; its id is random (a rule has no natural key)."""

    class Created(Aggregate.Created):
        """A rule created (v1)."""

        tenant_id: UUID
        metric: str
        customer_ref: str | None
        kind: str
        threshold: Decimal
        basis: str | None
        currency: str | None
        enabled: bool
        cooldown_seconds: int

        def apply(self, aggregate: AlertRule) -> None:
            aggregate._set(self)

    class Replaced(Aggregate.Event):
        """Every field of the rule replaced (v1); its incidents keep their history."""

        metric: str
        customer_ref: str | None
        kind: str
        threshold: Decimal
        basis: str | None
        currency: str | None
        enabled: bool
        cooldown_seconds: int

        def apply(self, aggregate: AlertRule) -> None:
            aggregate._set(self)

    class Deleted(Aggregate.Event):
        """The rule deleted (v1): never evaluated again; its open incidents resolve."""

        def apply(self, aggregate: AlertRule) -> None:
            aggregate.deleted = True

    def __init__(self, tenant_id: UUID) -> None:
        # The spec's fields are set by ``Created.apply``, as ``Replaced`` sets them.
        self.tenant_id = tenant_id
        self.deleted = False

    @classmethod
    def create(cls, tenant_id: UUID, spec: AlertSpec, alert_id: UUID | None = None) -> AlertRule:
        """A new rule; its id random unless given (a config file names its alerts)."""
        return cls._create(cls.Created, id=alert_id, tenant_id=tenant_id, **_spec_fields(spec))

    @property
    def spec(self) -> AlertSpec:
        return AlertSpec(
            self.metric,
            self.customer_ref,
            AlertKind(self.kind),
            self.threshold,
            SpendBasis(self.basis) if self.basis else None,
            self.currency,
            self.enabled,
            self.cooldown_seconds,
        )

    def replace(self, spec: AlertSpec) -> bool:
        """Replace every field; False (nothing recorded) when ``spec`` is what the rule says."""
        self._refuse_if_deleted()
        if spec == self.spec:
            return False
        self.trigger_event(self.Replaced, **_spec_fields(spec))
        return True

    def delete(self) -> None:
        self._refuse_if_deleted()
        self.trigger_event(self.Deleted)

    def _refuse_if_deleted(self) -> None:
        if self.deleted:
            raise ConflictError(f"alert {self.id} was deleted")

    def _set(self, event: AlertRule.Created | AlertRule.Replaced) -> None:
        self.metric = event.metric
        self.customer_ref = event.customer_ref
        self.kind = event.kind
        self.threshold = event.threshold
        self.basis = event.basis
        self.currency = event.currency
        self.enabled = event.enabled
        self.cooldown_seconds = event.cooldown_seconds
