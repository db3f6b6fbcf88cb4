"""Redis store: state shared by every replica, each operation one atomic command or script.

Reservations are `SET NX PX` (inside a script that also reports what holds the key), release
is compare-and-delete, the sliding window is a Lua script: no read-then-write between
replicas. The client reconnects by itself: a dead pooled connection is retried once on a
fresh one, so a Redis restart costs no request more than the outage itself. Errors surface as
`StoreError` carrying the exception's type only, never the URL (it may hold a password).

Sentinel and Cluster (gateway/store/topology.py) use the same scripts; every script touches one
key, and in a cluster every key of a route carries the route as its hash tag. A promoted replica
has an empty script cache: redis-py answers NOSCRIPT by loading the script and running it again.
A probe once a second (four while down) publishes whether the store answers, its state and
which master it writes to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.exceptions import RedisClusterException, RedisError

from gateway.config.redis import RedisTopology
from gateway.metrics import Metrics
from gateway.store import DELIVERED, IN_FLIGHT, NEW, Reservation, StoreError
from gateway.store.topology import build_topology, hash_tagged

log = logging.getLogger("webhook_gateway.store")
T = TypeVar("T")

_IN_FLIGHT = b"f:"
_DELIVERED = b"d"

# KEYS[1] mark; ARGV[1] reservation value, ARGV[2] lease ms -> {1} new, {2} delivered,
# {3, ms left} in flight.
_RESERVE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {1, 0} end
local v = redis.call('GET', KEYS[1])
if v == 'd' then return {2, 0} end
return {3, redis.call('PTTL', KEYS[1])}
"""

# KEYS[1] mark; ARGV[1] our reservation value: delete only while it is still ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# gateway/store/window.py in Lua. KEYS[1] hash {i, c, p}; ARGV now_ms, window_ms, limit, add.
_RATE = """
local now = tonumber(ARGV[1])
local w = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local index = math.floor(now / w)
local s = redis.call('HMGET', KEYS[1], 'i', 'c', 'p')
local si = tonumber(s[1])
local curr, prev = 0, 0
if si == index then
  curr = tonumber(s[2]) or 0
  prev = tonumber(s[3]) or 0
elseif si == index - 1 then
  prev = tonumber(s[2]) or 0
end
local e = now - index * w
if prev * (w - e) + (curr + 1) * w <= limit * w then
  if ARGV[4] == '1' then
    redis.call('HSET', KEYS[1], 'i', index, 'c', curr + 1, 'p', prev)
    redis.call('PEXPIRE', KEYS[1], (index + 2) * w - now)
  end
  return 0
end
if curr + 1 <= limit then
  return w - math.floor((limit - 1 - curr) * w / prev) - e
end
return (w - e) + w - math.floor((limit - 1) * w / curr)
"""


PROBE_INTERVAL = 1.0
# webhook_gateway_store_state: the probe's view, one of these at 1.
CONNECTED, FAILING_OVER, UNREACHABLE = "connected", "failing_over", "unreachable"
STATES = (CONNECTED, FAILING_OVER, UNREACHABLE)


