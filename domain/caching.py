"""The two in-process caches the service keeps, so that none is hand-rolled.

``LruCache`` bounds what the ingest writer keeps in memory (usage periods,
claimed keys, period ids). It has no lock of its own: its callers already
hold one (the recorder's ingest lock), and a second lock per lookup would
cost the hot path for nothing.

``TtlCache`` holds copies read by many threads (tenants, customers, API key
principals) for a few seconds, so that a change made by another process —
a revoked key, a remapped customer — is seen within that time. It locks
itself. A change made in this process (``put``, ``pop``, ``pop_where``)
shows at once: a load that was in flight when it happened still answers its
caller, but is not stored over the change.
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


class _Load(Generic[K, V]):
    """One ``get_or_load`` in flight, and the changes to its key made while it reads."""

    __slots__ = ("doomed", "stale")

    def __init__(self) -> None:
        self.stale = False  # its key was put or popped: what it read may be older
        self.doomed: list[Callable[[K, V], bool]] = []  # ``pop_where`` calls meanwhile

    def outdated(self, key: K, value: V) -> bool:
        return self.stale or any(doomed(key, value) for doomed in self.doomed)


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
        # Loads in flight, by key: only misses register here, never a hit.
        self._loads: dict[K, list[_Load[K, V]]] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def get(self, key: K) -> V | None:
        """The fresh value, or None when absent or expired (``get_or_load`` tells None apart)."""
        found = self._fresh(key)
        return None if isinstance(found, _Missing) else found

    def get_or_load(self, key: K, load: Callable[[K], V]) -> V:
        """The fresh value; else ``load(key)``. ``load`` runs outside the lock.

        What it loads is stored unless the key was put or popped (or a
        ``pop_where`` would have dropped it) while it ran: then it may be older
        than that change, which must not be undone; it is only returned.
        """
        found = self._fresh(key)
        if not isinstance(found, _Missing):
            return found
        # Aged from before the load: what it read may change while it reads.
        read_at = self._clock()
        pending: _Load[K, V] = _Load()
        with self._lock:
            self._loads.setdefault(key, []).append(pending)
        try:
            value = load(key)
        except BaseException:
            with self._lock:
                self._finish(key, pending)
            raise
        with self._lock:
            self._finish(key, pending)
            if not pending.outdated(key, value):
                self._store(key, value, read_at)
        return value

    def put(self, key: K, value: V, read_at: float | None = None) -> None:
        """Store ``value``, read at ``read_at`` (by default now); loads in flight keep off it."""
        stored_at = self._clock() if read_at is None else read_at
        with self._lock:
            self._outdate(key)
            self._store(key, value, stored_at)

    def pop(self, key: K) -> None:
        with self._lock:
            self._outdate(key)
            self._items.pop(key, None)

    def pop_where(self, doomed: Callable[[K, V], bool]) -> int:
        """Drop every entry ``doomed(key, value)`` picks; how many were dropped.

        A load in flight is not stored if ``doomed`` picks what it loaded.
        """
        with self._lock:
            keys = [k for k, (_, v) in self._items.items() if doomed(k, v)]
            for key in keys:
                del self._items[key]
            for loads in self._loads.values():
                for pending in loads:
                    pending.doomed.append(doomed)
        return len(keys)

    def _store(self, key: K, value: V, stored_at: float) -> None:
        """Under the lock."""
        self._items[key] = (stored_at, value)
        self._items.move_to_end(key)
        if len(self._items) > self.maxsize:
            self._items.popitem(last=False)

    def _outdate(self, key: K) -> None:
        """Under the lock: the key's loads in flight read before this change."""
        for pending in self._loads.get(key, ()):
            pending.stale = True

    def _finish(self, key: K, pending: _Load[K, V]) -> None:
        """Under the lock."""
        loads = self._loads[key]
        loads.remove(pending)
        if not loads:
            del self._loads[key]

    def _fresh(self, key: K) -> V | _Missing:
        with self._lock:
            entry = self._items.get(key)
        if entry is None or self._clock() - entry[0] >= self.seconds:
            return _MISSING
        return entry[1]
