"""What the account was asked, second by second: requests per route, and how many got 429.

Counted where the rate limiter decides, in its windows (whole seconds of the
monotonic clock), so a client's pace can be checked against the limit from
the side that enforces it: ``GET /_emulator/requests``. Object ids in a path
become ``{id}``, so one route is one row whatever it names. The last
``KEEP_SECONDS`` are kept; ``reset`` forgets them.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from typing import Any

KEEP_SECONDS = 3600
# A Stripe id: a lowercase prefix, ``_``, then letters and digits with at least one digit
# or capital (``mtr_61Q…``, ``cus_A1``), unlike a route's own words (``event_summaries``).
_ID = re.compile(r"^[a-z]+_(?=[A-Za-z0-9_]*[A-Z0-9])[A-Za-z0-9_]+$")


def route_of(method: str, path: str) -> str:
    """``GET /v1/billing/meters/mtr_123/event_summaries`` → ``GET /v1/billing/meters/{id}/…``."""
    parts = ["{id}" if _ID.match(part) else part for part in path.split("/")]
    return f"{method} {'/'.join(parts)}"


class RequestLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._received: Counter[tuple[int, str]] = Counter()
        self._limited: Counter[tuple[int, str]] = Counter()

    def record(self, method: str, path: str, *, limited: bool) -> None:
        second = int(time.monotonic())
        key = (second, route_of(method, path))
        with self._lock:
            self._received[key] += 1
            if limited:
                self._limited[key] += 1
            if len(self._received) > 4 * KEEP_SECONDS:
                self._forget_before(second - KEEP_SECONDS)

    def _forget_before(self, second: int) -> None:
        for key in [key for key in self._received if key[0] < second]:
            del self._received[key]
            self._limited.pop(key, None)

    def describe(self, since: int | None = None) -> dict[str, Any]:
        """``now`` (the current window) and one row per second × route from ``since`` on."""
        with self._lock:
            rows = [
                {"second": second, "route": route, "count": n, "limited": self._limited[key]}
                for key, n in sorted(self._received.items())
                for second, route in [key]
                if since is None or second >= since
            ]
        return {"now": int(time.monotonic()), "data": rows}

    def clear(self) -> None:
        with self._lock:
            self._received.clear()
            self._limited.clear()
