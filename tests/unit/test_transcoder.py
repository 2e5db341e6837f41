"""The msgspec transcoder and the fast mapper store what eventsourcing's own store, and read it.

Every domain event class (found by walking the library's event class tree,
so a new one is covered without editing this file) gets an instance with a
value for each of its fields, built from the field's type. Each is mapped to
a stored event by the old transcoder and by the new one: the stored bytes
must be identical, and each side must read the other's bytes back to the
same event. Snapshots holding a pending push intent cover ``IntentAsDict``.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import types
import typing
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.domain import DomainEvent, Snapshot
from eventsourcing.persistence import JSONTranscoder, Mapper, TranscodingNotRegisteredError

import domain
from adapters.transcoder import FastMapper, MsgspecTranscoder
from domain.application import MeteringApp
from domain.ledger import Intent

HOSTILE_TEXT = 'é ✓ 日本 "quoted" \\ back\nline\ttab \x00\x1f\x7f \u2028\u2029 😀'
SKIPPED_FIELDS = {"originator_id", "originator_version"}


def _transcoders() -> tuple[JSONTranscoder, MsgspecTranscoder]:
    app = MeteringApp()
    old, new = JSONTranscoder(), MsgspecTranscoder()
    app.register_transcodings(old)
    app.register_transcodings(new)
    return old, new


def _domain_event_classes() -> list[type[Any]]:
    for module in pkgutil.iter_modules(domain.__path__):
        importlib.import_module(f"domain.{module.name}")

    def walk(cls: type[Any]) -> Iterator[type[Any]]:
        for sub in cls.__subclasses__():
            yield sub
            yield from walk(sub)

    # The library's metaclass leaves earlier copies of some classes behind: keep the
    # one each topic names (the class stored events are read into).
    found = {
        c for c in walk(DomainEvent) if c.__module__.startswith("domain.") and _named_by_its_path(c)
    }
    return sorted(found, key=lambda c: f"{c.__module__}.{c.__qualname__}")


def _named_by_its_path(cls: type[Any]) -> bool:
    obj: Any = importlib.import_module(cls.__module__)
    for part in cls.__qualname__.split("."):
        obj = getattr(obj, part, None)
    return obj is cls


def _value(hint: Any, n: int) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _value(options[0], n)
    if origin in (list, tuple, set, frozenset):
        (item, *_) = typing.get_args(hint) or (str,)
        return list if origin is list else origin, [_value(item, n), _value(item, n + 1)]
    if origin is dict:
        return {f"k{n}": n, "nested": {"deeper": [n, "x"]}}
    if hint is UUID:
        return uuid4()
    if hint is str:
        return f"{HOSTILE_TEXT} {n}"
    if hint is bool:
        return n % 2 == 0
    if hint is int:
        return -(10**20) + n if n % 3 == 0 else n
    if hint is Decimal:
        return Decimal("-12.3400") if n % 2 else Decimal("1E+3")
    if hint is datetime:
        zone = UTC if n % 2 else timezone(timedelta(hours=-5, minutes=-30))
        return datetime(2026, 12, 1, 8, 30, n % 60, 123456 * (n % 2), tzinfo=zone)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return hint(**{f.name: _value(f.type, n + i) for i, f in enumerate(_fields(hint))})
    raise AssertionError(f"no sample value for {hint!r}: teach this test the type")


def _fields(cls: type[Any]) -> list[Any]:
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.name not in SKIPPED_FIELDS]
    for field in fields:
        field.type = hints[field.name]
    return fields


def _instance(cls: type[Any], n: int) -> Any:
    state: dict[str, Any] = {"originator_id": uuid4(), "originator_version": n + 1}
    for i, field in enumerate(_fields(cls)):
        value = _value(field.type, n + i)
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], type):
            value = value[0](value[1])
        state[field.name] = value
    event = object.__new__(cls)
    object.__setattr__(event, "__dict__", state)
    return event


def _events() -> list[Any]:
    events = [_instance(cls, n) for n, cls in enumerate(_domain_event_classes())]
    intent = _value(Intent, 7)
    snapshot = _instance(Snapshot, 99)
    snapshot.__dict__["state"] = {"pending": intent, "pushes": [intent], "total": Decimal(5)}
    events.append(snapshot)
    return events


EVENTS = _events()


def test_every_domain_event_class_is_covered() -> None:
    names = {type(e).__qualname__ for e in EVENTS}
    # A floor, so that a broken class walk cannot pass by covering nothing.
    assert {"UsagePeriod.UsageRecorded", "IdempotencyKey.Claimed", "Snapshot"} <= names
    assert len(names) >= 40


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__qualname__)
def test_both_transcoders_store_the_same_bytes_and_read_each_others(event: Any) -> None:
    old_transcoder, new_transcoder = _transcoders()
    old, new = Mapper[UUID](old_transcoder), FastMapper(new_transcoder)

    by_old, by_new = old.to_stored_event(event), new.to_stored_event(event)

    assert by_new == by_old
    assert vars(old.to_domain_event(by_new)) == vars(event)
    assert vars(new.to_domain_event(by_old)) == vars(event)


def test_values_msgspec_writes_otherwise_fall_back_to_json_bytes() -> None:
    old, new = _transcoders()
    for state in (
        {"ratio": 0.1, "big": 1e16, "nan": float("nan"), "inf": float("-inf")},
        {"by_number": {1: "a", False: "b", None: "c"}},
        {"nested": [{"x": 2.5}]},
    ):
        assert new.encode(state) == old.encode(state)


def test_unregistered_types_are_refused_as_the_library_refuses_them() -> None:
    old, new = _transcoders()
    for transcoder in (old, new):
        with pytest.raises(TranscodingNotRegisteredError):
            transcoder.encode({"when": datetime(2026, 1, 1).date()})
