"""Decoding Stripe's v1 wire format: form/query strings with bracket notation.

Stripe v1 sends nested data as ``a[b][c]=1`` and arrays as ``items[0][price]=x``
(or ``expand[]=x``); v2 sends JSON. Both end up as plain nested dicts/lists so
handlers read one shape.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from stripe_emulator.errors import invalid_request

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART = re.compile(r"\[([^\[\]]*)\]")


def decode_form(raw: str) -> dict[str, Any]:
    """Decode ``a[b][0]=x&c=y`` into ``{"a": {"b": ["x"]}, "c": "y"}``."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(raw, keep_blank_values=True):
        match = _KEY.match(key)
        if match is None:
            raise invalid_request(f"Invalid parameter name: {key}", param=key)
        parts = [match.group(1), *_PART.findall(match.group(2))]
        _assign(root, parts, value, key)
    return _listify(root)  # type: ignore[no-any-return]


def _assign(node: dict[str, Any], parts: list[str], value: str, key: str) -> None:
    for i, raw_part in enumerate(parts):
        # `expand[]=a&expand[]=b`: an empty index appends at the next free one.
        part = raw_part or str(sum(1 for k in node if k.isdigit()))
        if i == len(parts) - 1:
            node[part] = value
            return
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise invalid_request(f"Invalid parameter structure: {key}", param=key)
        node = child


def _listify(value: Any) -> Any:
    """Turn dicts keyed only by indices into lists, in index order."""
    if not isinstance(value, dict):
        return value
    converted = {k: _listify(v) for k, v in value.items()}
    if converted and all(k.isdigit() for k in converted):
        return [converted[k] for k in sorted(converted, key=int)]
    return converted
