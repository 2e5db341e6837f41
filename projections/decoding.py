"""Domain events straight from a stored row's bytes, with msgspec, for bulk reads.

eventsourcing's ``Mapper.to_domain_event`` decodes a stored state with the
``json`` module and an ``object_hook`` called for every JSON object, then
looks the transcodings up by name: ~5 µs of a rebuild's budget of 20 µs per
event. Here each event class the projections read gets a msgspec struct
derived from its dataclass fields once, and a row's state decodes into it in
one C call: a ``datetime``, ``Decimal`` or ``UUID`` field is the
``{"_type_": ..., "_data_": ...}`` object that the transcoder's
``DatetimeAsISO``, ``DecimalAsStr`` and ``UUIDAsHex`` write, tag checked.

The stored format is not changed: the bytes read are today's (and what a
byte-compatible writer writes). Anything this decoder was not built for is
handed to the mapper, so the result is always the mapper's:

- a class with an upcaster (``class_version`` > 1), a field of another type
  (a dict, a list, a custom transcoding), a cipher or a compressor: the
  class, or every class, is never decoded here;
- a state that does not fit its struct (a missing field, an extra one such
  as ``class_version``, another tag, a bool where an int is wanted): that
  event is decoded by the mapper.

tests/integration/test_rebuild.py decodes every event type the projections
read both ways and compares.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Hashable, Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any, cast
from uuid import UUID

import msgspec
from eventsourcing.persistence import Mapper, StoredEvent, find_id_convertor
from eventsourcing.utils import get_topic


class _IsoTime(msgspec.Struct, tag_field="_type_", tag="datetime_iso", rename={"data": "_data_"}):
    data: datetime


class _DecimalStr(msgspec.Struct, tag_field="_type_", tag="decimal_str", rename={"data": "_data_"}):
    data: Decimal


class _UuidHex(msgspec.Struct, tag_field="_type_", tag="uuid_hex", rename={"data": "_data_"}):
    data: UUID


_WRAPPED: dict[Any, type[msgspec.Struct]] = {
    datetime: _IsoTime,
    Decimal: _DecimalStr,
    UUID: _UuidHex,
}
_PLAIN = (str, int, bool)
_BASE_FIELDS = ("originator_id", "originator_version")  # from the row, not the state
_IDS_KEPT = 100_000


class _Unsupported(Exception):
    """A field type this decoder does not handle: the class stays with the mapper."""


def _field_type(hint: Any) -> tuple[Any, bool]:
    """The msgspec type for a field annotated ``hint``; whether it is wrapped."""
    if hint in _WRAPPED:
        return _WRAPPED[hint], True
    if hint in _PLAIN:
        return hint, False
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 2:
        (inner,) = [a for a in args if a is not type(None)] or [None]
        if type(None) in args and inner is not None:
            kind, wrapped = _field_type(inner)
            return kind | None, wrapped
    raise _Unsupported(hint)


@dataclasses.dataclass(frozen=True)
class _Plan:
    cls: type[Any]
    decoder: msgspec.json.Decoder[Any]
    wrapped: tuple[str, ...]  # the fields whose value is a transcoded object
    id_type: Any  # the class's ``originator_id_type``: what a stored id converts to


def _plan(cls: type[Any]) -> _Plan | None:
    if getattr(cls, "class_version", 1) != 1 or not dataclasses.is_dataclass(cls):
        return None
    hints = typing.get_type_hints(cls)
    spec: list[tuple[str, Any]] = []
    unwrap: list[str] = []
    for f in dataclasses.fields(cls):
        if f.name in _BASE_FIELDS:
            continue
        try:
            kind, wrapped = _field_type(hints[f.name])
        except _Unsupported:
            return None
        spec.append((f.name, kind))
        if wrapped:
            unwrap.append(f.name)
    state = msgspec.defstruct(f"{cls.__qualname__}State", spec, forbid_unknown_fields=True)
    id_type = getattr(cls, "originator_id_type", None)
    return _Plan(cls, msgspec.json.Decoder(state), tuple(unwrap), id_type)


class EventDecoder:
    """Decodes stored rows of the given event classes, as ``mapper`` would, faster."""

    def __init__(self, mapper: Mapper[Any], classes: Iterable[type[Any]]) -> None:
        self.mapper = mapper
        self._plans: dict[str, _Plan] = {}
        if mapper.cipher is None and mapper.compressor is None:
            for cls in classes:
                plan = _plan(cls)
                if plan is not None:
                    self._plans[get_topic(cls)] = plan
        self.fallbacks = 0  # events the mapper decoded (for tests and curiosity)
        # Originator ids as stored (SQLite: text) -> as the events carry them: a
        # log has far fewer aggregates than events, and UUID(text) is 1.5 µs.
        self._ids: dict[Any, Any] = {}

    def decodes(self, topic: str) -> bool:
        """True when rows of this topic are decoded here (not handed to the mapper)."""
        return topic in self._plans

    def decode(self, topic: str, originator_id: Any, version: int, state: bytes) -> Any:
        plan = self._plans.get(topic)
        if plan is not None:
            try:
                decoded = plan.decoder.decode(state)
            except msgspec.ValidationError:
                pass
            else:
                values = msgspec.structs.asdict(decoded)
                for name in plan.wrapped:
                    value = values[name]
                    if value is not None:
                        values[name] = value.data
                key = (plan.id_type, originator_id)
                ident = self._ids.get(key)
                if ident is None:
                    convert = find_id_convertor(
                        cast(Hashable, plan.cls), cast(Hashable, type(originator_id))
                    )
                    ident = convert(originator_id)
                    if len(self._ids) >= _IDS_KEPT:
                        self._ids.clear()
                    self._ids[key] = ident
                values["originator_id"] = ident
                values["originator_version"] = version
                event = object.__new__(plan.cls)
                object.__setattr__(event, "__dict__", values)
                return event
        self.fallbacks += 1
        return self.mapper.to_domain_event(
            StoredEvent(
                originator_id=originator_id,
                originator_version=version,
                topic=topic,
                state=bytes(state),
            )
        )
