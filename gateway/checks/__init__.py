"""One small file per check; each turns a request into a pass or a `Failure`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Failure:
    check: str  # source | signature | replay | rate_limit | body
    reason: str  # missing | mismatch | malformed | stale | not_allowed | too_large | error
    decisive: bool = True  # False: counted but allowed through (on_missing: allow)
