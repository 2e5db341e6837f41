"""What Stripe bills for a metered line: its price models, currencies and rounding.

Pure functions over ``Decimal``; the prices are read from Stripe by the
gateway (adapters/stripe_gateway.py) and cached by adapters/price_book.py.
What Stripe documents, and this module follows:

- *Decimal amounts* (docs "Decimal amounts for pricing",
  stripe.com/docs/billing/subscriptions/decimal-amounts): ``unit_amount_decimal``
  is in minor units with up to 12 decimal places; "rounding occurs on the line
  item level ... after the quantity is multiplied by the decimal amount"
  (0.05 × 30 = 1.5 is billed 2 cents), each line rounded before the invoice
  sums them. So a line is computed exactly in ``Decimal`` and rounded once,
  half up, to a whole minor unit (``ROUND_HALF_UP``: the documented 1.5 → 2).
- *Tiers* (docs "Set up tiered pricing"; API reference ``tiers``): ``up_to``
  is a tier's inclusive upper bound, the next tier starts one above it, the
  last is ``inf``; ``flat_amount`` is billed "for an entire tier, regardless
  of the number of units in the tier". ``graduated``: each slice of the
  quantity at its own tier's rate, plus the flat amount of every tier the
  quantity reaches. ``volume``: the whole quantity at the rate of the tier it
  falls in, plus that tier's flat amount.
- *Quantity transformation* (docs "Transform quantities"): the usage is
  divided by ``divide_by`` and rounded ``up`` or ``down`` to a whole number
  before the per-unit price applies (150 minutes at divide_by=60, up → 3);
  it is incompatible with tiered prices.
- *Currencies* (docs "Supported currencies"): amounts are integers in the
  currency's smallest unit. Zero-decimal: BIF CLP DJF GNF JPY KMF KRW MGA PYG
  RWF UGX VND VUV XAF XOF XPF. Three-decimal: BHD JOD KWD OMR TND — there
  Stripe's *payment* calls (PaymentIntents, refunds) require the last digit to
  be 0; that is a rule about charging, not about invoice line amounts, so
  line amounts here stay in whole thousandths, as the invoice shows them.

One assumption Stripe does not document and the emulator shares: a quantity
of 0 reaches no graduated tier (no flat amount), while a volume price bills
its first tier's flat amount even at 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, ROUND_HALF_UP, Decimal

from domain.errors import InvalidInputError

ZERO_DECIMAL = frozenset(
    [
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "ugx",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    ]
)
THREE_DECIMAL = frozenset(["bhd", "jod", "kwd", "omr", "tnd"])


def currency_exponent(currency: str) -> int:
    """How many decimal places the currency's major unit has (JPY 0, USD 2, KWD 3)."""
    code = currency.lower()
    if code in ZERO_DECIMAL:
        return 0
    if code in THREE_DECIMAL:
        return 3
    return 2


def major_units(amount: int, currency: str) -> str:
    """Minor units as a decimal string in major units: 1234 → "12.34" (USD), "1234" (JPY),
    "1.234" (KWD)."""
    exponent = currency_exponent(currency)
    return format(Decimal(amount).scaleb(-exponent), f".{exponent}f")


@dataclass(frozen=True)
class Tier:
    up_to: int | None  # inclusive; None is Stripe's "inf"
    unit_amount_decimal: Decimal = Decimal(0)
    flat_amount_decimal: Decimal = Decimal(0)


@dataclass(frozen=True)
class TransformQuantity:
    divide_by: int
    round: str  # "up" or "down"

    def __post_init__(self) -> None:
        if self.divide_by < 1:
            raise InvalidInputError("transform_quantity.divide_by", "must be at least 1")
        if self.round not in ("up", "down"):
            raise InvalidInputError("transform_quantity.round", "must be 'up' or 'down'")

    def apply(self, quantity: int) -> int:
        rounding = ROUND_CEILING if self.round == "up" else ROUND_FLOOR
        return int((Decimal(quantity) / self.divide_by).to_integral_value(rounding=rounding))


