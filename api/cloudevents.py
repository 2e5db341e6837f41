"""CloudEvents 1.0 usage events (structured mode, JSON format), read into the ingest's own events.

A body sent as ``application/cloudevents+json`` (one event) or
``application/cloudevents-batch+json`` (an array of them) is read here, each
event into the ``EventIn`` a JSON ingest body holds::

    id      -> idempotencyKey (chosen by the client)   time          -> ts
    subject -> customerRef                             data.quantity -> quantity
    type    -> metric, less a configured prefix        data.meta     -> meta

The ingest route then judges each one by the very rules of a JSON event
(api/routes/ingest.py), and ``attribute`` names a broken rule as the client
wrote it (``time``, not ``ts``). ``source`` is checked (the spec requires it)
but not kept; other attributes (extensions) are ignored. docs/cloudevents.md
is the guide.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Final, Literal

import msgspec

from api.schemas import (
    MAX_BODY_DEPTH,
    QUANTITY,
    EventIn,
    FieldError,
    not_utf8,
    too_deep,
    unknown_field,
    validation_field,
)
from domain import fields, json_shape
from domain.ingest import IngestResult

SINGLE: Final = "application/cloudevents+json"
BATCH: Final = "application/cloudevents-batch+json"
JSON = "application/json"
Kind = Literal["application/cloudevents+json", "application/cloudevents-batch+json"]

# The attributes this reader reads or refuses: a repeat of any other is an
# extension's, ignored like the extension.
ATTRIBUTES = frozenset(
    {
        *("specversion", "id", "source", "type", "subject", "time"),
        *("datacontenttype", "data", "data_base64"),
    }
)
# A JSON event's fields, as the CloudEvent attributes that carry them.
ATTRIBUTE_OF = {
    "idempotencyKey": "id",
    "customerRef": "subject",
    "metric": "type",
    "ts": "time",
    "quantity": "data.quantity",
    "meta": "data.meta",
}


class CloudEventIn(msgspec.Struct):
    """The attributes read; any other is an extension attribute, ignored."""

    specversion: str | None = None
    id: str | None = None
    source: str | None = None
    type: str | None = None
    subject: str | None = None
    time: str | None = None
    datacontenttype: str | None = None
    data: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    data_base64: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET


class UsageData(msgspec.Struct, forbid_unknown_fields=True):
    """A usage CloudEvent's ``data``."""

    quantity: Annotated[msgspec.Raw, QUANTITY]  # judged by domain.fields.quantity
    meta: dict[str, Any] | None = None


def _described(text: str) -> Any:
    return msgspec.Meta(description=text)


class UsageCloudEvent(msgspec.Struct):
    """A usage CloudEvent as the OpenAPI document shows it (``CloudEventIn`` reads it).

    Any other attribute is an extension, ignored.
    """

    specversion: Literal["1.0"]
    id: Annotated[str, _described("the idempotency key: one event per tenant and id, forever")]
    source: Annotated[str, _described("required by CloudEvents; checked, not kept")]
    type: Annotated[str, _described("the metric, less a configured prefix (docs/cloudevents.md)")]
    subject: Annotated[str, _described("the customer (customerRef)")]
    time: Annotated[str, _described("when the usage happened: RFC 3339 with an offset")]
    data: UsageData
    datacontenttype: Literal["application/json"] | None = None


def kind_of(content_type: str | None) -> Kind | None:
    """Which CloudEvents body a ``Content-Type`` announces; None for any other (a JSON body).

    Only UTF-8 is read: a ``charset`` parameter must say so.
    """
    if not content_type or "cloudevents" not in content_type.lower():
        return None  # every JSON ingest comes through here: keep it cheap
    media = _media_type("Content-Type", content_type)
    if media == SINGLE:
        return SINGLE
    if media == BATCH:
        return BATCH
    if media.startswith("application/cloudevents"):
        reason = f"must be {SINGLE} or {BATCH}: CloudEvents are read as JSON"
        raise FieldError("Content-Type", reason)
    return None


