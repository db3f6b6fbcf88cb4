"""Both store backends against the same expectations: the memory one with an injected clock,
the Redis one against a real redis-server (its Lua must match the Python window exactly)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from gateway.metrics import Metrics
from gateway.store import DELIVERED, IN_FLIGHT, NEW, Store
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from tests.support.metrics import metric_value
from tests.support.redis import RedisServer, redis_server  # noqa: F401 - a fixture
from tests.support.state import FakeClock


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield MemoryStore(1000, Metrics(), FakeClock())
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    s = RedisStore(server.url, prefix="test:", timeout=2.0)
    try:
        yield s
    finally:
        await s.close()


async def test_reserve_then_deliver_then_duplicate(store: Store) -> None:
    first = await store.reserve("k", lease=30)
    assert first.state == NEW and first.token
    again = await store.reserve("k", lease=30)
    assert again.state == IN_FLIGHT
    assert 0 < again.retry_after <= 30
    await store.deliver("k", ttl=3600)
    assert (await store.reserve("k", lease=30)).state == DELIVERED
    assert (await store.reserve("other", lease=30)).state == NEW


async def test_release_frees_only_our_own_reservation(store: Store) -> None:
    mine = await store.reserve("k", lease=30)
    await store.release("k", "not-the-token")
    assert (await store.reserve("k", lease=30)).state == IN_FLIGHT
    await store.release("k", mine.token)
    assert (await store.reserve("k", lease=30)).state == NEW
    # A delivered mark is never released by a late release of an old reservation.
    await store.deliver("k", ttl=3600)
    await store.release("k", mine.token)
    assert (await store.reserve("k", lease=30)).state == DELIVERED


# (now_ms, add) -> expected wait in ms; limit 3 per 10 s. Both backends must agree exactly.
RATE_STEPS = [
    (1_000_000, True, 0),  # a window starts at 1_000_000
    (1_000_100, True, 0),
    (1_000_200, True, 0),
    # Full: in the next window 3 * (10000 - e) / 10000 + 1 <= 3 from e = 3334, i.e. at
    # 1_013_334: 9700 ms left in this window + 3334.
    (1_000_300, True, 13_034),
    (1_000_300, False, 13_034),
    (1_013_333, False, 1),
    (1_013_334, True, 0),
    # prev 3 weighs 3 * (10000 - 3334) / 10000 = 2.0, plus 1 counted, plus 1 > 3: until
    # 3 * (10000 - e) <= 10000, e = 6667.
    (1_013_334, True, 3_333),
]


async def test_rate_windows_are_the_same_on_both_backends(store: Store) -> None:
    for now_ms, add, expected_ms in RATE_STEPS:
        wait = await store.rate("ip", 3, 10.0, now_ms / 1000, add)
        assert round(wait * 1000) == expected_ms, (now_ms, add)


async def test_rate_keys_are_independent(store: Store) -> None:
    assert await store.rate("a", 1, 60, 1000.0, True) == 0
    assert await store.rate("a", 1, 60, 1000.0, True) > 0
    assert await store.rate("b", 1, 60, 1000.0, True) == 0


async def test_many_concurrent_reservations_of_one_key_give_exactly_one_new(store: Store) -> None:
    results = await asyncio.gather(*(store.reserve("same", lease=30) for _ in range(64)))
    assert [r.state for r in results].count(NEW) == 1
    assert all(r.state in (NEW, IN_FLIGHT) for r in results)


async def test_memory_marks_expire_on_the_injected_clock() -> None:
    clock = FakeClock()
    store = MemoryStore(100, Metrics(), clock)
    mine = await store.reserve("k", lease=30)
    clock.advance(30)  # a lease that ran out (the gateway died mid-delivery) frees the key
    assert (await store.reserve("k", lease=30)).state == NEW
    await store.deliver("k", ttl=86400)
    clock.advance(86399)
    assert (await store.reserve("k", lease=30)).state == DELIVERED
    clock.advance(1)
    assert (await store.reserve("k", lease=30)).state == NEW
    del mine


async def test_memory_tables_are_bounded_and_count_evictions() -> None:
    metrics = Metrics()
    clock = FakeClock()
    store = MemoryStore(3, metrics, clock)
    for i in range(5):
        await store.deliver(f"k{i}", ttl=3600)
    text = _metrics(metrics)
    assert metric_value(text, "webhook_gateway_store_entries", {"table": "replay"}) == 3
    assert metric_value(text, "webhook_gateway_store_evictions_total", {"table": "replay"}) == 2
    # The oldest went first; the newest are still marked.
    assert (await store.reserve("k0", lease=30)).state == NEW
    assert (await store.reserve("k4", lease=30)).state == DELIVERED
    # Entries that merely expired are dropped without counting as evictions.
    for i in range(3):
        await store.rate(f"ip{i}", 5, 1.0, clock(), True)
    clock.advance(10)
    for i in range(3, 6):
        await store.rate(f"ip{i}", 5, 1.0, clock(), True)
    text = _metrics(metrics)
    assert metric_value(text, "webhook_gateway_store_evictions_total", {"table": "rate_limit"}) == 0
    assert metric_value(text, "webhook_gateway_store_entries", {"table": "rate_limit"}) == 3


async def test_redis_marks_carry_their_ttl_and_the_prefix(redis_server: RedisServer) -> None:  # noqa: F811
    store = RedisStore(redis_server.url, prefix="gw1:", timeout=2.0)
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        await store.reserve("replay:bot:id:5", lease=35)
        assert 30_000 < await raw.pttl("gw1:replay:bot:id:5") <= 35_000
        await store.deliver("replay:bot:id:5", ttl=86400)
        assert await raw.get("gw1:replay:bot:id:5") == b"d"
        assert 86_000_000 < await raw.pttl("gw1:replay:bot:id:5") <= 86_400_000
        await store.rate("rate:bot:req:1.2.3.4", 5, 60.0, 1_700_000_000.0, True)
        # A window key lives until the end of the window after the current one, not forever.
        assert 0 < await raw.pttl("gw1:rate:bot:req:1.2.3.4") <= 120_000
    finally:
        await store.close()
        await raw.aclose()


def _metrics(metrics: Metrics) -> str:
    from prometheus_client import generate_latest

    return generate_latest(metrics.registry).decode()


async def test_request_window_churn_never_evicts_a_window_that_holds_failures() -> None:
    """More addresses than the table holds send requests: the one address that failed stays
    refused, because failure windows are kept apart from request windows."""
    clock = FakeClock()
    store = MemoryStore(10, Metrics(), clock)
    fail = "rate:tg:fail:203.0.113.7"
    for _ in range(5):
        await store.rate(fail, 5, 60.0, clock(), True)
    assert await store.rate(fail, 5, 60.0, clock(), False) > 0
    for i in range(50):
        await store.rate(f"rate:tg:req:100.64.0.{i}", 100, 1.0, clock(), True)
    assert await store.rate(fail, 5, 60.0, clock(), False) > 0
    # A route-wide window outlives churn of per-address failure windows too.
    route = "rate:tg:route-fail"
    for _ in range(3):
        await store.rate(route, 3, 60.0, clock(), True)
    for i in range(50):
        await store.rate(f"rate:tg:fail:100.64.1.{i}", 5, 60.0, clock(), True)
    assert await store.rate(route, 3, 60.0, clock(), True) > 0
