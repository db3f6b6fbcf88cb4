"""The policy: the checks in order, and what their failures amount to.

`Pipeline.run` takes one request for one route through, in this order, and returns a `Verdict`
the handler carries out (forward or spool, answer a handshake, reject, or answer a client error):

1. source allow-list (on the client IP, before a byte of body is read)
2. rate limit (the client IP's request window, then its failure window)
3. body limits (size, deadline)
4. signature or secret token (on the raw bytes; nothing is parsed before it passes)
5. for verified requests only: the update filter (`accept:`), then replay
A check that raises counts as failed: nothing fails open unless `on_store_error: fail-open` says so.
Enforce or report-only is decided per request (`Route.enforces`): an enforced decisive failure
rejects, a report-only one is counted and forwarded with `X-Webhook-Verdict`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

from gateway.proxy.checks import Failure
from gateway.proxy.checks.body import TOO_LARGE, BodyTooLarge, body_in_memory, read_body
from gateway.proxy.checks.replay import Claim
from gateway.schemes.base import Signed
from gateway.schemes.handshake import HandshakeAnswer
from gateway.store import Store, StoreError
from gateway.updates import parse_update

if TYPE_CHECKING:
    from gateway.http.listener import Request
    from gateway.metrics import Metrics
    from gateway.proxy.clientip import IPAddress
    from gateway.proxy.snapshot import Route, Snapshot

log_ = logging.getLogger("webhook_gateway")

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


class Action(Enum):
    FORWARD = "forward"  # passed, or failed in report-only: to the upstream (or the spool)
    REJECT = "reject"  # an enforced decisive failure: `rejection_for(decision.reject)`
    FILTERED = "filtered"  # verified but not accepted: a 200 with nothing forwarded
    HANDSHAKE = "handshake"  # a verification handshake, answered by the gateway: `answer`
    CLIENT_ERROR = "client_error"  # the body never arrived whole: `status` and `code`


@dataclass(slots=True)
class Verdict:
    action: Action
    decision: Decision
    body: bytes = b""
    claim: Claim | None = None  # a replay reservation the handler settles after delivery
    filtered: str | None = None  # why the update filter dropped it
    answer: HandshakeAnswer | None = None  # HANDSHAKE's answer
    status: int = 0  # CLIENT_ERROR's answer
    code: str = ""


class Pipeline:
    """Runs a route's checks in order. Its state (replay marks, rate windows) lives in `store`,
    which outlives reloads; the route's checks hold configuration only."""

    def __init__(self, store: Store, metrics: Metrics, clock: Callable[[], float]) -> None:
        self.store = store
        self.metrics = metrics
        self.clock = clock

    async def run(
        self, request: Request, snapshot: Snapshot, route: Route, client: IPAddress | None, query: str
    ) -> Verdict:
        decision = Decision()
        # 1. Source: refused before a byte of body is read, unless a canary needs the body to
        # pick whether this request is enforced.
        if route.source is not None:
            try:
                decision.add(route.source.run(client))
            except Exception:
                decision.add(Failure("source", "error"))
        if not route.canary:
            decision.enforce = route.enforce
            if decision.reject is not None:
                return Verdict(Action.REJECT, decision)
        # 2. Rate limit, on the client IP.
        on_store_error = snapshot.config.store.on_store_error
        if route.rate_limit is not None:
            decision.add(await self._rate_admit(route, client, on_store_error))
            if not route.canary and decision.reject is not None:
                return Verdict(Action.REJECT, decision)
        if request.method == "GET":
            # Only a route with a handshake gets here; a GET has no body to pick a canary bucket.
            decision.enforce = route.enforces(b"")
            if decision.reject is not None:
                return Verdict(Action.REJECT, decision)
            return Verdict(Action.HANDSHAKE, decision, answer=_answer_get(route, query))
        # 3. Body limits: they hold in both modes, the gateway never buffers an unbounded body.
        limits = snapshot.config.limits
        try:
            if request.content.done:
                # Already all in memory (the usual webhook, in the same packets as its head).
                body = body_in_memory(request, limits.max_body_bytes)
            else:
                async with asyncio.timeout(limits.body_timeout):
                    body = await read_body(request, limits.max_body_bytes)
        except BodyTooLarge:
            decision.failures.insert(0, TOO_LARGE)
            decision.enforce = True
            return Verdict(Action.REJECT, decision)
        except TimeoutError:
            return Verdict(Action.CLIENT_ERROR, decision, status=408, code="body_timeout")
        except (asyncio.IncompleteReadError, ConnectionError):
            return Verdict(Action.CLIENT_ERROR, decision, status=400, code="incomplete_body")
        if route.canary:
            decision.enforce = route.enforces(body)
        # 4. Signature, on the raw bytes.
        signed = Signed(request.headers, body, self.clock(), query)
        if route.signature is not None and not (decision.enforce and decision.reject):
            check = route.signature
            failure, index = await check.run_prepared(signed) if check.prepare else check.run(signed)
            decision.add(failure)
            if index is not None:
                decision.secret_index = index
                route.metrics.secret_matched(index)
            if route.rate_limit is not None and failure is not None and failure.decisive:
                ceiling = await self._rate_failed(route, client)
                if ceiling is not None:
                    decision.failures.insert(0, ceiling)  # answered before the signature's 401
        if decision.reject is not None:
            return Verdict(Action.REJECT, decision, body)
        # 5. Only now, verified, is the body parsed or the store touched: a forged or unsigned
        # request can neither be filtered by content nor mark an update as seen. A sender's
        # handshake is answered here, in either delivery mode: never spooled or forwarded.
        if route.challenge is not None and decision.verified:
            answer = await _answer_post(route, signed)
            if answer is not None:
                return Verdict(Action.HANDSHAKE, decision, body, answer=answer)
        claim: Claim | None = None
        if decision.verified and (route.accept is not None or route.replay is not None):
            update = parse_update(body) if route.needs_update else None
            if route.accept is not None:
                why = _filter(route, update)
                if why is not None:
                    return Verdict(Action.FILTERED, decision, body, filtered=why)
            if route.replay is not None:
                claim = await self._reserve(route, request, body, update, decision, on_store_error)
                if decision.reject is not None:
                    return Verdict(Action.REJECT, decision, body)
        return Verdict(Action.FORWARD, decision, body, claim)

    async def settle(self, route: Route, claim: Claim, delivered: bool) -> None:
        """Close a replay reservation: marked on delivery (the upstream's 2xx), else released
        so the sender's retry gets through."""
        assert route.replay is not None
        try:
            await route.replay.settle(self.store, claim, delivered)
        except StoreError as exc:
            # Delivered but unmarked: a later retry is forwarded again (at least once, never
            # lost). Unreleased: the lease runs out by itself.
            self.metrics.store_errors.labels(route.name, exc.operation).inc()
        except Exception:
            log_.exception("replay settle failed")

    def _store_failed(self, route: Route, check: str, exc: StoreError, on_error: str) -> Failure:
        """fail-closed: a decisive failure (503, the sender retries, nothing is lost);
        fail-open: counted, and the request goes on as if the check had passed."""
        self.metrics.store_errors.labels(route.name, exc.operation).inc()
        return Failure(check, "unavailable", decisive=on_error == "fail-closed")

    async def _rate_admit(self, route: Route, client: IPAddress | None, on_error: str) -> Failure | None:
        assert route.rate_limit is not None
        try:
            return await route.rate_limit.admit(self.store, client, self.clock())
        except StoreError as exc:
            return self._store_failed(route, "rate_limit", exc, on_error)
        except Exception:
            log_.exception("rate limit check failed")
            return Failure("rate_limit", "error")  # fail closed

    async def _rate_failed(self, route: Route, client: IPAddress | None) -> Failure | None:
        assert route.rate_limit is not None
        try:
            return await route.rate_limit.failed(self.store, client, self.clock())
        except StoreError as exc:
            # The request fails verification anyway; only the count is lost.
            self.metrics.store_errors.labels(route.name, exc.operation).inc()
        except Exception:
            log_.exception("rate limit count failed")
        return None

    async def _reserve(
        self,
        route: Route,
        request: Request,
        body: bytes,
        update: dict[str, object] | None,
        decision: Decision,
        on_error: str,
    ) -> Claim | None:
        replay = route.replay
        assert replay is not None
        try:
            failure, claim = await replay.reserve(self.store, replay.key(request.headers, body, update))
        except StoreError as exc:
            decision.add(self._store_failed(route, "replay", exc, on_error))
            return None
        except Exception:
            log_.exception("replay check failed")
            decision.add(Failure("replay", "error"))
            return None
        decision.add(failure)
        return claim


def _answer_get(route: Route, raw_query: str) -> HandshakeAnswer:
    assert route.handshake is not None
    try:
        return route.handshake.answer(raw_query)
    except Exception:
        return HandshakeAnswer(400, reason="error")  # fail closed


async def _answer_post(route: Route, signed: Signed) -> HandshakeAnswer | None:
    assert route.challenge is not None
    try:
        # A handshake the gateway completes with a request of its own (sns) answers async.
        answer_async = getattr(route.challenge, "answer_async", None)
        if answer_async is not None:
            answer: HandshakeAnswer | None = await answer_async(signed)
            return answer
        return route.challenge.answer(signed)
    except Exception:
        return HandshakeAnswer(400, reason="error")  # fail closed: never forwarded either


def _filter(route: Route, update: dict[str, object] | None) -> str | None:
    assert route.accept is not None
    try:
        return route.accept.filtered(update)
    except Exception:
        return "error"  # an update that cannot be shown to be accepted is not forwarded