def events_of(data: bytes, kind: Kind, max_events: int) -> list[bytes | FieldError]:
    """The body's events, each still encoded, or the error of one nested too deeply to read.

    Raises (the whole request refused) for a body that is not JSON, or not one
    CloudEvent object (``SINGLE``), or not an array of 1 to ``max_events``
    (``BATCH``).
    """
    if kind == SINGLE:
        if data.lstrip()[:1] != b"{":
            msgspec.json.decode(data)  # not JSON: refused as such
            raise FieldError("body", "must be one CloudEvent, a JSON object")
        if not too_deep(data):
            return [data]
        # Too deep to decode as it is: the event's error, once the rest is seen to be JSON.
        msgspec.json.decode(_without_deep_members(data)[0])
        return [deep_error(data)]
    deep: dict[int, bytes] = {}
    if too_deep(data):
        data, deep = _without_deep_members(data)
    try:
        events = msgspec.json.decode(data, type=list[msgspec.Raw])
    except msgspec.ValidationError:
        raise FieldError("body", "must be a JSON array of CloudEvents") from None
    if not events:
        raise FieldError("body", "must hold at least one event")
    if len(events) > max_events:
        raise FieldError("body", f"must hold at most {max_events} events")
    return [
        deep_error(deep[index]) if index in deep else bytes(event)
        for index, event in enumerate(events)
    ]


def event_in(data: bytes, type_prefixes: tuple[str, ...]) -> EventIn:
    """One CloudEvent as the JSON event it stands for; its fields are judged afterwards.

    Raises ``FieldError`` naming the attribute (``data.quantity`` for a field of
    ``data``), or ``msgspec.DecodeError`` for a single event that is not JSON.
    """
    try:
        event = msgspec.json.decode(data, type=CloudEventIn)
    except msgspec.ValidationError as error:
        bad = validation_field(error)  # an absent attribute reads as None: say only what is due
        raise FieldError(bad.field, bad.reason.replace(" | null`", "`")) from None
    except UnicodeDecodeError:
        raise not_utf8(data, among=ATTRIBUTES) from None
    if event.specversion is None:
        raise FieldError("specversion", "is required")
    if event.specversion != "1.0":
        raise FieldError("specversion", "must be 1.0")
    key = _required("id", event.id, "the event's idempotency key")
    if not _required("source", event.source, "by the CloudEvents spec"):
        raise FieldError("source", "must not be empty")
    metric = metric_of(_required("type", event.type, "it names the metric"), type_prefixes)
    customer_ref = _required("subject", event.subject, "it names the customer (customerRef)")
    ts = _required("time", event.time, "usage counts at the time it happened")
    content_type = event.datacontenttype
    if content_type is not None and _media_type("datacontenttype", content_type) != JSON:
        raise FieldError("datacontenttype", "must be application/json (or left out)")
    if event.data_base64 is not msgspec.UNSET:
        raise FieldError("data_base64", "is not read: send data as a JSON object {quantity, meta}")
    if event.data is msgspec.UNSET or bytes(event.data) == b"null":
        raise FieldError("data", "is required: a JSON object {quantity, meta}")
    usage = _usage_data(bytes(event.data))
    # Last, as for a JSON event: a repeated attribute whose last value breaks a
    # rule is reported as that rule.
    _refuse_repeated_keys(data)
    return EventIn(
        metric=metric,
        customer_ref=customer_ref,
        quantity=usage.quantity,
        ts=ts,
        idempotency_key=key,
        meta=usage.meta,
    )


def metric_of(event_type: str, type_prefixes: tuple[str, ...]) -> str:
    """The metric a ``type`` names: without the first configured prefix it starts with."""
    for prefix in type_prefixes:
        if event_type.startswith(prefix):
            if event_type == prefix:
                raise FieldError("type", f"names no metric after the prefix {prefix!r}")
            return event_type[len(prefix) :]
    return event_type


