"""Signature / secret-token check: runs the route's scheme over the raw headers and body."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from gateway.proxy.checks import Failure
from gateway.schemes.base import MISSING, Signed, SigResult, Verifier


class SignatureCheck:
    __slots__ = ("allow_missing", "prepare", "verifier")

    def __init__(self, verifier: Verifier, allow_missing: bool) -> None:
        self.verifier = verifier
        self.allow_missing = allow_missing
        # A verifier that needs I/O first (sns: its signing certificate) has an async
        # `prepare(req)`; the others verify synchronously and pay nothing for it.
        self.prepare: Callable[[Signed], Awaitable[None]] | None = getattr(verifier, "prepare", None)

    async def run_prepared(self, req: Signed) -> tuple[Failure | None, int | None]:
        """`run`, after awaiting the verifier's `prepare` (only called when it has one)."""
        assert self.prepare is not None
        try:
            await self.prepare(req)
        except Exception:
            return Failure("signature", "error"), None
        return self.run(req)

    def run(self, req: Signed) -> tuple[Failure | None, int | None]:
        """-> (failure or None, index of the secret that matched)."""
        try:
            result: SigResult = self.verifier.verify(req)
        except Exception:
            # Fail closed: a scheme that raises has not verified anything.
            return Failure("signature", "error"), None
        if result.ok:
            return None, result.secret_index
        reason = result.reason or "mismatch"
        decisive = not (reason == MISSING and self.allow_missing)
        return _failure(reason, decisive), None


@functools.cache  # a handful of (reason, decisive) pairs; a flood repeats one of them
def _failure(reason: str, decisive: bool) -> Failure:
    return Failure("signature", reason, decisive)
