"""Usage events as the client builds them: checked, normalised and keyed before any send.

An event's content is fixed when it is created: ``ts`` defaults to the moment
of creation (not of sending), the quantity and the time are normalised and
``meta`` is copied. The bytes sent for an event are therefore the same on the
first attempt and on every retry, and so is its idempotency key:

- the caller's own ``idempotency_key``, sent as ``idempotencyKey``; or
- when the caller gives ``ts`` but no key, the key the server derives from
  the content (``content:`` + SHA-256 of the canonical form below). It is
  computed here and shown on the event and its result, but not sent: the
  server derives the same key from the same content, and a key sent
  explicitly would be claimed in the server's other namespace (keys a client
  chose), where it would not meet the derived one. Content the caller fixed
  entirely (a line of a log, say) is then one event however often it is sent;
- when the caller gives neither, a random key (``evt-`` + a UUID 4), sent as
  ``idempotencyKey``. The time is then the client's clock, which two
  processes can read alike: two identical events made in the same
  microsecond by two workers would share a content key, and the second
  would be answered ``duplicate`` and never counted.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

Quantity = int | Decimal | str | float
Timestamp = datetime | str

MAX_QUANTITY_DIGITS = 15  # |quantity| < 10^15, as the server accepts
MAX_QUANTITY_PLACES = 12

# The server's grammars (a JSON number; RFC 3339 with an offset), ASCII only.
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?\Z", re.ASCII)
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}"
    r"(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})\Z",
    re.ASCII,
)


def normalise_quantity(value: Quantity) -> Decimal:
    """A quantity as the server reads it: ``1``, ``1.0``, ``"1E0"`` are one value.

    A float is read by its shortest ``repr`` (``0.1`` is ``0.1``, not the
    binary fraction nearest it). Raises ``ValueError`` naming ``quantity``.
    """
    if isinstance(value, bool):
        raise TypeError("quantity must be a number or a string holding one, not a bool")
    if isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("quantity must be a finite number")
        number = Decimal(repr(value))
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError("quantity must be a finite number")
        number = value
    elif isinstance(value, str):
        if not _NUMBER.match(value):
            raise ValueError(
                f"quantity must be a number written as in JSON, e.g. 12 or 0.5: {value!r}"
            )
        # Judge a far-out exponent before Decimal arithmetic could expand it.
        written = re.search(r"[eE]([+-]?[0-9]+)\Z", value)
        if written and len(written.group(1).lstrip("+-").lstrip("0")) > 6:
            if written.group(1).startswith("-"):
                raise ValueError(f"quantity must have at most {MAX_QUANTITY_PLACES} decimal places")
            raise ValueError(f"quantity must be smaller than 10^{MAX_QUANTITY_DIGITS} in magnitude")
        try:
            number = Decimal(value)
        except InvalidOperation:  # pragma: no cover - the grammar above excludes it
            raise ValueError(f"quantity is not a number: {value!r}") from None
    else:
        raise TypeError(
            f"quantity must be an int, Decimal, float or str, not {type(value).__name__}"
        )
    if number.is_zero():
        return Decimal(0)
    if number.adjusted() >= MAX_QUANTITY_DIGITS:
        raise ValueError(f"quantity must be smaller than 10^{MAX_QUANTITY_DIGITS} in magnitude")
    # Judged from the digits, without a context that could round them away.
    sign, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)  # a finite number
    significant = "".join(map(str, digits)).rstrip("0")
    exponent += len(digits) - len(significant)
    if exponent < -MAX_QUANTITY_PLACES:
        raise ValueError(f"quantity must have at most {MAX_QUANTITY_PLACES} decimal places")
    return Decimal((sign, tuple(int(d) for d in significant), exponent))


def canonical_quantity(quantity: Decimal) -> str:
    text = format(quantity.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def normalise_ts(value: Timestamp) -> datetime:
    """An aware moment in UTC, to the microsecond (nanoseconds cut, not rounded)."""
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("ts must be timezone-aware (a naive datetime is ambiguous)")
        return _in_utc(value)
    if isinstance(value, str):
        if not _RFC3339.match(value):
            raise ValueError(
                "ts must be an RFC 3339 timestamp with a time zone, e.g. 2026-01-16T14:30:00Z:"
                f" {value!r}"
            )
        iso = value.replace("z", "Z").replace("Z", "+00:00").replace("t", "T").replace(" ", "T")
        iso = re.sub(r"\.([0-9]{6})[0-9]+", r".\1", iso)  # cut to microseconds
        iso = re.sub(r"\.([0-9]{1,5})(?=[+-])", lambda m: "." + m.group(1).ljust(6, "0"), iso)
        try:
            moment = datetime.fromisoformat(iso)
        except ValueError:
            raise ValueError(f"ts is not a real date and time: {value!r}") from None
        return _in_utc(moment)
    raise TypeError(f"ts must be a datetime or an RFC 3339 string, not {type(value).__name__}")


def _in_utc(moment: datetime) -> datetime:
    try:
        return moment.astimezone(timezone.utc)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise ValueError("ts is outside years 0001 to 9999 once in UTC") from None


def wire_time(moment: datetime) -> str:
    """RFC 3339 in UTC to the microsecond, the year always four digits."""
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")[:-6] + "Z"


def canonical_time(moment: datetime) -> str:
    # strftime, as the server keys it (its %Y does not pad a year below 1000).
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_meta(meta: Mapping[str, Any] | None) -> str:
    if not meta:
        return "{}"
    return json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _copy_meta(meta: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A JSON round trip: a frozen copy, with keys as the server will read them."""
    if meta is None:
        return None
    if not isinstance(meta, Mapping):
        raise TypeError(f"meta must be a mapping, not {type(meta).__name__}")
    try:
        copied: dict[str, Any] = json.loads(json.dumps(dict(meta), allow_nan=False))
    except (TypeError, ValueError) as error:
        raise ValueError(f"meta must be JSON: {error}") from None
    return copied


