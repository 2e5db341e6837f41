"""The emulator's wall clock, which tests can move.

Objects not attached to a test clock live in this time. It follows real time
with an adjustable offset, or stands still when frozen, so a test can jump a
day ahead without sleeping.
"""

from __future__ import annotations

import threading
import time


class EmulatorClock:
    def __init__(self, *, offset: float = 0.0) -> None:
        self._lock = threading.Lock()
        self._offset = offset
        self._frozen: int | None = None

    def now(self) -> int:
        with self._lock:
            if self._frozen is not None:
                return self._frozen
            return int(time.time() + self._offset)

    def set(self, timestamp: int, *, frozen: bool = False) -> None:
        """Jump to ``timestamp``; keep ticking from there unless ``frozen``."""
        with self._lock:
            self._frozen = timestamp if frozen else None
            self._offset = timestamp - time.time()

    def advance(self, seconds: int) -> None:
        with self._lock:
            if self._frozen is not None:
                self._frozen += seconds
            self._offset += seconds

    def unfreeze(self) -> None:
        with self._lock:
            if self._frozen is not None:
                self._offset = self._frozen - time.time()
            self._frozen = None

    def reset(self) -> None:
        with self._lock:
            self._frozen, self._offset = None, 0.0

    def describe(self) -> dict[str, object]:
        with self._lock:
            frozen = self._frozen
        return {"now": self.now(), "frozen": frozen is not None}
