"""One rule per request field, shared by every route and the CLI.

Each function takes a value as the client sent it and returns it checked (and
parsed, where it is parsed), or raises ``InvalidInputError(field, reason)``.
The reason texts are listed in docs/api.md ("Field rules"); a test asserts
each one. No I/O here: the API decodes bytes, these functions judge values.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from domain.errors import InvalidInputError

MAX_QUANTITY_DIGITS = 15  # |quantity| < 10^15
MAX_QUANTITY_PLACES = 12
MAX_META_BYTES = 4_096
MAX_META_DEPTH = 32  # the meta object itself is level 1

CUSTOMER_REF_LENGTH = 255
METRIC_LENGTH = 64
IDEMPOTENCY_KEY_LENGTH = 255
IDEMPOTENCY_HEADER_LENGTH = 200
ACTOR_LENGTH = 200
REASON_LENGTH = 500

# A billing cycle anchor is a date in a real subscription's life.
ANCHOR_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
ANCHOR_LATEST = datetime(2100, 1, 1, tzinfo=UTC)

# A JSON number, ASCII only: no '_', no surrounding spaces, no '+', no '.5'.
NUMBER = re.compile(r"(-?)(0|[1-9][0-9]*)(?:\.([0-9]+))?(?:[eE]([+-]?[0-9]+))?\Z", re.ASCII)
RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}"
    r"(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})\Z",
    re.ASCII,
)
STRIPE_EVENT_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,100}\Z", re.ASCII)
# Characters no text field may hold: C0 and C1 controls, DEL, the line and
# paragraph separators, bidirectional marks, embeddings, overrides and
# isolates (they make text read differently from what it is), and lone
# surrogates (not text at all).
FORBIDDEN = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)


def quantity(text: str, field: str = "quantity") -> Decimal:
    """A quantity written as a JSON number (or the same text in a JSON string).

    The magnitude and the places are judged from the digits before any
    ``Decimal`` arithmetic: ``1e999999999`` would overflow the default context.
    """
    # The common case, a plain whole number, without the grammar.
    plain = 0 < len(text) <= MAX_QUANTITY_DIGITS and text.isdigit() and text.isascii()
    if plain and (text[0] != "0" or len(text) == 1):
        return Decimal(text)
    match = NUMBER.match(text)
    if match is None:
        if text.strip("+-").lower() in ("nan", "snan", "inf", "infinity"):
            raise InvalidInputError(field, "must be a finite number")
        raise InvalidInputError(field, "must be a number written as in JSON, e.g. 12 or 0.5")
    sign, whole, fraction, exponent_text = match.groups()
    fraction = fraction or ""
    digits = (whole + fraction).lstrip("0")
    if not digits:
        return Decimal(0)
    significant = digits.rstrip("0")
    exponent_text = exponent_text or "0"
    negative_exponent = exponent_text.startswith("-")
    if len(exponent_text.lstrip("+-").lstrip("0")) > 9:  # far beyond either limit
        if negative_exponent:
            raise InvalidInputError(field, _places_reason())
        raise InvalidInputError(field, _magnitude_reason())
    # The value is int(significant) * 10^scale.
    scale = int(exponent_text) - len(fraction) + (len(digits) - len(significant))
    if scale + len(significant) > MAX_QUANTITY_DIGITS:
        raise InvalidInputError(field, _magnitude_reason())
    if scale < -MAX_QUANTITY_PLACES:
        raise InvalidInputError(field, _places_reason())
    if scale > 0:  # 1e3 is 1000, as it prints
        significant, scale = significant + "0" * scale, 0
    return Decimal((1 if sign else 0, tuple(int(d) for d in significant), scale))


def _magnitude_reason() -> str:
    return f"must be smaller than 10^{MAX_QUANTITY_DIGITS} in magnitude"


def _places_reason() -> str:
    return f"must have at most {MAX_QUANTITY_PLACES} decimal places"


def decimal_quantity(value: Decimal, field: str = "quantity") -> Decimal:
    """A quantity that is already a ``Decimal`` (the CLI, tests): the same rule."""
    if not value.is_finite():
        raise InvalidInputError(field, "must be a number written as in JSON, e.g. 12 or 0.5")
    sign, digits, exponent = value.as_tuple()
    coefficient = "".join(map(str, digits)).lstrip("0") or "0"
    return quantity(f"{'-' if sign else ''}{coefficient}e{exponent}", field)


def text(field: str, value: str, longest: int) -> str:
    """An identifier-like text (metric, customerRef, keys, actor): exact, visible, bounded."""
    if not value or value.isspace():
        raise InvalidInputError(field, "must not be empty")
    return _bounded_and_visible(field, value, longest)


def free_text(field: str, value: str, longest: int = REASON_LENGTH) -> str:
    """A sentence for people (an adjustment's reason): trimmed, one line, no controls."""
    value = value.strip()
    if not value:
        raise InvalidInputError(field, "is required")
    return _bounded_and_visible(field, value, longest)


def _bounded_and_visible(field: str, value: str, longest: int) -> str:
    """The length and character rules that identifiers and free text share."""
    if len(value) > longest:
        raise InvalidInputError(field, f"must be at most {longest} characters")
    if FORBIDDEN.search(value):
        raise InvalidInputError(field, "must not contain control, separator or bidi characters")
    return value


def metric(value: str, field: str = "metric") -> str:
    return text(field, value, METRIC_LENGTH)


def customer_ref(value: str, field: str = "customerRef") -> str:
    return text(field, value, CUSTOMER_REF_LENGTH)


def idempotency_key(value: str, field: str = "idempotencyKey") -> str:
    return text(field, value, IDEMPOTENCY_KEY_LENGTH)


def idempotency_header(value: str) -> str:
    return text("Idempotency-Key", value, IDEMPOTENCY_HEADER_LENGTH)


def actor(value: str) -> str:
    return text("actor", value, ACTOR_LENGTH)


def stripe_event_name(value: str, field: str = "stripeEventName") -> str:
    if not STRIPE_EVENT_NAME.match(value):
        raise InvalidInputError(
            field, "must be 1 to 100 characters of A-Z, a-z, 0-9, '_', '.', ':', '-'"
        )
    return value


def timestamp(field: str, value: str) -> datetime:
    """An RFC 3339 timestamp with an explicit offset, as a UTC datetime."""
    if not RFC3339.match(value):
        raise InvalidInputError(
            field, "must be an RFC 3339 timestamp with a time zone, e.g. 2026-01-16T14:30:00Z"
        )
    iso = value.replace("z", "Z").replace("Z", "+00:00").replace("t", "T").replace(" ", "T")
    # Python reads at most 6 fractional digits; nanoseconds are cut, not rounded.
    iso = re.sub(r"\.([0-9]{6})[0-9]+", r".\1", iso)
    try:
        local = datetime.fromisoformat(iso)
    except ValueError:
        raise InvalidInputError(field, "is not a real date and time") from None
    try:
        return local.astimezone(UTC)
    except OverflowError:
        # 0001-01-01T00:00:00+23:59 is a real local time before year 1 in UTC.
        raise InvalidInputError(field, "is outside years 0001 to 9999 once in UTC") from None


def billing_cycle_anchor(moment: datetime, field: str = "billingCycleAnchor") -> datetime:
    if not ANCHOR_EARLIEST <= moment < ANCHOR_LATEST:
        raise InvalidInputError(field, "must be in the years 2000 to 2099")
    return moment


def meta_keys(meta: dict[str, Any], field: str = "meta") -> int:
    """Check ``meta`` nests at most ``MAX_META_DEPTH`` levels (meta itself is level 1).

    Returns how many keys its objects hold in all (the ingest route compares
    that with the keys sent, to see whether one was repeated).
    """
    level: list[Any] = [meta]
    depth = 1
    keys = 0
    while level:
        if depth > MAX_META_DEPTH:
            raise InvalidInputError(field, f"must nest at most {MAX_META_DEPTH} levels deep")
        inner: list[Any] = []
        for value in level:
            if isinstance(value, dict):
                keys += len(value)
                children = value.values()
            else:
                children = value
            inner.extend(c for c in children if isinstance(c, dict | list))
        level = inner
        depth += 1
    return keys
