"""A config compiled into what the hot path uses; reloads build a new one and swap it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from gateway.config import Config, Limits, RouteConfig
from gateway.metrics import Metrics, RouteMetrics
from gateway.proxy.checks.accept import AcceptCheck
from gateway.proxy.checks.ratelimit import RateLimitCheck
from gateway.proxy.checks.replay import ReplayCheck
from gateway.proxy.checks.signature import SignatureCheck
from gateway.proxy.checks.source import SourceCheck
from gateway.proxy.clientip import NetSet
from gateway.schemes import SCHEMES
from gateway.schemes.handshake import Challenge, Handshake


@dataclass(frozen=True, slots=True)
class Route:
    config: RouteConfig
    name: str
    enforce: bool  # the route's mode is enforce (a canary may still pick report-only)
    enforce_percent: int
    source: SourceCheck | None
    signature: SignatureCheck | None
    metrics: RouteMetrics
    handshake: Handshake | None = None  # a GET verification handshake (Meta's), answered here
    challenge: Challenge | None = None  # a signed POST handshake, answered here once verified
    # Stateful checks: configuration only; their state lives in the Service's store.
    rate_limit: RateLimitCheck | None = None
    replay: ReplayCheck | None = None
    accept: AcceptCheck | None = None

    @property
    def allow_get(self) -> bool:
        """Only a route whose scheme has a GET handshake (Meta with a verify_token) answers GET."""
        return self.handshake is not None

    @property
    def needs_update(self) -> bool:
        """The verified body is parsed as a Telegram update (for accept, or update_id keys)."""
        return self.accept is not None or (self.replay is not None and self.replay.needs_update)

    def enforces(self, key: bytes) -> bool:
        """Enforce or not for one request. Under a canary the choice hangs on a stable key
        (the body bytes), so a sender's retry of the same update gets the same decision."""
        if not self.enforce:
            return False
        if self.enforce_percent >= 100:
            return True
        bucket = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") % 100
        return bucket < self.enforce_percent

    @property
    def canary(self) -> bool:
        return self.enforce and self.enforce_percent < 100


@dataclass(frozen=True)
class Snapshot:
    config: Config
    routes: dict[str, Route]  # by exact path
    trusted: NetSet


def compile_route(
    rc: RouteConfig, metrics: Metrics, upstream_timeout: float = Limits.upstream_timeout
) -> Route:
    source = SourceCheck(NetSet(rc.allow_sources)) if rc.allow_sources is not None else None
    signature = None
    handshake = None
    challenge = None
    if rc.verify is not None:
        scheme = SCHEMES[rc.verify.scheme]
        verifier = scheme.build(rc.verify)
        signature = SignatureCheck(verifier, allow_missing=rc.verify.on_missing == "allow")
        build_handshake = getattr(scheme, "build_handshake", None)
        if build_handshake is not None:
            handshake = build_handshake(rc.verify)
        build_challenge = getattr(scheme, "build_challenge", None)
        if build_challenge is not None:
            challenge = build_challenge(rc.verify)
    enforce = rc.mode == "enforce"
    return Route(
        config=rc,
        name=rc.name,
        enforce=enforce,
        enforce_percent=rc.enforce_percent,
        source=source,
        signature=signature,
        metrics=metrics.route(rc.name),
        handshake=handshake,
        challenge=challenge,
        rate_limit=RateLimitCheck(rc.name, rc.rate_limit) if rc.rate_limit is not None else None,
        replay=ReplayCheck(rc.name, rc.replay, upstream_timeout) if rc.replay is not None else None,
        accept=AcceptCheck(rc.accept) if rc.accept is not None else None,
    )


def compile_snapshot(config: Config, metrics: Metrics) -> Snapshot:
    timeout = config.limits.upstream_timeout
    routes = {rc.path: compile_route(rc, metrics, timeout) for rc in config.routes}
    return Snapshot(config=config, routes=routes, trusted=NetSet(config.trusted_proxies))


def publish_route_gauges(old: Snapshot | None, new: Snapshot, metrics: Metrics) -> None:
    """`webhook_gateway_route_enforced`: 1, 0, or the canary fraction."""
    for route in new.routes.values():
        value = route.enforce_percent / 100 if route.enforce else 0.0
        metrics.route_enforced.labels(route.name).set(value)
    if old is not None:
        gone = {r.name for r in old.routes.values()} - {r.name for r in new.routes.values()}
        for name in gone:
            metrics.remove_route(name)


class SnapshotHolder:
    """The one reference a reload swaps. Requests read `.current` once and keep it."""

    __slots__ = ("current",)

    def __init__(self, snapshot: Snapshot) -> None:
        self.current = snapshot
