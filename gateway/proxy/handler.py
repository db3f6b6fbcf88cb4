"""The catch-all handler, a thin adapter around the pipeline: find the route and the client IP,
admit the request, let `pipeline.Pipeline` decide, carry the verdict out (forward, spool, answer a
handshake, reject), and record every request once (`Gateway.record`)."""

from __future__ import annotations

import functools
import itertools
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from multidict import CIMultiDict

from gateway.http.listener import Reply, Request
from gateway.metrics import MULTIPROC_ENV, NO_ROUTE, Metrics
from gateway.proxy.accesslog import AccessLog
from gateway.proxy.admission import Admission
from gateway.proxy.checks.body import TOO_LARGE
from gateway.proxy.clientip import IPAddress, parse_ip, resolve
from gateway.proxy.forward import Forwarder, UpstreamError, head_lines, request_head, response_head
from gateway.proxy.pipeline import Action, Decision, Pipeline, Verdict, rejection_for
from gateway.proxy.snapshot import Route, SnapshotHolder
from gateway.schemes.handshake import HandshakeAnswer
from gateway.store import Store


class Spooler(Protocol):
    """Where `delivery: spool` routes keep an update (gateway.spool.service.Spool). Raises an
    exception with a `reason` when it cannot store one: the sender gets a 503."""

    async def accept(
        self,
        route: Route,
        query: str,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        key: str | None = None,
    ) -> bool: ...


