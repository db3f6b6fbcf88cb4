"""`max_concurrency` shared between routes, so that slow requests on one route (bodies that
trickle in, a bot that answers late) cannot take the whole budget from the others.

With one route, it may use the whole budget. With N routes, each has `max_concurrency / 2N`
slots (rounded down) that only it can use; the rest is shared, and one route may hold at most
half of the shared part. A route that is flooded is therefore capped at its reserve plus half
the shared part, and every other route keeps at least its reserve.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Slot:
    """One admitted request: released exactly once, whatever reload happened meanwhile."""

    route: str
    shared: bool  # taken from the shared part (else from the route's reserve)


class Admission:
    def __init__(self) -> None:
        self.inflight = 0
        self._held: dict[str, int] = {}  # route name -> slots held
        self._shared_held: dict[str, int] = {}  # route name -> of which shared
        self._shared_total = 0

    def admit(self, route: str, budget: int, routes: int) -> Slot | None:
        """A slot for a request on `route`, or None: over its share (the caller answers 503)."""
        if routes <= 1:
            if self.inflight >= budget:
                return None
            return self._take(route, shared=True)
        reserve = budget // (2 * routes)
        held = self._held.get(route, 0)
        if held - self._shared_held.get(route, 0) < reserve:
            return self._take(route, shared=False)
        shared = budget - reserve * routes
        if self._shared_total >= shared or self._shared_held.get(route, 0) >= max(1, shared // 2):
            return None
        return self._take(route, shared=True)

    def _take(self, route: str, shared: bool) -> Slot:
        self.inflight += 1
        self._held[route] = self._held.get(route, 0) + 1
        if shared:
            self._shared_total += 1
            self._shared_held[route] = self._shared_held.get(route, 0) + 1
        return Slot(route, shared)

    def release(self, slot: Slot) -> None:
        self.inflight -= 1
        held = self._held[slot.route] - 1
        if held:
            self._held[slot.route] = held
        else:
            del self._held[slot.route]  # routes come and go with reloads: keep no empty entries
        if slot.shared:
            self._shared_total -= 1
            left = self._shared_held[slot.route] - 1
            if left:
                self._shared_held[slot.route] = left
            else:
                del self._shared_held[slot.route]

    def held(self, route: str) -> int:
        return self._held.get(route, 0)
