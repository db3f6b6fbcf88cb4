"""The one catch-all handler: route -> client IP -> checks -> decision -> forward or reject."""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from multidict import CIMultiDict, CIMultiDictProxy

from gateway.http.listener import Reply, Request
from gateway.metrics import MULTIPROC_ENV, NO_ROUTE, Metrics
from gateway.proxy.accesslog import AccessLog
from gateway.proxy.admission import Admission
from gateway.proxy.checks import Failure
from gateway.proxy.checks.body import TOO_LARGE, BodyTooLarge, body_in_memory, read_body
from gateway.proxy.checks.replay import Claim
from gateway.proxy.clientip import IPAddress, parse_ip, resolve
from gateway.proxy.forward import Forwarder, UpstreamError, request_head, request_headers, response_head
from gateway.proxy.pipeline import Decision, rejection_for
from gateway.proxy.snapshot import Route, Snapshot, SnapshotHolder
from gateway.schemes.base import Signed
from gateway.schemes.handshake import HandshakeAnswer
from gateway.spool.store import SpoolError
from gateway.store import Store, StoreError
from gateway.updates import parse_update

if TYPE_CHECKING:
    from gateway.spool.service import Spool

_JSON = "application/json"
# Answer to a duplicate or a filtered update: a 2xx (the sender stops retrying), no method call.
_OK_BODY = b'{"ok":true}'
log_ = logging.getLogger("webhook_gateway")


def json_error(status: int, code: str, headers: dict[str, str] | None = None) -> Reply:
    if headers is None:
        # The header line is written as these bytes: nothing to encode per answer.
        reply = Reply(status, _error_body(code), _NO_HEADERS)  # shared: replies never edit it
        reply.raw_head = _JSON_HEAD
        return reply
    return Reply(status, _error_body(code), headers, content_type=_JSON)


_NO_HEADERS: CIMultiDict[str] = CIMultiDict()
_JSON_HEAD = (b"Content-Type: application/json\r\n", False)


@functools.cache
def _error_body(code: str) -> bytes:
    return json.dumps({"error": code}).encode()


def framing_ok(headers: CIMultiDictProxy[str]) -> bool:
    """One unambiguous body framing: at most one Content-Length, or `Transfer-Encoding: chunked`
    alone (one line, one coding). Both parsers refuse most other framings; the pure-Python one
    takes `chunked, chunked`, and the C one `gzip, chunked` (whose decoded body the upstream
    would get with nothing saying it is compressed)."""
    if "Transfer-Encoding" in headers:
        codings = headers.getall("Transfer-Encoding")
        if len(codings) != 1 or "Content-Length" in headers:
            return False
        return codings[0].strip().lower() == "chunked"
    return len(headers.getall("Content-Length", ())) <= 1


@dataclass(slots=True)
class Exchange:
    """One request on its way upstream, after the checks."""

    request: Request
    route: Route
    query: str
    client: IPAddress | None
    decision: Decision
    log: dict[str, object]
    started: float
    request_id: str
    peer_trusted: bool = False
    client_text: str | None = None  # the client IP as written upstream and in the log
    replay_key: str | None = None  # the route's replay key, when it has `replay:`


