"""A faster transcoder for stored events that writes the bytes the library's own writes.

eventsourcing's ``JSONTranscoder`` encodes with the standard library's
``json``, calling back into Python for every UUID, Decimal and datetime; at
group-commit sizes that was a third of the writer's time. This one walks
the event's state once, wraps each registered type exactly as the library
does (``{"_type_": name, "_data_": ...}``) and lets msgspec write the JSON.
The result is byte for byte what ``JSONTranscoder`` writes (compact
separators, UTF-8 unescaped), so stored events stay readable both ways:
``tests/integration/test_transcoder.py`` checks every event class.

Where msgspec and ``json`` would differ — floats (``1e+16`` against ``1e16``,
NaN) — it hands the whole object to ``JSONTranscoder``. It is a
``JSONTranscoder``, so ``Application.register_transcodings`` registers the
same transcodings on it. Decoding stays the library's: its C scanner with
an object hook is as fast as msgspec plus a Python walk over the result.

``FastMapper`` is the library's ``Mapper`` with the per-event generic work
(topic resolution, class version lookup) done once per event class: the same
stored events, two microseconds sooner each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import (
    Cipher,
    Compressor,
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    StoredEvent,
    Transcoder,
    Transcoding,
    TranscodingNotRegisteredError,
    UUIDAsHex,
)
from eventsourcing.utils import get_topic


class _UseJson(Exception):
    """The object holds a value msgspec would write differently from ``json``."""


class MsgspecTranscoder(JSONTranscoder):
    def __init__(self) -> None:
        super().__init__()
        self._msgspec_encode = msgspec.json.Encoder().encode
        # Per registered type: its wrapped form, built without a call back into ``_plain``
        # for the library's own three (whose encodings are plain text).
        self._wrap: dict[type, Callable[[Any], dict[str, Any]]] = {}

    def register(self, transcoding: Transcoding) -> None:
        super().register(transcoding)
        self._wrap[transcoding.type] = _wrapper(transcoding, self._plain)

    def encode(self, obj: Any) -> bytes:
        try:
            return self._msgspec_encode(self._plain(obj))
        except _UseJson:
            return super().encode(obj)

    def _plain(self, o: Any) -> Any:
        """``o`` as str, int, bool, None, dicts and lists only, registered types wrapped."""
        kind = type(o)
        if kind is str or kind is int or kind is bool or o is None:
            return o
        if kind is dict:
            wrap = self._wrap
            out: dict[str, Any] = {}
            for key, value in o.items():
                if type(key) is not str:
                    # json writes int, bool and None keys as text its own way ("true", "null").
                    raise _UseJson
                vkind = type(value)
                if vkind is str or vkind is int or vkind is bool or value is None:
                    out[key] = value
                elif (wrapper := wrap.get(vkind)) is not None:
                    out[key] = wrapper(value)
                else:
                    out[key] = self._plain(value)
            return out
        if kind is list or kind is tuple:
            plain = self._plain
            return [plain(v) for v in o]
        wrapper = self._wrap.get(kind)
        if wrapper is not None:
            return wrapper(o)
        # What json's encoder does with subclasses (str and int enums, say), before its hook.
        if isinstance(o, str):
            return str.__str__(o)
        if isinstance(o, int):
            return int.__int__(o)
        if isinstance(o, float):
            raise _UseJson
        if isinstance(o, dict):
            return self._plain(dict(o))
        if isinstance(o, list | tuple):
            return self._plain(list(o))
        raise TranscodingNotRegisteredError(
            f"Object of type {kind} is not serializable. Please define and register"
            " a custom transcoding for this type."
        )


def _wrapper(
    transcoding: Transcoding, plain: Callable[[Any], Any]
) -> Callable[[Any], dict[str, Any]]:
    name = transcoding.name
    if type(transcoding) is UUIDAsHex:
        return lambda o: {"_type_": name, "_data_": o.hex}
    if type(transcoding) is DatetimeAsISO:
        return lambda o: {"_type_": name, "_data_": o.isoformat()}
    if type(transcoding) is DecimalAsStr:
        return lambda o: {"_type_": name, "_data_": str(o)}
    encode = transcoding.encode
    return lambda o: {"_type_": name, "_data_": plain(encode(o))}


class FastMapper(Mapper[UUID]):
    """``Mapper.to_stored_event`` with each event class's topic and version looked up once."""

    def __init__(
        self,
        transcoder: Transcoder,
        compressor: Compressor | None = None,
        cipher: Cipher | None = None,
    ) -> None:
        super().__init__(transcoder, compressor, cipher)
        self._classes: dict[type, tuple[str, int]] = {}

    def to_stored_event(self, domain_event: DomainEventProtocol[UUID]) -> StoredEvent:
        if self.compressor is not None or self.cipher is not None:
            return super().to_stored_event(domain_event)
        cls = type(domain_event)
        known = self._classes.get(cls)
        if known is None:
            known = self._classes[cls] = (get_topic(cls), getattr(cls, "class_version", 1))
        topic, class_version = known
        state = dict(vars(domain_event))
        originator_id = state.pop("originator_id")
        originator_version = state.pop("originator_version")
        if class_version > 1:
            state["class_version"] = class_version
        return StoredEvent(originator_id, originator_version, topic, self.transcoder.encode(state))
