"""Shared state for replay marks and rate windows: one protocol, a memory and a Redis backend.

The store outlives config reloads (it lives on the `Service`); checks hand it keys that are
already scoped per route. Every operation is atomic on its own, in one process (memory) or
across replicas (Redis), so no caller ever reads, decides and then writes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from gateway.config import StoreConfig
from gateway.metrics import Metrics

NEW = "new"  # the caller holds a reservation now: forward, then deliver() or release()
DELIVERED = "delivered"  # an upstream already took this update (2xx)
IN_FLIGHT = "in_flight"  # another request holds the reservation


class StoreError(Exception):
    """The store could not answer (unreachable, timed out). Never carries a URL or password."""

    def __init__(self, operation: str, cause: str) -> None:
        super().__init__(f"{operation}: {cause}")
        self.operation = operation
        self.cause = cause


@dataclass(frozen=True, slots=True)
class Reservation:
    state: str  # NEW | DELIVERED | IN_FLIGHT
    token: str = ""  # identifies our reservation (NEW), so release() frees only our own
    retry_after: float = 0.0  # IN_FLIGHT: seconds left on the other request's lease


class Store(Protocol):
    backend: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def reserve(self, key: str, lease: float) -> Reservation:
        """Atomically: reserve `key` for `lease` seconds unless it is reserved or delivered."""
        ...

    async def deliver(self, key: str, ttl: float) -> None:
        """Mark `key` delivered for `ttl` seconds (replaces the reservation)."""
        ...

    async def release(self, key: str, token: str) -> None:
        """Drop our reservation (only if it is still ours), so the sender's retry goes through."""
        ...

    async def rate(self, key: str, limit: int, window: float, now: float, add: bool) -> float:
        """Sliding-window rate: 0 when one more event fits (and, with `add`, count it), else
        the seconds until one would fit (nothing counted)."""
        ...


def build_store(config: StoreConfig, metrics: Metrics, clock: Callable[[], float]) -> Store:
    if config.backend != "memory":
        from gateway.config.redis import RedisTopology
        from gateway.store.redis import RedisStore

        target: str | RedisTopology
        if config.topology is not None:
            target = config.topology
        else:
            assert config.redis_url is not None  # config validation requires one of them
            target = config.redis_url.value.decode("utf-8")
        store = RedisStore(
            target,
            prefix=config.key_prefix,
            timeout=config.timeout,
            metrics=metrics,
        )
        store.backend = config.backend
        return store
    from gateway.store.memory import MemoryStore

    return MemoryStore(config.max_entries, metrics, clock)
