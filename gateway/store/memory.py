"""In-process store: two bounded tables (replay marks, rate windows), oldest evicted first.

One process only: with several replicas (or worker processes) each would keep its own
marks, so a duplicate reaching another replica would be forwarded. Use Redis there.
Operations never await, so each is atomic on the event loop.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from gateway.metrics import Metrics
from gateway.store import DELIVERED, IN_FLIGHT, NEW, Reservation
from gateway.store.window import WindowState, decide

V = TypeVar("V")
_DELIVERED = ""  # the token of a delivered mark; reservations get a random one


def window_kind(key: str) -> str:
    """`rate:ROUTE:KIND[:WHO]` (checks/ratelimit.py; a route name holds no `:`) -> KIND: `req`
    (every request of a client), `fail` (a client's failures) or a route-wide window."""
    parts = key.split(":", 3)
    if len(parts) < 3 or parts[2] == "req":
        return "req"
    return "fail" if parts[2] == "fail" else "route"


class BoundedTable(Generic[V]):
    """Key -> (expires at, value), at most `max_entries`; expired entries read as absent.

    Writes move a key to the end, so the front holds the least recently written entries:
    those are dropped first when full (an eviction, counted) or when expired (not counted).
    """

    def __init__(self, name: str, max_entries: int, metrics: Metrics) -> None:
        self._items: OrderedDict[str, tuple[float, V]] = OrderedDict()
        self._max = max_entries
        self._evictions = metrics.store_evictions.labels(name)
        metrics.store_entries.labels(name).set_function(lambda: len(self._items))

    def get(self, key: str, now: float) -> tuple[float, V] | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[0] <= now:
            del self._items[key]
            return None
        return item

    def put(self, key: str, expires: float, value: V, now: float) -> None:
        self._items[key] = (expires, value)
        self._items.move_to_end(key)
        # A little sweeping per write keeps expired entries from piling up at the front.
        for _ in range(2):
            first = next(iter(self._items.items()), None)
            if first is None or first[1][0] > now:
                break
            del self._items[first[0]]
        while len(self._items) > self._max:
            _, (expires_at, _) = self._items.popitem(last=False)
            if expires_at > now:
                self._evictions.inc()

    def pop(self, key: str) -> None:
        self._items.pop(key, None)

    def __len__(self) -> int:
        return len(self._items)


class MemoryStore:
    backend = "memory"

    def __init__(self, max_entries: int, metrics: Metrics, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.marks: BoundedTable[str] = BoundedTable("replay", max_entries, metrics)
        self.windows: BoundedTable[WindowState] = BoundedTable("rate_limit", max_entries, metrics)
        # Windows that count failures live apart, so that churn of request windows (one per
        # address that ever sent anything) never evicts a window that holds failures; and a
        # route's own windows (a few per route) apart from both, so no churn ever evicts them.
        self._tables: dict[str, BoundedTable[WindowState]] = {
            "req": self.windows,
            "fail": BoundedTable("rate_limit_failures", max_entries, metrics),
            "route": BoundedTable("rate_limit_routes", max_entries, metrics),
        }

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def reserve(self, key: str, lease: float) -> Reservation:
        now = self.clock()
        item = self.marks.get(key, now)
        if item is None:
            token = os.urandom(8).hex()
            self.marks.put(key, now + lease, token, now)
            return Reservation(NEW, token)
        expires, token = item
        if token == _DELIVERED:
            return Reservation(DELIVERED)
        return Reservation(IN_FLIGHT, retry_after=expires - now)

    async def deliver(self, key: str, ttl: float) -> None:
        now = self.clock()
        self.marks.put(key, now + ttl, _DELIVERED, now)

    async def release(self, key: str, token: str) -> None:
        item = self.marks.get(key, self.clock())
        if item is not None and item[1] == token:
            self.marks.pop(key)

    async def rate(self, key: str, limit: int, window: float, now: float, add: bool) -> float:
        window_ms = max(1, round(window * 1000))
        now_ms = math.floor(now * 1000)
        table = self._tables[window_kind(key)]
        item = table.get(key, now)
        state, wait_ms = decide(item[1] if item else None, now_ms, window_ms, limit, add)
        if state is not None:
            # Kept while it can still weigh in: until the end of the window after this one.
            table.put(key, (state.index + 2) * window_ms / 1000, state, now)
        return wait_ms / 1000
