"""Checks in order -> a `Decision`; applies enforce / report-only.

Order: source allow-list, (rate limit), body limits, signature or secret token, (replay).
A check that raises counts as failed: nothing fails open.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.checks import Failure

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