class RedisStore:
    backend = "redis"

    def __init__(
        self,
        target: str | RedisTopology,
        prefix: str,
        timeout: float,
        metrics: Metrics | None = None,
        probe_interval: float = PROBE_INTERVAL,
    ) -> None:
        """`target`: a redis_url, or the Sentinel / Cluster nodes."""
        self.prefix = prefix
        self.timeout = timeout
        self.topology = build_topology(target, timeout)
        self.client = self.topology.client
        self._reserve = self.client.register_script(_RESERVE)
        self._release = self.client.register_script(_RELEASE)
        self._rate = self.client.register_script(_RATE)
        self.available: bool | None = None  # last known state, for logging transitions only
        self.metrics = metrics
        self.probe_interval = probe_interval
        self.masters: tuple[str, ...] = ()  # what the last successful probe found
        self._probe_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Say at start whether Redis answers; serve either way (it reconnects by itself)."""
        await self.probe()
        if self.metrics is not None:
            self._probe_task = asyncio.create_task(self._probe_loop())

    async def close(self) -> None:
        if self._probe_task is not None:
            self._probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe_task
        await self.topology.close()

    async def _failing_over(self) -> bool:
        try:
            async with asyncio.timeout(self.timeout * 3):
                return await self.topology.failing_over()
        except (RedisError, RedisClusterException, OSError, TimeoutError):
            return False

    def _state(self, state: str) -> None:
        assert self.metrics is not None
        for name in STATES:
            self.metrics.store_state.labels(name).set(1 if name == state else 0)

    async def _probe_loop(self) -> None:
        while True:
            # Four times as often while the store is down: the state (unreachable, failing
            # over) and the new master show up within a fraction of the failover itself.
            up = self.available is not False
            await asyncio.sleep(self.probe_interval if up else self.probe_interval / 4)
            try:
                await self.probe()
            except Exception as exc:
                # The probe only reports: a surprise in it must not end the reports. The type
                # only, as everywhere here (a message could carry a URL).
                log.error("store probe failed", extra={"backend": self.backend, "error": type(exc).__name__})

    async def probe(self) -> bool:
        """One probe: ping the master(s); publish up/down, the masters, and a new master as a
        failover. Cheap (one PING per master, and one question to a sentinel)."""
        try:
            masters = await self._call("probe", self.topology.masters)
        except StoreError:
            if self.metrics is not None:
                self.metrics.store_up.set(0)
                self._state(FAILING_OVER if await self._failing_over() else UNREACHABLE)
            return False
        if self.metrics is not None:
            self.metrics.store_up.set(1)
            self._state(CONNECTED)
            if self.masters and set(masters) - set(self.masters):
                self.metrics.store_failovers.inc()
            for gone in set(self.masters) - set(masters):
                self.metrics.store_master.labels(gone).set(0)
            for address in masters:
                self.metrics.store_master.labels(address).set(1)
        if self.masters and masters != self.masters:
            log.warning("store master changed", extra={"backend": self.backend, "masters": list(masters)})
        self.masters = masters
        return True

    async def _call(self, operation: str, fn: Callable[[], Awaitable[T]]) -> T:
        try:
            # A hard deadline over the socket timeouts: connect + retry must not hold a request.
            async with asyncio.timeout(self.timeout * 3):
                result = await fn()
        except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
            self._seen(False, type(exc).__name__)
            raise StoreError(operation, type(exc).__name__) from None
        if operation == "probe" or not self.topology.tagged:
            # In a cluster one master may fail while the others answer: only the probe, which
            # asks every master, says the store is whole again (no log line per request).
            self._seen(True, "")
        return result

    def _seen(self, available: bool, cause: str) -> None:
        if available == self.available:
            return
        self.available = available
        if available:
            log.info("store available", extra={"backend": self.backend})
        else:
            log.error("store unavailable", extra={"backend": self.backend, "error": cause})

    def _key(self, key: str) -> str:
        return self.prefix + (hash_tagged(key) if self.topology.tagged else key)

    async def reserve(self, key: str, lease: float) -> Reservation:
        token = os.urandom(8).hex()
        lease_ms = max(1, math.ceil(lease * 1000))
        value = _IN_FLIGHT + token.encode()
        result: Any = await self._call(
            "reserve", lambda: self._reserve(keys=[self._key(key)], args=[value, lease_ms])
        )
        state, left_ms = int(result[0]), int(result[1])
        if state == 1:
            return Reservation(NEW, token)
        if state == 2:
            return Reservation(DELIVERED)
        return Reservation(IN_FLIGHT, retry_after=max(0, left_ms) / 1000)

    async def deliver(self, key: str, ttl: float) -> None:
        ttl_ms = max(1, math.ceil(ttl * 1000))
        await self._call("deliver", lambda: self.client.set(self._key(key), _DELIVERED, px=ttl_ms))

    async def release(self, key: str, token: str) -> None:
        value = _IN_FLIGHT + token.encode()
        await self._call("release", lambda: self._release(keys=[self._key(key)], args=[value]))

    async def rate(self, key: str, limit: int, window: float, now: float, add: bool) -> float:
        window_ms = max(1, round(window * 1000))
        now_ms = math.floor(now * 1000)
        args = [now_ms, window_ms, limit, 1 if add else 0]
        wait_ms: Any = await self._call("rate", lambda: self._rate(keys=[self._key(key)], args=args))
        return int(wait_ms) / 1000