class Gateway:
    def __init__(
        self,
        holder: SnapshotHolder,
        forwarder: Forwarder,
        metrics: Metrics,
        log: AccessLog,
        clock: Callable[[], float] = time.time,
        store: Store | None = None,
        spool: Spool | None = None,
    ) -> None:
        self.holder = holder
        self.spool = spool
        if store is None:
            from gateway.store.memory import MemoryStore

            store = MemoryStore(holder.current.config.store.max_entries, metrics, clock)
        # Replay marks and rate windows: owned by the Service, kept across reloads.
        self.store: Store = store
        self.forwarder = forwarder
        self.metrics = metrics
        self.log = log
        self.clock = clock
        self.admission = Admission()
        # One process: the gauge reads `inflight` when scraped, nothing per request. A worker
        # of several must write its own value to prometheus_client's shared files instead.
        self._inflight_gauge = metrics.inflight if os.environ.get(MULTIPROC_ENV) else None
        if self._inflight_gauge is None:
            metrics.inflight.set_function(lambda: self.inflight)
        # Request ids: a random prefix per process and a counter, unique without a getrandom
        # system call per request.
        prefix = os.urandom(8).hex()
        counter = itertools.count()
        self._request_id = lambda: f"{prefix}{next(counter):08x}"

    def malformed(self, remote: str | None, status: int) -> None:
        """A request the server could not parse (and answered itself): count and log it."""
        self.metrics.requests.labels(NO_ROUTE, "bad_request").inc()
        client = parse_ip(remote or "")
        self.log.request(
            route=None,
            outcome="bad_request",
            status=status,
            reason="malformed_http",
            client_ip=str(client) if client else None,
        )

    @property
    def inflight(self) -> int:
        return self.admission.inflight

    async def __call__(self, request: Request) -> Reply:
        started = time.perf_counter()
        snapshot = self.holder.current  # the whole request runs on this snapshot
        peer, client, client_text = resolve(
            request.remote, request.headers.getall("X-Forwarded-For", []), snapshot.trusted
        )
        # The access-log line, filled in as the request goes (see AccessLog.record).
        log: dict[str, object] = {
            "ts": 0.0,
            "event": "request",
            "request_id": None,  # made when needed: forwarded, or its line is written
            "client_ip": client_text,
        }

        if not framing_ok(request.headers):
            # The server already refuses versions other than 1.0/1.1 and ambiguous framings
            # (answering in HTTP/1.1, never in kind); kept as a second line of defence.
            self.metrics.requests.labels(NO_ROUTE, "bad_request").inc()
            resp = json_error(400, "bad_request")
            resp.force_close()
            return self._done(resp, None, "bad_request", log, started)

        path, _, query = request.raw_path.partition("?")
        route = snapshot.routes.get(path)
        if route is None:
            self.metrics.requests.labels(NO_ROUTE, "not_found").inc()
            return self._done(json_error(404, "not_found"), None, "not_found", log, started)
        if request.method != "POST" and not (request.method == "GET" and route.allow_get):
            self.metrics.requests.labels(route.name, "bad_request").inc()
            allow = "GET, POST" if route.allow_get else "POST"
            return self._done(
                json_error(405, "method_not_allowed", {"Allow": allow}),
                route,
                "bad_request",
                log,
                started,
            )

        # This route's share of max_concurrency (gateway/proxy/admission.py), held to the answer.
        slot = self.admission.admit(route.name, snapshot.config.max_concurrency, len(snapshot.routes))
        if slot is None:
            route.metrics.requests["overloaded"].inc()
            resp = json_error(503, "overloaded", {"Retry-After": "1"})
            resp.force_close()
            return self._done(resp, route, "overloaded", log, started)
        gauge = self._inflight_gauge
        if gauge is not None:
            gauge.inc()
        try:
            return await self._checked(
                request, snapshot, route, query, peer, client, client_text, log, started
            )
        finally:
            self.admission.release(slot)
            if gauge is not None:
                gauge.dec()

    async def _checked(
        self,
        request: Request,
        snapshot: Snapshot,
        route: Route,
        query: str,
        peer: IPAddress | None,
        client: IPAddress | None,
        client_text: str | None,
        log: dict[str, object],
        started: float,
    ) -> Reply:
        decision = Decision()
        if route.source is not None:
            try:
                decision.add(route.source.run(client))
            except Exception:
                decision.add(Failure("source", "error"))
        # Reject on the source before reading a byte of body, unless a canary needs the body
        # to decide whether this request is enforced.
        if not route.canary:
            decision.enforce = route.enforce
            if decision.reject is not None:
                return self._reject(route, decision, log, started)
        on_store_error = snapshot.config.store.on_store_error
        if route.rate_limit is not None:
            # On the client IP, before a byte of body is read or verified.
            decision.add(await self._rate_admit(route, client, on_store_error))
            if not route.canary and decision.reject is not None:
                return self._reject(route, decision, log, started)

        if request.method == "GET":
            # Only a route with a handshake gets here; a GET has no body to pick a canary bucket.
            decision.enforce = route.enforces(b"")
            if decision.reject is not None:
                return self._reject(route, decision, log, started)
            return self._handshake(route, query, decision, log, started)

        limits = snapshot.config.limits
        try:
            if request.content.done:
                # Already all in memory (the usual webhook, in the same packets as its head):
                # no deadline to arm, nothing to wait for.
                body = body_in_memory(request, limits.max_body_bytes)
            else:
                async with asyncio.timeout(limits.body_timeout):
                    body = await read_body(request, limits.max_body_bytes)
        except BodyTooLarge:
            # Body limits hold in both modes: the gateway never buffers an unbounded body.
            route.metrics.failure("body", "too_large", "enforce")
            decision.failures.insert(0, TOO_LARGE)
            decision.enforce = True
            resp = self._reject(route, decision, log, started)
            resp.force_close()
            return resp
        except TimeoutError:
            route.metrics.requests["bad_request"].inc()
            resp = json_error(408, "body_timeout")
            resp.force_close()
            return self._done(resp, route, "bad_request", log, started)
        except (asyncio.IncompleteReadError, ConnectionError):
            route.metrics.requests["bad_request"].inc()
            resp = json_error(400, "incomplete_body")
            resp.force_close()
            return self._done(resp, route, "bad_request", log, started)

        if route.canary:
            decision.enforce = route.enforces(body)
        if route.signature is not None and not (decision.enforce and decision.reject):
            signed = Signed(request.headers, body, self.clock(), query)
            failure, index = route.signature.run(signed)
            decision.add(failure)
            if index is not None:
                decision.secret_index = index
                route.metrics.secret_matched(index)
            if route.rate_limit is not None and failure is not None and failure.decisive:
                await self._rate_failed(route, client)

        if decision.reject is not None:
            return self._reject(route, decision, log, started)
        claim: Claim | None = None
        if decision.verified and (route.accept is not None or route.replay is not None):
            # Only now, verified, is the body parsed or the store touched: a forged or unsigned
            # request can neither be filtered by content nor mark an update as seen.
            update = parse_update(body) if route.needs_update else None
            if route.accept is not None:
                why = self._filter(route, update)
                if why is not None:
                    return self._filtered(route, decision, why, log, started)
            if route.replay is not None:
                claim = await self._reserve(route, request.headers, body, update, decision, on_store_error)
                if decision.reject is not None:
                    return self._reject(route, decision, log, started)
        self._count_failures(route, decision)
        request_id = log["request_id"] = self._request_id()
        ex = Exchange(request, route, query, client, decision, log, started, request_id)
        ex.replay_key = claim.key if claim is not None else None
        ex.peer_trusted = peer is not None and peer in snapshot.trusted
        ex.client_text = client_text
        try:
            resp = await self._forward(ex, body, snapshot.config.limits.upstream_timeout)
        except BaseException:
            if claim is not None:
                await self._settle(route, claim, delivered=False)
            raise
        if claim is not None:
            # Delivered only on the upstream's 2xx; otherwise the sender's retry must get through.
            await self._settle(route, claim, delivered=200 <= resp.status < 300)
        return resp

    # ------------------------------------------------------------ stateful checks

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

    async def _rate_failed(self, route: Route, client: IPAddress | None) -> None:
        assert route.rate_limit is not None
        try:
            await route.rate_limit.failed(self.store, client, self.clock())
        except StoreError as exc:
            # The request fails verification anyway; only the count is lost.
            self.metrics.store_errors.labels(route.name, exc.operation).inc()
        except Exception:
            log_.exception("rate limit count failed")

    @staticmethod
    def _filter(route: Route, update: dict[str, object] | None) -> str | None:
        assert route.accept is not None
        try:
            return route.accept.filtered(update)
        except Exception:
            return "error"  # an update that cannot be shown to be accepted is not forwarded

    def _filtered(
        self, route: Route, decision: Decision, why: str, log: dict[str, object], started: float
    ) -> Reply:
        self._count_failures(route, decision)
        route.metrics.requests["filtered"].inc()
        log["filtered"] = why
        self._annotate(log, decision)
        resp = Reply(200, _OK_BODY, content_type=_JSON)
        return self._done(resp, route, "filtered", log, started)

    async def _reserve(
        self,
        route: Route,
        headers: CIMultiDictProxy[str],
        body: bytes,
        update: dict[str, object] | None,
        decision: Decision,
        on_error: str,
    ) -> Claim | None:
        replay = route.replay
        assert replay is not None
        try:
            failure, claim = await replay.reserve(self.store, replay.key(headers, body, update))
        except StoreError as exc:
            decision.add(self._store_failed(route, "replay", exc, on_error))
            return None
        except Exception:
            log_.exception("replay check failed")
            decision.add(Failure("replay", "error"))
            return None
        decision.add(failure)
        return claim

    async def _settle(self, route: Route, claim: Claim, delivered: bool) -> None:
        assert route.replay is not None
        try:
            await route.replay.settle(self.store, claim, delivered)
        except StoreError as exc:
            # Delivered but unmarked: a later retry is forwarded again (at least once, never
            # lost). Unreleased: the lease runs out by itself.
            self.metrics.store_errors.labels(route.name, exc.operation).inc()
        except Exception:
            log_.exception("replay settle failed")

    async def _forward(self, ex: Exchange, body: bytes, timeout: float) -> Reply:
        request, route, decision, log, started = ex.request, ex.route, ex.decision, ex.log, ex.started
        query, request_id = ex.query, ex.request_id
        proto = _forwarded_proto(request, ex.client is not None and ex.peer_trusted)
        extra = [
            ("X-Forwarded-For", ex.client_text or ""),
            ("X-Forwarded-Proto", proto),
            ("X-Request-Id", request_id),
            ("X-Webhook-Verdict", decision.verdict()),
        ]
        if route.config.delivery == "spool":
            return await self._spool(ex, request_headers(request.raw_headers, extra), body)
        up_started = time.perf_counter()
        try:
            head = request_head(request.raw_headers, extra)
            answer = await self.forwarder.send_raw(route.config.upstream, query, head, body, timeout)
        except UpstreamError as exc:
            route.metrics.upstream.observe(time.perf_counter() - up_started)
            route.metrics.requests["upstream_error"].inc()
            status, code = (504, "upstream_timeout") if exc.timeout else (502, "upstream_unavailable")
            log["upstream_error"] = exc.reason  # one word from a fixed list: nothing the upstream sent
            self._annotate(log, decision)
            return self._done(json_error(status, code), route, "upstream_error", log, started)
        route.metrics.upstream.observe(time.perf_counter() - up_started)
        outcome = decision.outcome
        route.metrics.requests[outcome].inc()
        resp = Reply(answer.status, answer.body, reason=answer.reason)
        resp.raw_head = response_head(answer.headers)
        self._annotate(log, decision)
        return self._done(resp, route, outcome, log, started)

    async def _spool(self, ex: Exchange, headers: list[tuple[str, str]], body: bytes) -> Reply:
        """`delivery: spool`: 200 only once the update is committed to disk; otherwise 503."""
        route, log, started = ex.route, ex.log, ex.started
        self._annotate(log, ex.decision)
        try:
            if self.spool is None:
                raise SpoolError("unavailable", "no spool in this gateway")
            stored = await self.spool.accept(route, ex.query, headers, body, key=ex.replay_key)
        except SpoolError as exc:
            # Fail closed: the sender retries a 503, and nothing it was told is stored is lost.
            self.metrics.spool.write_failures.labels(route.name, exc.reason).inc()
            route.metrics.requests["spool_error"].inc()
            log["spool_error"] = exc.reason
            resp = json_error(503, "spool_unavailable", {"Retry-After": "5"})
            return self._done(resp, route, "spool_error", log, started)
        except Exception:  # anything unexpected is a failed write too: never a 200
            self.metrics.spool.write_failures.labels(route.name, "error").inc()
            route.metrics.requests["spool_error"].inc()
            log["spool_error"] = "error"
            resp = json_error(503, "spool_unavailable", {"Retry-After": "5"})
            return self._done(resp, route, "spool_error", log, started)
        outcome = "spooled" if stored else "duplicate"
        route.metrics.requests[outcome].inc()
        resp = Reply(200, json.dumps({"status": outcome}).encode(), content_type=_JSON)
        return self._done(resp, route, outcome, log, started)

    def _handshake(
        self,
        route: Route,
        raw_query: str,
        decision: Decision,
        log: dict[str, object],
        started: float,
    ) -> Reply:
        """Answer a sender's GET verification handshake here; nothing is forwarded."""
        assert route.handshake is not None
        try:
            answer = route.handshake.answer(raw_query)
        except Exception:
            answer = HandshakeAnswer(400, reason="error")  # fail closed
        if answer.reason is not None:
            # The token is the only check a GET has: refused in every mode (there is nothing to
            # forward and nobody else to answer it), so it counts as enforced.
            route.metrics.failure("signature", answer.reason, "enforce")
            route.metrics.requests["rejected"].inc()
            log["check"], log["reason"] = "signature", answer.reason  # as the metric counts it
            code = "handshake_malformed" if answer.status == 400 else f"verify_token_{answer.reason}"
            return self._done(json_error(answer.status, code), route, "rejected", log, started)
        self._count_failures(route, decision)
        route.metrics.requests["handshake"].inc()
        resp = Reply(
            200,
            answer.body,
            {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"},
            content_type="text/plain; charset=utf-8",
        )
        return self._done(resp, route, "handshake", log, started)

    def _reject(self, route: Route, decision: Decision, log: dict[str, object], started: float) -> Reply:
        failure = decision.reject
        assert failure is not None
        rejection = rejection_for(failure)
        self._count_failures(route, decision, skip_body=True)
        route.metrics.requests[rejection.outcome].inc()
        self._annotate(log, decision)
        if rejection.code is None:
            resp = Reply(rejection.status, _OK_BODY, content_type=_JSON)
        else:
            headers = {"Retry-After": str(rejection.retry_after)} if rejection.retry_after else None
            resp = json_error(rejection.status, rejection.code, headers)
        return self._done(resp, route, rejection.outcome, log, started)

    def _count_failures(self, route: Route, decision: Decision, skip_body: bool = False) -> None:
        mode = "enforce" if decision.enforce else "report-only"
        for f in decision.failures:
            if skip_body and f.check == "body":
                continue  # counted where it happened
            route.metrics.failure(f.check, f.reason, mode)

    @staticmethod
    def _annotate(log: dict[str, object], decision: Decision) -> None:
        f = decision.first_decisive or (decision.failures[0] if decision.failures else None)
        if f is not None:
            log["check"] = f.check
            log["reason"] = f.reason
        if decision.secret_index is not None:
            log["secret"] = decision.secret_index

    def _done(
        self,
        resp: Reply,
        route: Route | None,
        outcome: str,
        log: dict[str, object],
        started: float,
    ) -> Reply:
        elapsed = time.perf_counter() - started
        if route is not None:
            route.metrics.duration.observe(elapsed)
        name = route.name if route else None
        if self.log.admit(name, outcome):  # a flood's lines are counted, not built
            if log["request_id"] is None:
                log["request_id"] = self._request_id()
            log["route"] = name
            log["outcome"] = outcome
            log["status"] = resp.status
            log["duration_ms"] = round(elapsed * 1000, 3)
            self.log.write(log)
        return resp


def _forwarded_proto(request: Request, peer_trusted: bool) -> str:
    """This listener's scheme, or what a trusted proxy in front says the client used."""
    if peer_trusted:
        claimed = request.headers.get("X-Forwarded-Proto", "").strip().lower()
        if claimed in ("http", "https"):
            return claimed
    return "https" if request.secure else "http"
