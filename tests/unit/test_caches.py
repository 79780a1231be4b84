"""The engine's bounded tables (orchestrator.caches): what they keep and what they drop."""

from __future__ import annotations

import pytest

from batchyard.orchestrator.caches import BoundedCache


def test_adding_past_the_bound_drops_the_least_recently_used() -> None:
    cache: BoundedCache[str, int] = BoundedCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # now "b" is the least recently used
    cache.put("c", 3)
    assert len(cache) == 2
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)


def test_putting_a_known_key_again_replaces_it_without_growing() -> None:
    cache: BoundedCache[str, int] = BoundedCache(2)
    for value in range(5):
        cache.put("a", value)
    assert len(cache) == 1 and cache.get("a") == 4
    cache.pop("a")
    cache.pop("a")  # popping an absent key is harmless: jobs are forgotten more than once
    assert len(cache) == 0


def test_a_cache_without_room_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        BoundedCache[str, int](0)
