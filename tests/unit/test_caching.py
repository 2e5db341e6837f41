"""LruCache and TtlCache: what they keep, for how long, and how much."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from domain.caching import LruCache, TtlCache


class Ticks:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lru_drops_the_least_recently_used_entry_past_its_size() -> None:
    cache: LruCache[str, int] = LruCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now the most recently used
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)
    assert len(cache) == 2
    cache.pop("a")
    cache.pop("missing")
    assert (cache.get("a"), len(cache)) == (None, 1)


def test_ttl_entries_expire_after_their_seconds() -> None:
    ticks = Ticks()
    cache: TtlCache[str, str] = TtlCache(5.0, 10, clock=ticks)
    cache.put("key", "principal")
    ticks.now += 4.999
    assert cache.get("key") == "principal"
    ticks.now += 0.001
    assert cache.get("key") is None


def test_ttl_get_or_load_loads_once_per_expiry_and_keeps_none_values() -> None:
    ticks = Ticks()
    loads: list[str] = []

    def load(key: str) -> str | None:
        loads.append(key)
        return None  # e.g. a customer never mapped

    cache: TtlCache[str, str | None] = TtlCache(5.0, 10, clock=ticks)
    assert cache.get_or_load("cus_1", load) is None
    assert cache.get_or_load("cus_1", load) is None
    assert loads == ["cus_1"]
    ticks.now += 5
    cache.get_or_load("cus_1", load)
    assert loads == ["cus_1", "cus_1"]


def test_ttl_ages_a_loaded_value_from_before_the_load() -> None:
    """A key revoked while it was being read must still stop working 5 s after the read began."""
    ticks = Ticks()

    def slow_load(key: str) -> str:
        ticks.now += 1.0
        return "principal"

    cache: TtlCache[str, str] = TtlCache(5.0, 10, clock=ticks)
    cache.get_or_load("key", slow_load)
    ticks.now += 4.0  # 5 s after the read began, 4 s after it ended
    assert cache.get("key") is None


def test_ttl_drops_the_oldest_entry_past_its_size() -> None:
    ticks = Ticks()
    cache: TtlCache[int, int] = TtlCache(60.0, 3, clock=ticks)
    for key in range(5):
        cache.put(key, key)
    assert len(cache) == 3
    assert [cache.get(key) for key in range(5)] == [None, None, 2, 3, 4]


def test_ttl_is_safe_to_share_between_threads() -> None:
    cache: TtlCache[int, int] = TtlCache(60.0, 1_000)

    def work(offset: int) -> None:
        for key in range(2_000):
            cache.put(key, key + offset)
            cache.get_or_load(key, lambda k: k)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) == 1_000
    assert all(cache.get(key) is not None for key in range(1_000, 2_000))


def test_ttl_pop_forgets_an_entry_before_it_expires() -> None:
    cache: TtlCache[str, bool] = TtlCache(60.0, 10, clock=Ticks())
    cache.put("period", True)
    cache.pop("period")
    cache.pop("never stored")
    assert (cache.get("period"), len(cache)) == (None, 0)


def test_pop_where_drops_only_the_picked_entries() -> None:
    cache: TtlCache[str, int] = TtlCache(60, 10)
    for key, value in (("a", 1), ("b", 2), ("c", 3)):
        cache.put(key, value)
    assert cache.pop_where(lambda key, value: value % 2 == 1) == 2
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (None, 2, None)


def test_ttl_a_load_older_than_a_put_or_pop_of_its_key_is_returned_but_not_stored() -> None:
    """A change made while a load reads (a cap set, a webhook) is not undone by that load."""
    cache: TtlCache[str, str] = TtlCache(60.0, 10, clock=Ticks())

    def read_then_put(key: str) -> str:
        cache.put(key, "changed")  # another thread changes the key mid-read
        return "read before"

    def read_then_pop(key: str) -> str:
        cache.pop(key)
        return "read before"

    assert cache.get_or_load("tenant", read_then_put) == "read before"
    assert cache.get("tenant") == "changed"
    assert cache.get_or_load("customer", read_then_pop) == "read before"
    assert cache.get_or_load("customer", lambda key: "read after") == "read after"
    assert cache.get("customer") == "read after"
    # A change to another key leaves the load alone.

    def read_then_put_another(key: str) -> str:
        cache.put("other", "changed")
        return "read"

    cache.get_or_load("one", read_then_put_another)
    assert cache.get("one") == "read"


def test_ttl_pop_where_during_a_load_drops_the_load_only_when_it_picks_its_value() -> None:
    cache: TtlCache[str, tuple[str, ...]] = TtlCache(60.0, 10, clock=Ticks())

    def read_then_forget(forgotten: str) -> Callable[[str], tuple[str, ...]]:
        def load(key: str) -> tuple[str, ...]:
            cache.pop_where(lambda _, prices: forgotten in prices)
            return ("price_1", "price_2")

        return load

    assert cache.get_or_load("cus_1", read_then_forget("price_2")) == ("price_1", "price_2")
    assert cache.get("cus_1") is None
    cache.get_or_load("cus_2", read_then_forget("price_9"))
    assert cache.get("cus_2") == ("price_1", "price_2")


def test_ttl_a_failed_load_leaves_nothing_behind() -> None:
    cache: TtlCache[str, str] = TtlCache(60.0, 10, clock=Ticks())

    def fail(key: str) -> str:
        raise LookupError(key)

    with pytest.raises(LookupError):
        cache.get_or_load("key", fail)
    cache.put("key", "value")  # no load in flight any more: nothing to mark
    assert cache.get_or_load("key", fail) == "value"
    assert cache._loads == {}  # no registration leaks
