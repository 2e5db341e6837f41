"""The two in-process caches the service keeps, so that none is hand-rolled.

``LruCache`` bounds what the ingest writer keeps in memory (usage periods,
claimed keys, period ids). It has no lock of its own: its callers already
hold one (the recorder's ingest lock), and a second lock per lookup would
cost the hot path for nothing.

``TtlCache`` holds copies read by many threads (tenants, customers, API key
principals) for a few seconds, so that a change made by another process —
a revoked key, a remapped customer — is seen within that time. It locks
itself.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LruCache(Generic[K, V]):
    """At most ``maxsize`` entries; the least recently used goes first. Not thread-safe."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        if len(self._items) > self.maxsize:
            self._items.popitem(last=False)

    def pop(self, key: K) -> None:
        self._items.pop(key, None)


class _Missing:
    """Marks an absent entry, since a cached value may itself be None."""


_MISSING = _Missing()


class TtlCache(Generic[K, V]):
    """Entries expire ``seconds`` after they were stored; thread-safe.

    At most ``maxsize`` entries: past that the oldest stored goes first, so a
    flood of distinct keys (a scan with made-up API keys) cannot grow memory.
    """

    def __init__(
        self,
        seconds: float,
        maxsize: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.seconds = seconds
        self.maxsize = maxsize
        self._clock = clock
        self._lock = threading.Lock()
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def get(self, key: K) -> V | None:
        """The fresh value, or None when absent or expired (``get_or_load`` tells None apart)."""
        found = self._fresh(key)
        return None if isinstance(found, _Missing) else found

    def get_or_load(self, key: K, load: Callable[[K], V]) -> V:
        """The fresh value; else ``load(key)``, stored. ``load`` runs outside the lock."""
        found = self._fresh(key)
        if not isinstance(found, _Missing):
            return found
        # Aged from before the load: what it read may change while it reads.
        read_at = self._clock()
        value = load(key)
        self.put(key, value, read_at)
        return value

    def put(self, key: K, value: V, read_at: float | None = None) -> None:
        """Store ``value``, read at ``read_at`` (by default now)."""
        stored_at = self._clock() if read_at is None else read_at
        with self._lock:
            self._items[key] = (stored_at, value)
            self._items.move_to_end(key)
            if len(self._items) > self.maxsize:
                self._items.popitem(last=False)

    def pop(self, key: K) -> None:
        with self._lock:
            self._items.pop(key, None)

    def pop_where(self, doomed: Callable[[K, V], bool]) -> int:
        """Drop every entry ``doomed(key, value)`` picks; how many were dropped."""
        with self._lock:
            keys = [k for k, (_, v) in self._items.items() if doomed(k, v)]
            for key in keys:
                del self._items[key]
        return len(keys)

    def _fresh(self, key: K) -> V | _Missing:
        with self._lock:
            entry = self._items.get(key)
        if entry is None or self._clock() - entry[0] >= self.seconds:
            return _MISSING
        return entry[1]
