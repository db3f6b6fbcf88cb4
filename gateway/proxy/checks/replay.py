"""Replay protection: one mark per update key per route, `in flight` then `delivered`.

A verified request reserves its key (a short lease) before it is forwarded; an upstream 2xx
turns the reservation into a delivered mark for `ttl`, anything else releases it so the
sender's retry is forwarded. A set of keys with a TTL, never a high-water mark: Telegram's
`update_id` restarts at a random value after a week of silence.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from multidict import CIMultiDictProxy

from gateway.config import ReplayConfig
from gateway.proxy.checks import Failure
from gateway.store import DELIVERED, NEW, Store
from gateway.updates import update_id

DUPLICATE = Failure("replay", "duplicate")
# The first copy usually resolves well within a second; a retry that comes too early just
# gets another 409, while a long wait would hold back the sender's queue for that chat.
IN_FLIGHT = Failure("replay", "in_flight", retry_after=1.0)
# Margin over the upstream timeout, so a lease outlives the delivery it guards.
LEASE_MARGIN = 10.0


@dataclass(frozen=True, slots=True)
class Claim:
    """Our reservation of one key: settle it after the upstream answered."""

    key: str
    token: str


class ReplayCheck:
    __slots__ = ("config", "lease", "prefix")

    def __init__(self, route: str, config: ReplayConfig, upstream_timeout: float) -> None:
        self.prefix = f"replay:{route}:"
        self.config = config
        self.lease = upstream_timeout + LEASE_MARGIN

    @property
    def needs_update(self) -> bool:
        return self.config.key == "update_id"

    def key(self, headers: CIMultiDictProxy[str], body: bytes, update: dict[str, Any] | None) -> str:
        """The store key. A verified request without the configured field falls back to the
        hash of its body: a sender's retry repeats the same bytes, so it is still caught."""
        if self.config.key == "update_id":
            uid = update_id(update)
            if uid is not None:
                return f"{self.prefix}id:{uid}"
        elif self.config.key == "header" and self.config.header is not None:
            values = headers.getall(self.config.header, ())
            if len(values) == 1 and values[0]:
                digest = hashlib.sha256(values[0].encode("utf-8", "surrogateescape")).hexdigest()
                return f"{self.prefix}h:{digest}"
        return f"{self.prefix}b:{hashlib.sha256(body).hexdigest()}"

    async def reserve(self, store: Store, key: str) -> tuple[Failure | None, Claim | None]:
        """Raises `StoreError`."""
        got = await store.reserve(key, self.lease)
        if got.state == NEW:
            return None, Claim(key, got.token)
        if got.state == DELIVERED:
            return DUPLICATE, None
        return IN_FLIGHT, None

    async def settle(self, store: Store, claim: Claim, delivered: bool) -> None:
        """Raises `StoreError`."""
        if delivered:
            await store.deliver(claim.key, self.config.ttl)
        else:
            await store.release(claim.key, claim.token)