@dataclass(frozen=True)
class Price:
    """A Stripe price, as far as it decides a line's amount."""

    id: str
    currency: str
    billing_scheme: str = "per_unit"  # or "tiered"
    unit_amount_decimal: Decimal | None = None
    tiers_mode: str | None = None  # "graduated" or "volume" when tiered
    tiers: tuple[Tier, ...] = ()
    transform_quantity: TransformQuantity | None = None
    meter: str | None = None  # recurring.meter: the Stripe meter a metered price bills

    def __post_init__(self) -> None:
        if self.billing_scheme == "tiered":
            if self.tiers_mode not in ("graduated", "volume"):
                raise InvalidInputError("tiers_mode", "must be 'graduated' or 'volume'")
            # No tiers at all means not read yet: Stripe sends a price's ``tiers`` only when
            # asked (``expand=["tiers"]``), see ``tiers_unread``.
            if self.tiers and self.tiers[-1].up_to is not None:
                raise InvalidInputError("tiers", "need at least one tier, the last up to inf")
            if self.transform_quantity is not None:
                raise InvalidInputError("transform_quantity", "does not apply to tiered prices")
        elif self.billing_scheme != "per_unit":
            raise InvalidInputError("billing_scheme", "must be 'per_unit' or 'tiered'")

    @property
    def tiers_unread(self) -> bool:
        """A tiered price read without its tiers: it cannot be priced until they are read."""
        return self.billing_scheme == "tiered" and not self.tiers

    @property
    def exponent(self) -> int:
        return currency_exponent(self.currency)


def line_amount(price: Price, quantity: int) -> int:
    """The line Stripe would invoice for ``quantity`` (the meter's whole-unit total), in minor
    units: computed exactly, then rounded half up once for the line (see the module doc)."""
    if price.tiers_unread:
        raise ValueError(f"price {price.id} is tiered but its tiers were not read")
    quantity = max(0, quantity)  # Stripe bills a negative meter total as 0
    if price.billing_scheme == "tiered":
        if price.tiers_mode == "volume":
            total = _volume(price.tiers, quantity)
        else:
            total = _graduated(price.tiers, quantity)
    else:
        if price.transform_quantity is not None:
            quantity = price.transform_quantity.apply(quantity)
        total = (price.unit_amount_decimal or Decimal(0)) * quantity
    return int(total.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _tier_cost(tier: Tier, units: int) -> Decimal:
    return tier.unit_amount_decimal * units + tier.flat_amount_decimal


def _volume(tiers: tuple[Tier, ...], quantity: int) -> Decimal:
    for tier in tiers:
        if tier.up_to is None or quantity <= tier.up_to:
            return _tier_cost(tier, quantity)
    raise AssertionError("the last tier is unbounded (checked in Price)")


def _graduated(tiers: tuple[Tier, ...], quantity: int) -> Decimal:
    total, lower = Decimal(0), 0
    for tier in tiers:
        if quantity <= lower:
            break
        upper = quantity if tier.up_to is None else min(quantity, tier.up_to)
        total += _tier_cost(tier, upper - lower)
        lower = upper
    return total


def whole_units(quantity: Decimal) -> int:
    """The units Stripe's meter holds for a counter: pushes carry whole units (floor)."""
    return max(0, int(quantity.to_integral_value(rounding=ROUND_DOWN)))


# -- the forecast to the period's end ---------------------------------------------------

RUN_RATE = "run_rate"
CURRENT_VALUE = "current_value"


@dataclass(frozen=True)
class Forecast:
    quantity: Decimal
    method: str  # RUN_RATE or CURRENT_VALUE


def forecast_quantity(
    aggregation: str, quantity: Decimal, start: datetime, end: datetime, now: datetime
) -> Forecast:
    """The quantity expected at ``end``.

    ``sum`` and ``count`` grow with time: the run rate over the elapsed part of
    the period, ``quantity / elapsed × period length`` (the quantity itself once
    the period is over, or before any of it has elapsed). ``max`` and ``last``
    are levels, not flows: the forecast is the current value.
    """
    if aggregation not in ("sum", "count"):
        return Forecast(quantity, CURRENT_VALUE)
    length = (end - start).total_seconds()
    elapsed = (min(now, end) - start).total_seconds()
    if elapsed <= 0 or elapsed >= length:
        return Forecast(quantity, RUN_RATE)
    rate = quantity * Decimal(int(length * 1_000_000)) / Decimal(int(elapsed * 1_000_000))
    return Forecast(rate.quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP), RUN_RATE)
