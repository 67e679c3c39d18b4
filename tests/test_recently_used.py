"""The stores' one cache policy (app.recently_used): the least recently used dropped first."""

from __future__ import annotations

from app.recently_used import RecentlyUsed


def test_keeping_past_the_limit_drops_the_least_recently_used() -> None:
    cache: RecentlyUsed[int] = RecentlyUsed(2)
    assert cache.keep("a", 1) is None
    assert cache.keep("b", 2) is None
    assert cache.use("a") == 1  # now "b" is the least recently used
    assert cache.keep("c", 3) == 2
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)


def test_a_get_leaves_the_order_as_it_was() -> None:
    cache: RecentlyUsed[int] = RecentlyUsed(2)
    cache.keep("a", 1)
    cache.keep("b", 2)
    assert cache.get("a") == 1
    assert cache.oldest() == "a"


def test_keeping_a_key_again_makes_it_the_most_recent_without_dropping() -> None:
    cache: RecentlyUsed[int] = RecentlyUsed(2)
    cache.keep("a", 1)
    cache.keep("b", 2)
    assert cache.keep("a", 10) is None
    assert cache.oldest() == "b"
    assert len(cache) == 2 and cache.full


def test_a_popped_key_is_gone_and_frees_its_place() -> None:
    cache: RecentlyUsed[int] = RecentlyUsed(2)
    cache.keep("a", 1)
    cache.keep("b", 2)
    assert cache.pop("a") == 1
    assert cache.pop("a") is None
    assert not cache.full
    cache.clear()
    assert len(cache) == 0 and cache.oldest() is None
