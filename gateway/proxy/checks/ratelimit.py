"""Rate limits per route and client IP, checked before the body is read.

Two sliding windows: every request, and failed verifications. The second is much lower: a
forger is refused after a few wrong secrets, before the gateway spends anything verifying,
while the sender's own addresses (few, carrying all of a bot's traffic) are never counted
there as long as their requests verify. Only admitted requests are counted, so a refused
client is told exactly when a slot frees up.
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
    __slots__ = ("failures", "prefix", "requests")

    def __init__(self, route: str, config: RateLimitConfig) -> None:
        self.prefix = f"rate:{route}:"
        self.requests: Rate | None = config.requests
        self.failures: Rate | None = config.failures

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

    async def failed(self, store: Store, client: IPAddress | None, now: float) -> None:
        """A verification failed: count it. Raises `StoreError`."""
        if self.failures is not None:
            f = self.failures
            await store.rate(f"{self.prefix}fail:{subject(client)}", f.count, f.window, now, add=True)