def attribute(field: str) -> str:
    """The attribute that carries a JSON event's field (``ts`` is ``time``)."""
    return ATTRIBUTE_OF.get(field, field)


def named_as_sent(result: IngestResult) -> IngestResult:
    """A result whose error names the CloudEvent attribute rather than the JSON field."""
    if result.field is None or result.field not in ATTRIBUTE_OF:
        return result
    return dataclasses.replace(result, field=ATTRIBUTE_OF[result.field])


def deep_error(event: bytes) -> FieldError:
    """The error of an event nested past ``MAX_BODY_DEPTH``, naming its deepest attribute."""
    deepest = max(json_shape.members(event), key=lambda m: m.depth, default=None)
    if deepest is None or deepest.key is None:
        return FieldError("body", f"must nest at most {MAX_BODY_DEPTH} levels deep")
    if deepest.key != "data":
        return FieldError(deepest.key, "is nested too deeply")
    data = event[deepest.start : deepest.end]
    inner = max(json_shape.members(data), key=lambda m: m.depth, default=None)
    if inner is not None and inner.key == "meta":
        return FieldError("data.meta", f"must nest at most {fields.MAX_META_DEPTH} levels deep")
    return FieldError("data", "is nested too deeply")


def _without_deep_members(data: bytes) -> tuple[bytes, dict[int, bytes]]:
    """``data`` with its members too deep to decode replaced by null, and those members.

    Refused if still too deep: deep where no member is (unbalanced brackets, say).
    """
    shallower, deep = json_shape.without_deep_members(data, MAX_BODY_DEPTH - 1)
    if too_deep(shallower):
        raise FieldError("body", f"must nest at most {MAX_BODY_DEPTH} levels deep")
    return shallower, deep


def _media_type(field: str, value: str) -> str:
    """A media type's ``type/subtype`` in lower case; a ``charset`` other than UTF-8 refused."""
    media, *parameters = value.split(";")
    for parameter in parameters:
        name, _, given = parameter.partition("=")
        if name.strip().lower() == "charset" and given.strip().strip('"').lower() != "utf-8":
            raise FieldError(field, "must have charset utf-8, or none: CloudEvents JSON is UTF-8")
    return media.strip().lower()


def _required(field: str, value: str | None, why: str) -> str:
    if value is None:
        raise FieldError(field, f"is required: {why}")
    return value


def _usage_data(data: bytes) -> UsageData:
    if data.lstrip()[:1] != b"{":
        raise FieldError("data", "must be a JSON object {quantity, meta}")
    try:
        return msgspec.json.decode(data, type=UsageData)
    except msgspec.ValidationError as error:
        unknown = unknown_field(error)
        bad = validation_field(error)
    except UnicodeDecodeError:
        raise not_utf8(data, "data.") from None
    if unknown is not None:
        raise FieldError("data", f"holds {unknown!r}: only quantity and meta are read")
    raise FieldError(f"data.{bad.field}", bad.reason)


def _refuse_repeated_keys(data: bytes) -> None:
    """Refuse an attribute, or a key inside ``data``, sent twice (a decoder keeps the last)."""
    if json_shape.duplicate_key(data) is None:
        return  # the common case, at C speed
    seen: set[str | None] = set()
    members = json_shape.members(data)
    for member in members:
        if member.key in seen and member.key in ATTRIBUTES:
            raise FieldError(member.key, "appears more than once in one object")
        seen.add(member.key)
    for member in members:
        if member.key != "data":
            continue
        repeated = json_shape.duplicate_key(data[member.start : member.end])
        if repeated is None:
            continue
        if repeated.top_level:  # quantity or meta: any other member was refused already
            raise FieldError(f"data.{repeated.key}", "appears more than once in one object")
        raise FieldError("data.meta", f"key {repeated.key!r} appears more than once in one object")
