"""The shape of a JSON text, judged before it is decoded: nesting depth and repeated keys.

A decoder keeps the last of two equal keys (``{"quantity":1,"quantity":1000}``
reads 1000) and recurses once per level of nesting (a body nested a thousand
levels deep exhausts the interpreter's stack). These checks see the raw
bytes, so they can refuse both with a clear reason. Each has a fast path that
runs at C speed for ordinary input and an exact path, a scan over the JSON
tokens, for the rare input that the fast path cannot clear.

The texts given here have been or will be parsed by a strict JSON decoder;
for invalid JSON the answers are only best effort (the decoder then refuses
the text anyway).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{},:]', re.DOTALL)
# Without a backslash every string is "...": each match starts a string, so
# keys are exactly the strings followed by a colon.
PLAIN_STRING = re.compile(rb'"([^"]*)"(\s*:)?')
# Every key ends in a quote followed by a colon; so may a string's opening
# quote (": ..."), which only makes the count larger.
KEY_END = re.compile(rb'"\s*:')
NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _decode(token: bytes) -> str:
    if b"\\" not in token:
        return token[1:-1].decode("utf-8", "replace")
    try:
        value = json.loads(token)
    except ValueError:
        return token[1:-1].decode("utf-8", "replace")
    return value if isinstance(value, str) else ""


@dataclass(frozen=True)
class RepeatedKey:
    key: str
    top_level: bool  # in the outermost object, not one nested in it


def duplicate_key(data: bytes) -> RepeatedKey | None:
    """The first key that appears twice in one object of ``data``, or None."""
    if b"\\" not in data:
        keys = [key for key, colon in PLAIN_STRING.findall(data) if colon]
        if len(set(keys)) == len(keys):
            return None  # no key repeats anywhere, so none repeats within an object
    objects: list[set[str] | None] = []
    previous = b""
    for match in TOKEN.finditer(data):
        token = match.group()
        if token == b"{":
            objects.append(set())
        elif token == b"[":
            objects.append(None)
        elif token in (b"}", b"]"):
            if objects:
                objects.pop()
        elif token == b":" and previous[:1] == b'"' and objects and objects[-1] is not None:
            key = _decode(previous)
            if key in objects[-1]:
                return RepeatedKey(key, len(objects) == 1)
            objects[-1].add(key)
        previous = token
    return None


def keys_at_most(data: bytes) -> int:
    """An upper bound on how many keys ``data`` holds (counting repeats).

    When it equals the number of distinct keys a decoder found, no key was
    repeated: the expensive ``duplicate_key`` is needed only otherwise.
    """
    return len(KEY_END.findall(data))


def shallow(data: bytes, limit: int) -> bool:
    """True when ``data`` certainly nests at most ``2 * limit`` levels (cheap, C speed).

    False may also mean brackets inside strings confused the count: ask
    ``depth`` for the exact answer then.
    """
    if data.count(b"{") + data.count(b"[") <= limit:
        return True
    brackets = data.translate(None, NOT_BRACKETS)
    for _ in range(limit):
        if not brackets:
            return True
        # Each pass removes the innermost one or two levels everywhere.
        brackets = brackets.replace(b"{}", b"").replace(b"[]", b"")
    return not brackets


def depth(data: bytes) -> int:
    """How many levels of objects and arrays ``data`` nests (a scalar: 0)."""
    level = deepest = 0
    for match in TOKEN.finditer(data):
        token = match.group()
        if token in (b"{", b"["):
            level += 1
            deepest = max(deepest, level)
        elif token in (b"}", b"]"):
            level -= 1
    return deepest


@dataclass(frozen=True)
class Member:
    """One member of an object (``key`` set) or array: where its value lies and how deep it is."""

    key: str | None
    start: int
    end: int
    depth: int


def members(data: bytes) -> list[Member]:
    """The members of the object or array that ``data`` holds, without decoding their values."""
    found: list[Member] = []
    level = 0
    start = deepest = 0
    key: str | None = None
    pending: str | None = None
    for match in TOKEN.finditer(data):
        token = match.group()
        if token in (b"{", b"["):
            level += 1
            if level == 1:
                start, deepest = match.end(), 1
            deepest = max(deepest, level)
        elif token in (b"}", b"]"):
            if level == 1:
                if data[start : match.start()].strip():
                    found.append(Member(key, start, match.start(), deepest - 1))
                return found
            level -= 1
        elif level == 1:
            if token == b",":
                found.append(Member(key, start, match.start(), deepest - 1))
                start, deepest, key = match.end(), 1, None
            elif token == b":":
                key, start, deepest = pending, match.end(), 1
            else:
                pending = _decode(token)
    return found


def without_deep_members(data: bytes, limit: int) -> tuple[bytes, dict[int, bytes]]:
    """``data`` with each member of its object or array nesting more than ``limit`` levels
    replaced by ``null``, and the members replaced (by position), as they were.

    So that a decoder can read the rest of a batch, and each event too deep to
    decode is refused alone.
    """
    replaced: dict[int, bytes] = {}
    pieces: list[bytes] = []
    done = 0
    for index, member in enumerate(members(data)):
        if member.depth <= limit:
            continue
        replaced[index] = data[member.start : member.end]
        pieces += [data[done : member.start], b"null"]
        done = member.end
    pieces.append(data[done:])
    return b"".join(pieces), replaced
