"""The redis.asyncio client for each way of running Redis: one server (`redis_url`), a master
followed through Sentinel, or a Redis Cluster.

Every client gets the same bounded socket and connect timeouts and one immediate retry, so a
request waits at most a few timeouts whatever Redis does (RedisStore adds a hard deadline on
top). `masters()` is the probe: it answers the master address(es) written to now, or raises.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError

from gateway.config.redis import RedisTopology
from gateway.reader import Secret


def _retry() -> Retry:
    # One immediate retry on a fresh connection: after a restart or a failover every pooled
    # connection is dead, and the retry is what reconnects (to the new master).
    return Retry(NoBackoff(), 1)


class Topology:
    """A client and a way to ask which master(s) it writes to."""

    kind = "single"
    tagged = False  # keys carry a per-route hash tag (cluster)

    def __init__(self, client: Any) -> None:
        self.client: Any = client

    async def masters(self) -> tuple[str, ...]:
        await self.client.ping()
        kw = self.client.connection_pool.connection_kwargs
        where = kw.get("path") or f"{kw.get('host', 'localhost')}:{kw.get('port', 6379)}"
        return (str(where),)

    async def failing_over(self) -> bool:
        """Asked when the master does not answer: does the topology itself know it is down
        (and will promote a replica), or is it simply unreachable from here?"""
        return False

    async def close(self) -> None:
        await self.client.aclose()


class SentinelTopology(Topology):
    kind = "sentinel"

    def __init__(self, config: RedisTopology, timeout: float) -> None:
        def secret(s: Secret | None) -> str | None:
            return s.value.decode("utf-8") if s is not None else None

        self.name = config.master
        self.sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(config.addresses),
            min_other_sentinels=0,
            sentinel_kwargs={
                "password": secret(config.sentinel_password),
                "socket_timeout": timeout,
                "socket_connect_timeout": timeout,
            },
        )
        client = self.sentinel.master_for(
            config.master,
            username=config.username,
            password=secret(config.password),
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=_retry(),
        )
        super().__init__(client)

    async def masters(self) -> tuple[str, ...]:
        # The sentinels' answer, then the master itself: "up" means writes can go through.
        host, port = await self.sentinel.discover_master(self.name)
        await self.client.ping()
        return (f"{host}:{port}",)

    async def failing_over(self) -> bool:
        for sentinel in self.sentinel.sentinels:
            try:
                state = await sentinel.sentinel_master(self.name)
            except RedisError:
                continue
            # Subjectively down for this sentinel, objectively for the quorum, or promoting.
            if not isinstance(state, dict):
                continue
            return bool(state.get("is_sdown") or state.get("is_odown") or state.get("is_master_down"))
        return False

    async def close(self) -> None:
        await self.client.aclose()
        await self.sentinel.aclose()


class ClusterTopology(Topology):
    kind = "cluster"
    tagged = True

    def __init__(self, config: RedisTopology, timeout: float) -> None:
        client = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in config.addresses],
            username=config.username,
            password=config.password.value.decode("utf-8") if config.password is not None else None,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # Slots of a failed master stay unserved until its replica takes over; the other
            # masters' routes must keep working meanwhile.
            require_full_coverage=False,
            # A failed command refreshes the slot table and is tried again, once.
            retry=_retry(),
        )
        super().__init__(client)

    async def masters(self) -> tuple[str, ...]:
        await self.client.ping(target_nodes=RedisCluster.PRIMARIES)
        return tuple(sorted(node.name for node in self.client.get_primaries()))

    async def failing_over(self) -> bool:
        # Any node that answers knows which masters the cluster holds as failing (fail?) or
        # failed (fail): their replicas are about to take over.
        for node in self.client.get_nodes():
            try:
                table = await self.client.execute_command("CLUSTER NODES", target_nodes=node)
            except (RedisError, RedisClusterException):
                continue
            for entry in table.values() if isinstance(table, dict) else ():
                flags = str(entry.get("flags", "")).split(",") if isinstance(entry, dict) else []
                if "master" in flags and ("fail" in flags or "fail?" in flags):
                    return True
            return False
        return False


def build_topology(target: str | RedisTopology, timeout: float) -> Topology:
    if isinstance(target, str):
        return Topology(
            aioredis.Redis.from_url(
                target, socket_timeout=timeout, socket_connect_timeout=timeout, retry=_retry()
            )
        )
    if target.kind == "sentinel":
        return SentinelTopology(target, timeout)
    return ClusterTopology(target, timeout)


def hash_tagged(key: str) -> str:
    """`replay:ROUTE:rest` -> `replay:{ROUTE}:rest`: Redis Cluster hashes only the part in
    braces, so every key of one route lives in one slot (route names hold no braces or colons).
    A key of another shape is left whole: it is one key, in one slot, either way."""
    kind, sep, rest = key.partition(":")
    route, sep2, tail = rest.partition(":")
    if not sep or not sep2 or not route:
        return key
    return f"{kind}:{{{route}}}:{tail}"
