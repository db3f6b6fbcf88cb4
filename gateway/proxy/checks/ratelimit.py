"""Rate limits per route and client IP, checked before the body is read.

Two sliding windows per client IP: every request, and failed verifications. The second is much
lower: a forger is refused after a few wrong secrets, before the gateway spends anything
verifying, while the sender's own addresses (few, carrying all of a bot's traffic) are never
counted there as long as their requests verify. Only admitted requests are counted, so a
refused client is told exactly when a slot frees up.

Per-IP windows cannot stop a forger who rotates through more addresses than the store keeps
windows for. `route_failures` is the route's own window of failed verifications over every
client: past it, a failed verification is answered 429 (with `Retry-After`) instead of 401,
while a request that verifies still passes, whatever its address.
"""

from __future__ import annotations

import ipaddress

from gateway.config import Rate, RateLimitConfig
from gateway.proxy.checks import Failure
from gateway.proxy.clientip import IPAddress
from gateway.store import Store


def subject(client: IPAddress | None) -> str:
    """Whom a window counts: an IPv4 address, or an IPv6 client's /64 (one host's usual
    allocation: counting single IPv6 addresses would let one host rotate through billions)."""
    if client is None:
        return "unknown"  # e.g. a unix-socket listener: all such clients share one window
    if client.version == 6:
        return str(ipaddress.IPv6Network((client, 64), strict=False))
    return str(client)


class RateLimitCheck:
    __slots__ = ("failures", "prefix", "requests", "route_failures")

    def __init__(self, route: str, config: RateLimitConfig) -> None:
        self.prefix = f"rate:{route}:"
        self.requests: Rate | None = config.requests
        self.failures: Rate | None = config.failures
        self.route_failures: Rate | None = config.route_failures

    async def admit(self, store: Store, client: IPAddress | None, now: float) -> Failure | None:
        """Before the body: refused while this IP is over its failure limit, else counted
        against the request limit. Raises `StoreError`."""
        who = subject(client)
        if self.failures is not None:
            f = self.failures
            wait = await store.rate(f"{self.prefix}fail:{who}", f.count, f.window, now, add=False)
            if wait > 0:
                return Failure("rate_limit", "failures", retry_after=wait)
        if self.requests is not None:
            r = self.requests
            wait = await store.rate(f"{self.prefix}req:{who}", r.count, r.window, now, add=True)
            if wait > 0:
                return Failure("rate_limit", "requests", retry_after=wait)
        return None

    async def failed(self, store: Store, client: IPAddress | None, now: float) -> Failure | None:
        """A verification failed: count it against the client and the route; the route's
        ceiling, when this failure is past it. Raises `StoreError`."""
        if self.failures is not None:
            f = self.failures
            await store.rate(f"{self.prefix}fail:{subject(client)}", f.count, f.window, now, add=True)
        if self.route_failures is not None:
            c = self.route_failures
            wait = await store.rate(f"{self.prefix}route-fail", c.count, c.window, now, add=True)
            if wait > 0:
                return Failure("rate_limit", "route_failures", retry_after=wait)
        return None
