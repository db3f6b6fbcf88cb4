"""Source allow-list: the resolved client IP must fall in one of the route's networks."""

from __future__ import annotations

from gateway.proxy.checks import Failure
from gateway.proxy.clientip import IPAddress, NetSet

NOT_ALLOWED = Failure("source", "not_allowed")
UNKNOWN = Failure("source", "missing")


class SourceCheck:
    __slots__ = ("allowed",)

    def __init__(self, allowed: NetSet) -> None:
        self.allowed = allowed

    def run(self, client: IPAddress | None) -> Failure | None:
        if client is None:  # e.g. a unix-socket listener with no forwarded address
            return UNKNOWN
        return None if client in self.allowed else NOT_ALLOWED
