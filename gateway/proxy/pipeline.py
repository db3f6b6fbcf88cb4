"""Checks in order -> a `Decision`; applies enforce / report-only.

Order: source allow-list, rate limit, body limits, signature or secret token, then for verified
requests only: update filter (accept) and replay.
A check that raises counts as failed: nothing fails open.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

from gateway.proxy.checks import Failure

STATUS = {"source": 403, "signature": 401, "body": 413, "rate_limit": 429, "replay": 409}
ERROR_CODE = {
    ("source", "not_allowed"): "source_not_allowed",
    ("source", "missing"): "source_unknown",
    ("body", "too_large"): "body_too_large",
}


@dataclass(slots=True)
class Decision:
    failures: list[Failure] = field(default_factory=list)
    enforce: bool = False
    secret_index: int | None = None

    def add(self, failure: Failure | None) -> None:
        if failure is not None:
            self.failures.append(failure)

    @property
    def first_decisive(self) -> Failure | None:
        for f in self.failures:
            if f.decisive:
                return f
        return None

    @property
    def verified(self) -> bool:
        """Nothing decisive failed and the signature (if any) verified: only such a request
        may be parsed or touch replay state (no poisoning by forged or unsigned requests)."""
        return all(not f.decisive for f in self.failures) and not any(
            f.check == "signature" for f in self.failures
        )

    @property
    def reject(self) -> Failure | None:
        """The failure to reject with, when this request is enforced."""
        return self.first_decisive if self.enforce else None

    def verdict(self) -> str:
        """The `X-Webhook-Verdict` header sent upstream."""
        f = self.first_decisive
        if f is not None:
            return f"would-reject; check={f.check}; reason={f.reason}"
        for f in self.failures:  # counted but allowed (on_missing: allow)
            return f"allowed; check={f.check}; reason={f.reason}"
        return "pass"

    @property
    def outcome(self) -> str:
        if self.first_decisive is None:
            return "forwarded"
        return "rejected" if self.enforce else "would_reject"


def error_code(failure: Failure) -> str:
    return ERROR_CODE.get((failure.check, failure.reason), f"{failure.check}_{failure.reason}")


def status_for(failure: Failure) -> int:
    return STATUS.get(failure.check, 403)


@dataclass(frozen=True, slots=True)
class Rejection:
    """How an enforced failure is answered."""

    status: int
    code: str | None  # the `{"error": code}` body; None: a `{"ok": true}` body (nothing to retry)
    outcome: str  # webhook_gateway_requests_total{outcome}
    retry_after: int | None = None  # whole seconds for the Retry-After header


STORE_RETRY_AFTER = 5  # a sender retrying a store outage every second only adds load


@functools.lru_cache(maxsize=256)  # a flood repeats the same few failures
def rejection_for(failure: Failure) -> Rejection:
    wait = max(1, math.ceil(failure.retry_after))
    if failure.reason == "unavailable":
        # fail-closed while the store is unreachable: the sender retries, nothing is lost.
        return Rejection(503, "store_unavailable", "store_unavailable", max(wait, STORE_RETRY_AFTER))
    if failure.reason == "error" and failure.check in ("rate_limit", "replay"):
        # The check itself broke: fail closed, but as a retryable server error.
        return Rejection(503, f"{failure.check}_error", "rejected", STORE_RETRY_AFTER)
    if failure.check == "rate_limit":
        return Rejection(429, "rate_limited", "rate_limited", wait)
    if failure.check == "replay" and failure.reason == "duplicate":
        # Already delivered: a 2xx stops the sender's retries; the bot is not bothered again.
        return Rejection(200, None, "duplicate")
    if failure.check == "replay" and failure.reason == "in_flight":
        # Never a 2xx before the first copy's fate is known: if its delivery fails, this
        # retry must still be able to get through.
        return Rejection(409, "replay_in_flight", "duplicate", wait)
    return Rejection(status_for(failure), error_code(failure), "rejected")
