"""Idempotency-Key handling: replay a saved result or refuse a mismatched reuse.

Like Stripe, only requests that ran to a result are saved (here: 2xx answers);
a request refused before executing can be retried with the same key. A key is
scoped to the API key that used it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from stripe_emulator.errors import StripeAPIError


@dataclass
class SavedResult:
    method: str
    path: str
    params: Any
    status: int
    body: bytes


class IdempotencyStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._saved: dict[tuple[str, str], SavedResult] = {}

    def lookup(
        self, api_key: str, key: str, method: str, path: str, params: Any
    ) -> SavedResult | None:
        """The saved result to replay, None if the key is new; raises on misuse."""
        with self._lock:
            saved = self._saved.get((api_key, key))
        if saved is None:
            return None
        if saved.method != method or saved.path != path:
            raise StripeAPIError(
                400,
                "Keys for idempotent requests can only be used for the same endpoint "
                f"they were first used for ('{saved.method} {saved.path}'). Try using a "
                f"key other than '{key}' if you meant to execute a different request.",
                type="idempotency_error",
            )
        if saved.params != params:
            raise StripeAPIError(
                400,
                "Keys for idempotent requests can only be used with the same parameters "
                f"they were first used with. Try using a key other than '{key}' if you "
                "meant to execute a different request.",
                type="idempotency_error",
            )
        return saved

    def save(self, api_key: str, key: str, result: SavedResult) -> None:
        with self._lock:
            self._saved.setdefault((api_key, key), result)

    def clear(self) -> None:
        with self._lock:
            self._saved.clear()
