"""The opaque page cursor of the listing routes: a log position the client hands back."""

from __future__ import annotations

import base64

from api.query import whole_number
from api.schemas import FieldError

MAX_CURSOR = 40  # "p:" and 19 digits encode to 28 characters


def encode_cursor(position: int) -> str:
    return base64.urlsafe_b64encode(f"p:{position}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The position a cursor from ``encode_cursor`` holds; anything it cannot have made is a 422.

    Only the exact text ``encode_cursor`` writes for a position 0..2^63-1 is
    read: no padding, sign, spaces, other digits or a number past what the
    database stores (a larger one failed inside SQLite with a 500).
    """
    refused = FieldError("cursor", "is not a cursor this API returned")
    if len(cursor) > MAX_CURSOR:
        raise refused
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except ValueError:
        raise refused from None
    kind, _, digits = text.partition(":")
    if kind != "p":
        raise refused
    position = whole_number("cursor", digits, refused.reason)
    if encode_cursor(position) != cursor:
        raise refused
    return position
