"""One small file per check; each turns a request into a pass or a `Failure`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Failure:
    check: str  # source | signature | replay | rate_limit | body
    reason: str  # see metrics.REASONS
    decisive: bool = True  # False: counted but allowed through (on_missing: allow, fail-open)
    retry_after: float = 0.0  # seconds a sender should wait (rate limit, replay in flight, store)