def canonical_form(
    metric: str,
    customer_ref: str,
    quantity: Quantity,
    ts: Timestamp,
    meta: Mapping[str, Any] | None,
) -> str:
    """The content the server keys an event by: one field per line."""
    return "\n".join(
        (
            metric,
            customer_ref,
            canonical_quantity(normalise_quantity(quantity)),
            canonical_time(normalise_ts(ts)),
            canonical_meta(_copy_meta(meta)),
        )
    )


def content_key(
    metric: str,
    customer_ref: str,
    quantity: Quantity,
    ts: Timestamp,
    meta: Mapping[str, Any] | None,
) -> str:
    """The key the server derives for this content when an event is sent without one."""
    return content_key_of(canonical_form(metric, customer_ref, quantity, ts, meta))


def content_key_of(form: str) -> str:
    return "content:" + hashlib.sha256(form.encode()).hexdigest()


def new_event_key() -> str:
    """A key for an event whose time the client chose: unique across processes and hosts."""
    return f"evt-{uuid.uuid4()}"


class _DefaultClock:
    """Now, in UTC, strictly later on each call (by at least a microsecond).

    An event without ``ts`` is a distinct occurrence: its key is random (see
    ``new_event_key``), and its time, ordered in this process, says when it
    was made; a clock coarser than a microsecond still gives each its own.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = datetime.min.replace(tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        with self._lock:
            moment = max(datetime.now(timezone.utc), self._last + timedelta(microseconds=1))
            self._last = moment
            return moment


_now = _DefaultClock()


@dataclass(frozen=True)
class UsageEvent:
    """One usage event, normalised and keyed when created (see the module docstring).

    Build one with ``UsageEvent.create(...)`` (``ts`` defaults to now) or
    ``UsageEvent.from_dict({...})`` (camelCase or snake_case keys). Built
    directly, its quantity and ts are checked and normalised all the same,
    and ``meta`` is used as given (``create`` copies it).
    """

    metric: str
    customer_ref: str
    quantity: Decimal
    ts: datetime
    meta: dict[str, Any] | None = None
    explicit_key: str | None = None
    canonical: str = field(init=False, compare=False, repr=False)
    content_key: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("metric", "customer_ref"):
            text = getattr(self, name)
            if not isinstance(text, str) or not text:
                raise ValueError(f"{name} must be a non-empty string")
        key = self.explicit_key
        if key is not None and (not isinstance(key, str) or not key):
            raise ValueError("idempotency_key must be a non-empty string when given")
        if key is not None and not _encodable(key):
            # The key is sent but not in the canonical form: its batch could not be encoded.
            raise ValueError("idempotency_key must be valid Unicode (no lone surrogates)")
        quantity = normalise_quantity(self.quantity)
        moment = normalise_ts(self.ts)
        form = "\n".join(
            (
                self.metric,
                self.customer_ref,
                canonical_quantity(quantity),
                canonical_time(moment),
                canonical_meta(self.meta),
            )
        )
        # A frozen dataclass: the normalised values and the key, set once here.
        object.__setattr__(self, "quantity", quantity)
        object.__setattr__(self, "ts", moment)
        object.__setattr__(self, "meta", self.meta or None)
        object.__setattr__(self, "canonical", form)
        object.__setattr__(self, "content_key", content_key_of(form))

    @classmethod
    def create(
        cls,
        metric: str,
        customer_ref: str,
        quantity: Quantity,
        ts: Timestamp | None = None,
        meta: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> UsageEvent:
        """An event; ``ts`` defaults to now (strictly later than the last default here).

        Without ``ts`` and without ``idempotency_key``, the event gets a random
        key of its own (see the module docstring): it is an occurrence, not content.
        """
        if ts is None and idempotency_key is None:
            idempotency_key = new_event_key()
        return cls(
            metric,
            customer_ref,
            normalise_quantity(quantity),
            normalise_ts(_now() if ts is None else ts),
            _copy_meta(meta),
            idempotency_key,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UsageEvent:
        """An event from a mapping with camelCase (as on the wire) or snake_case keys."""
        known = {
            "metric",
            "customerRef",
            "customer_ref",
            "quantity",
            "ts",
            "meta",
            "idempotencyKey",
            "idempotency_key",
        }
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown event fields: {', '.join(sorted(unknown))}")
        try:
            metric = data["metric"]
            customer_ref = data["customerRef"] if "customerRef" in data else data["customer_ref"]
            quantity = data["quantity"]
        except KeyError as missing:
            raise ValueError(f"an event needs {missing.args[0]}") from None
        return cls.create(
            metric,
            customer_ref,
            quantity,
            ts=data.get("ts"),
            meta=data.get("meta"),
            idempotency_key=data.get("idempotencyKey", data.get("idempotency_key")),
        )

    @property
    def idempotency_key(self) -> str:
        """The key this event counts under: the caller's (or a random one), else the content key."""
        return self.explicit_key if self.explicit_key is not None else self.content_key

    @property
    def key_is_derived(self) -> bool:
        return self.explicit_key is None

    def to_wire(self) -> dict[str, Any]:
        """The event as the ingest route reads it: camelCase, a key only if the caller chose one."""
        text = canonical_quantity(self.quantity)
        wire: dict[str, Any] = {
            "metric": self.metric,
            "customerRef": self.customer_ref,
            # A whole number as a JSON number, anything else as exact decimal text.
            "quantity": int(text) if text.lstrip("-").isdigit() else text,
            "ts": wire_time(self.ts),
        }
        if self.meta:
            wire["meta"] = self.meta
        if self.explicit_key is not None:
            wire["idempotencyKey"] = self.explicit_key
        return wire


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


EventLike = UsageEvent | Mapping[str, Any]


def as_event(event: EventLike) -> UsageEvent:
    return event if isinstance(event, UsageEvent) else UsageEvent.from_dict(event)
