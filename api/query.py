"""Rules for the values a client names in a query string or a path.

Each refuses with a ``FieldError`` naming the parameter as the client sent it,
so that no value can reach the database or date arithmetic in a shape that
fails there (a number past SQLite's 64-bit integers, a year past 9999) and
answer 500.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from litestar import Request

from api.schemas import FieldError

# Positions, versions and numbers we hand out fit a signed 64-bit integer
# (PostgreSQL bigint, SQLite INTEGER); nothing past it can be one of ours.
MAX_INT64 = 2**63 - 1
DIGITS = re.compile(r"0|[1-9][0-9]{0,18}", re.ASCII)


def whole_number(field: str, text: str, reason: str) -> int:
    """``text`` as a whole number 0..2^63-1 in plain ASCII digits, else ``reason``."""
    if DIGITS.fullmatch(text) is None or int(text) > MAX_INT64:
        raise FieldError(field, reason)
    return int(text)


def before(field: str, moment: datetime, span: timedelta) -> datetime:
    """``moment - span``, or a 422 on ``field`` when that is before year 1."""
    try:
        return moment - span
    except OverflowError:
        raise FieldError(field, "is too early: the range would start before year 1") from None


def given_once(request: Request[Any, Any, Any]) -> None:
    """Refuse a query parameter given twice (``limit=1&limit=1000``): which one counts
    would be the framework's choice, not the client's. A ``before_request`` hook of
    the routes that read query parameters."""
    seen: set[str] = set()
    for name, _ in request.query_params.multi_items():
        if name in seen:
            raise FieldError(name, "must be given once")
        seen.add(name)