_SPOOL_REASONS = frozenset({"full", "disk_full", "locked", "error", "unavailable", "timeout"})

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
        spool: Spooler | None = None,
    ) -> None:
        self.holder = holder
        self.spool = spool
        if store is None:
            from gateway.store.memory import MemoryStore

            store = MemoryStore(holder.current.config.store.max_entries, metrics, clock)
        # Replay marks and rate windows: owned by the Service, kept across reloads.
        self.store: Store = store
        self.pipeline = Pipeline(store, metrics, clock)
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
        self._request_id: Callable[[], str] = lambda: f"{prefix}{next(counter):08x}"

    def malformed(self, remote: str | None, status: int) -> None:
        """A request the server could not parse (and answered itself): count and log it."""
        client = parse_ip(remote or "")
        log: dict[str, object] = {"ts": 0.0, "event": "request", "request_id": None}
        log["client_ip"] = str(client) if client else None
        log["reason"] = "malformed_http"
        self.record(status, None, "bad_request", log, None)

    @property
    def inflight(self) -> int:
        return self.admission.inflight

    async def __call__(self, request: Request) -> Reply:
        started = time.perf_counter()
        snapshot = self.holder.current  # the whole request runs on this snapshot
        peer, client, client_text = resolve(
            request.remote, request.headers.getall("X-Forwarded-For", []), snapshot.trusted
        )
        # The access-log line, filled in as the request goes (see `record`).
        log: dict[str, object] = {
            "ts": 0.0,
            "event": "request",
            "request_id": None,  # made when needed: forwarded, or its line is written
            "client_ip": client_text,
        }
        path, _, query = request.raw_path.partition("?")
        route = snapshot.routes.get(path)
        if route is None:
            return self._answer(json_error(404, "not_found"), None, "not_found", log, started)
        if request.method != "POST" and not (request.method == "GET" and route.allow_get):
            allow = "GET, POST" if route.allow_get else "POST"
            resp = json_error(405, "method_not_allowed", {"Allow": allow})
            return self._answer(resp, route, "method_not_allowed", log, started)
        # This route's share of max_concurrency (gateway/proxy/admission.py), held to the answer.
        slot = self.admission.admit(route.name, snapshot.config.max_concurrency, len(snapshot.routes))
        if slot is None:
            resp = json_error(503, "overloaded", {"Retry-After": "1"})
            resp.force_close()
            return self._answer(resp, route, "overloaded", log, started)
        gauge = self._inflight_gauge
        if gauge is not None:
            gauge.inc()
        try:
            verdict = await self.pipeline.run(request, snapshot, route, client, query)
            ex = Exchange(request, route, query, client, verdict.decision, log, started, "")
            ex.peer_trusted = peer is not None and peer in snapshot.trusted
            ex.client_text = client_text
            return await self._carry_out(ex, verdict, snapshot.config.limits.upstream_timeout)
        finally:
            self.admission.release(slot)
            if gauge is not None:
                gauge.dec()

    async def _carry_out(self, ex: Exchange, verdict: Verdict, timeout: float) -> Reply:
        route, decision, log, started = ex.route, ex.decision, ex.log, ex.started
        action = verdict.action
        if action is Action.FORWARD:
            claim = verdict.claim
            ex.request_id = log["request_id"] = self._request_id()
            ex.replay_key = claim.key if claim is not None else None
            try:
                resp = await self._forward(ex, verdict.body, timeout)
            except BaseException:
                if claim is not None:
                    await self.pipeline.settle(route, claim, delivered=False)
                raise
            if claim is not None:
                # Delivered only on the upstream's 2xx; otherwise the sender's retry must get through.
                await self.pipeline.settle(route, claim, delivered=200 <= resp.status < 300)
            return resp
        if action is Action.REJECT:
            return self._reject(route, decision, log, started)
        if action is Action.FILTERED:
            log["filtered"] = verdict.filtered
            resp = Reply(200, _OK_BODY, content_type=_JSON)
            return self._answer(resp, route, "filtered", log, started, decision)
        if action is Action.HANDSHAKE:
            assert verdict.answer is not None
            return self._handshake(route, verdict.answer, decision, log, started)
        # CLIENT_ERROR: the body did not arrive whole; the connection is not reused.
        resp = json_error(verdict.status, verdict.code)
        resp.force_close()
        return self._answer(resp, route, "bad_request", log, started)

    async def _forward(self, ex: Exchange, body: bytes, timeout: float) -> Reply:
        request, route, decision, log, started = ex.request, ex.route, ex.decision, ex.log, ex.started
        proto = _forwarded_proto(request, ex.client is not None and ex.peer_trusted)
        extra = [
            ("X-Forwarded-For", ex.client_text or ""),
            ("X-Forwarded-Proto", proto),
            ("X-Request-Id", ex.request_id),
            ("X-Webhook-Verdict", decision.verdict()),
        ]
        head = request_head(request.raw_headers, extra)
        if route.config.delivery == "spool":
            return await self._spool(ex, head, body)
        up_started = time.perf_counter()
        try:
            answer = await self.forwarder.send_raw(route.config.upstream, ex.query, head, body, timeout)
        except UpstreamError as exc:
            route.metrics.upstream.observe(time.perf_counter() - up_started)
            status, code = (504, "upstream_timeout") if exc.timeout else (502, "upstream_unavailable")
            log["upstream_error"] = exc.reason  # one word from a fixed list: nothing the upstream sent
            return self._answer(json_error(status, code), route, "upstream_error", log, started, decision)
        route.metrics.upstream.observe(time.perf_counter() - up_started)
        resp = Reply(answer.status, answer.body, reason=answer.reason)
        resp.raw_head = response_head(answer.headers)
        return self._answer(resp, route, decision.outcome, log, started, decision)

    async def _spool(self, ex: Exchange, head: bytes, body: bytes) -> Reply:
        """`delivery: spool`: 200 only once the update is committed to disk; otherwise 503."""
        route, log, started = ex.route, ex.log, ex.started
        try:
            if self.spool is None:
                raise LookupError("no spool in this gateway")
            stored = await self.spool.accept(route, ex.query, head_lines(head), body, key=ex.replay_key)
        except Exception as exc:  # anything unexpected is a failed write too: never a 200
            # Fail closed: the sender retries a 503, and nothing it was told is stored is lost.
            reason = getattr(exc, "reason", "unavailable" if self.spool is None else "error")
            if reason not in _SPOOL_REASONS:
                reason = "error"  # a metric label from a fixed list, whatever was raised
            self.metrics.spool.write_failures.labels(route.name, reason).inc()
            log["spool_error"] = reason
            resp = json_error(503, "spool_unavailable", {"Retry-After": "5"})
            return self._answer(resp, route, "spool_error", log, started, ex.decision)
        outcome = "spooled" if stored else "duplicate"
        resp = Reply(200, json.dumps({"status": outcome}).encode(), content_type=_JSON)
        return self._answer(resp, route, outcome, log, started, ex.decision)

    def _handshake(
        self,
        route: Route,
        answer: HandshakeAnswer,
        decision: Decision,
        log: dict[str, object],
        started: float,
    ) -> Reply:
        """A sender's verification handshake, answered here; nothing is forwarded."""
        if answer.reason is not None:
            # A handshake's own token or form is refused in every mode (there is nothing to
            # forward and nobody else to answer it), so it counts as enforced.
            route.metrics.failure("signature", answer.reason, "enforce")
            log["check"], log["reason"] = "signature", answer.reason  # as the metric counts it
            code = "handshake_malformed" if answer.status == 400 else f"verify_token_{answer.reason}"
            return self._answer(json_error(answer.status, code), route, "rejected", log, started)
        resp = Reply(
            200,
            answer.body,
            {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"},
            content_type=answer.content_type,
        )
        return self._answer(resp, route, "handshake", log, started, decision)

    def _reject(self, route: Route, decision: Decision, log: dict[str, object], started: float) -> Reply:
        failure = decision.reject
        assert failure is not None
        rejection = rejection_for(failure)
        if rejection.code is None:
            resp = Reply(rejection.status, _OK_BODY, content_type=_JSON)
        else:
            headers = {"Retry-After": str(rejection.retry_after)} if rejection.retry_after else None
            resp = json_error(rejection.status, rejection.code, headers)
        if failure is TOO_LARGE:
            resp.force_close()  # the rest of the body is not read: the connection is done
        return self._answer(resp, route, rejection.outcome, log, started, decision)

    def _answer(
        self,
        resp: Reply,
        route: Route | None,
        outcome: str,
        log: dict[str, object],
        started: float,
        decision: Decision | None = None,
    ) -> Reply:
        self.record(resp.status, route, outcome, log, started, decision)
        return resp

    def record(
        self,
        status: int,
        route: Route | None,
        outcome: str,
        log: dict[str, object],
        started: float | None,
        decision: Decision | None = None,
    ) -> None:
        """The one place a request is accounted for: the outcome counter, the failures its
        checks found (by mode), the duration, and the access-log line."""
        name = route.name if route is not None else None
        if route is None:
            self.metrics.requests.labels(NO_ROUTE, outcome).inc()
        else:
            route.metrics.requests[outcome].inc()
        if decision is not None:
            assert route is not None
            mode = "enforce" if decision.enforce else "report-only"
            for f in decision.failures:
                route.metrics.failure(f.check, f.reason, mode)
            shown = decision.first_decisive or (decision.failures[0] if decision.failures else None)
            if shown is not None:
                log["check"] = shown.check
                log["reason"] = shown.reason
            if decision.secret_index is not None:
                log["secret"] = decision.secret_index
        elapsed = time.perf_counter() - started if started is not None else 0.0
        if route is not None:
            route.metrics.duration.observe(elapsed)
        if self.log.admit(name, outcome):  # a flood's lines are counted, not built
            if log["request_id"] is None:
                log["request_id"] = self._request_id()
            log["route"] = name
            log["outcome"] = outcome
            log["status"] = status
            log["duration_ms"] = round(elapsed * 1000, 3)
            self.log.write(log)


def _forwarded_proto(request: Request, peer_trusted: bool) -> str:
    """This listener's scheme, or what a trusted proxy in front says the client used."""
    if peer_trusted:
        claimed = request.headers.get("X-Forwarded-Proto", "").strip().lower()
        if claimed in ("http", "https"):
            return claimed
    return "https" if request.secure else "http"
