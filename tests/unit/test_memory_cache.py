from __future__ import annotations

from llmrouter.gateway.cache import MemoryCache


async def test_the_memory_cache_is_bounded_in_bytes() -> None:
    cache = MemoryCache(max_bytes=100_000)
    value = b"x" * 9_000
    for i in range(100):
        await cache.put(f"k{i}", value, ttl_s=60)
        assert cache.size_bytes <= 100_000
    # The most recent entries stay, least recently used first out.
    assert await cache.get("k99") == value
    assert await cache.get("k0") is None
    # Few large entries or many small ones: the same bound in bytes.
    small = MemoryCache(max_bytes=100_000)
    for i in range(10_000):
        await small.put(f"k{i}", b"y", ttl_s=60)
    assert small.size_bytes <= 100_000
    assert await small.get("k9999") == b"y"


async def test_a_value_larger_than_the_whole_cache_is_not_kept() -> None:
    cache = MemoryCache(max_bytes=1_000)
    await cache.put("small", b"s", ttl_s=60)
    await cache.put("huge", b"h" * 2_000, ttl_s=60)
    assert await cache.get("huge") is None
    assert await cache.get("small") == b"s"


async def test_replaced_and_expired_entries_give_their_bytes_back() -> None:
    cache = MemoryCache(max_bytes=10_000)
    for _ in range(50):
        await cache.put("same", b"z" * 1_000, ttl_s=60)
    assert cache.size_bytes == len("same") + 1_000 + MemoryCache.ENTRY_OVERHEAD
    await cache.put("gone", b"g" * 1_000, ttl_s=0)
    assert await cache.get("gone") is None
    assert cache.size_bytes == len("same") + 1_000 + MemoryCache.ENTRY_OVERHEAD
