"""Every metric the gateway exports, in one place, on an injected registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

OUTCOMES = (
    "forwarded",
    "rejected",
    "would_reject",
    "duplicate",
    "rate_limited",
    "spooled",
    "upstream_error",
    "not_found",
    "filtered",
    "bad_request",
    "method_not_allowed",  # a method the route does not take (405)
    "overloaded",
    "spool_error",
    "handshake",  # a GET verification handshake answered by the gateway (Meta)
    "store_unavailable",  # replay / rate-limit store unreachable under fail-closed (503)
)
CHECKS = ("source", "signature", "replay", "rate_limit", "body")
REASONS = (
    "missing",
    "mismatch",
    "malformed",
    "stale",
    "not_allowed",
    "too_large",
    "error",
    "requests",  # rate_limit: the route's request rate for this client IP
    "failures",  # rate_limit: the route's verification-failure rate for this client IP
    "route_failures",  # rate_limit: the route's verification-failure rate over all clients
    "duplicate",  # replay: already delivered
    "in_flight",  # replay: the same update is being delivered right now
    "unavailable",  # replay, rate_limit: the store did not answer
)
_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
)
NO_ROUTE = "-"
# Set for each of `workers: N`: prometheus_client then keeps values in shared files there.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "webhook_gateway_requests",
            "Requests by route and outcome.",
            ["route", "outcome"],
            registry=r,
        )
        self.check_failures = Counter(
            "webhook_gateway_check_failures",
            "Failed checks, counted in both modes (mode says whether the route enforced).",
            ["route", "check", "reason", "mode"],
            registry=r,
        )
        self.request_duration = Histogram(
            "webhook_gateway_request_duration_seconds",
            "Whole request, from handler start to response.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_duration = Histogram(
            "webhook_gateway_upstream_duration_seconds",
            "Upstream part of a forwarded request.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.route_enforced = Gauge(
            "webhook_gateway_route_enforced",
            "1 when the route enforces, 0 in report-only, the fraction under a canary.",
            ["route"],
            registry=r,
            multiprocess_mode="mostrecent",  # with workers: every worker sets the same value
        )
        self.secret_matches = Counter(
            "webhook_gateway_secret_matches",
            "Which configured secret matched, by its position in the list (from 0).",
            ["route", "secret"],
            registry=r,
        )
        self.config_reloads = Counter(
            "webhook_gateway_config_reloads", "Config reloads by result.", ["result"], registry=r
        )
        self.config_reload_waits = Counter(
            "webhook_gateway_config_reload_settle_waits",
            "A signal-triggered reload found the file still changing and waited another settle interval.",
            registry=r,
        )
        self.last_reload_success = Gauge(
            "webhook_gateway_config_last_reload_success_timestamp_seconds",
            "Unix time of the last config load that succeeded.",
            registry=r,
            multiprocess_mode="max",
        )
        self.last_reload_ok = Gauge(
            "webhook_gateway_config_last_reload_successful",
            "1 when the latest attempt to load the config file succeeded, 0 while a refused edit "
            "is pending (the previous config keeps serving).",
            registry=r,
            multiprocess_mode="min",  # with workers: 0 if any worker refused the file
        )
        self.inflight = Gauge(
            "webhook_gateway_inflight_requests",
            "Requests being handled now.",
            registry=r,
            multiprocess_mode="livesum",  # with workers: the sum over the live ones
        )
        self.listener_errors = Counter(
            "webhook_gateway_listener_errors",
            "Connections the public listener closed after an error of its own, by where it happened.",
            ["where"],
            registry=r,
        )
        self.tls_certificate_expiry = Gauge(
            "webhook_gateway_tls_certificate_expiry_timestamp_seconds",
            "notAfter of the certificate served for each server name (SAN), as unix time.",
            ["server_name"],
            registry=r,
        )
        self.tls_reloads = Counter(
            "webhook_gateway_tls_certificate_reloads",
            "Certificate files re-read after a change, by result (error: the old pair is kept).",
            ["result"],
            registry=r,
        )
        self.telegram_pending = Gauge(
            "webhook_gateway_telegram_pending_updates",
            "pending_update_count from getWebhookInfo: updates Telegram has not delivered yet.",
            ["route"],
            registry=r,
        )
        self.telegram_last_error = Gauge(
            "webhook_gateway_telegram_last_error_timestamp_seconds",
            "last_error_date from getWebhookInfo: Telegram's last failed delivery (0: none).",
            ["route"],
            registry=r,
        )
        self.telegram_url_matches = Gauge(
            "webhook_gateway_telegram_webhook_url_matches",
            "1 when the bot's webhook URL is the route's expected_url, 0 when it points elsewhere.",
            ["route"],
            registry=r,
        )
        self.telegram_watch_up = Gauge(
            "webhook_gateway_telegram_watch_up",
            "1 when the last getWebhookInfo call succeeded, 0 when it failed (token, network).",
            ["route"],
            registry=r,
        )
        self.store_errors = Counter(
            "webhook_gateway_store_errors",
            "Store operations that failed (Redis unreachable or too slow), by route and operation:"
            " rate, reserve, deliver, release.",
            ["route", "operation"],
            registry=r,
        )
        self.store_evictions = Counter(
            "webhook_gateway_store_evictions",
            "Memory store: live entries dropped because the table was full, by table.",
            ["table"],
            registry=r,
        )
        self.store_entries = Gauge(
            "webhook_gateway_store_entries",
            "Memory store: entries held, by table (replay, rate_limit).",
            ["table"],
            registry=r,
        )
        # Redis store state, from a probe once a second, four times while down (gateway/store/redis.py).
        self.store_up = Gauge(
            "webhook_gateway_store_up",
            "1 when the last probe of the Redis store succeeded (every cluster master answered),"
            " 0 while it is unreachable or failing over.",
            registry=r,
            multiprocess_mode="min",  # with workers: 0 if any worker cannot reach it
        )
        self.store_state = Gauge(
            "webhook_gateway_store_state",
            "The Redis store's state by the last probe, 1 for the current one: connected,"
            " failing_over (the master does not answer and Sentinel / the cluster holds it as"
            " down: a replica is being promoted), unreachable (does not answer, no failover known).",
            ["state"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.store_master = Gauge(
            "webhook_gateway_store_master",
            "1 for each Redis master the store writes to now (sentinel: the one the sentinels"
            " name; cluster: every master), 0 for one it wrote to before.",
            ["address"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.store_failovers = Counter(
            "webhook_gateway_store_failovers",
            "Times the probe found a new Redis master (a Sentinel or Cluster failover).",
            registry=r,
        )
        for result in ("success", "error"):
            self.config_reloads.labels(result)
            self.tls_reloads.labels(result)
        self.spool = SpoolMetrics(r)

    def route(self, name: str) -> RouteMetrics:
        """Pre-bound children for one route, so the hot path does no label lookups."""
        req = {o: self.requests.labels(name, o) for o in OUTCOMES}
        return RouteMetrics(
            name=name,
            requests=req,
            duration=self.request_duration.labels(name),
            upstream=self.upstream_duration.labels(name),
            metrics=self,
        )

    def remove_route(self, name: str) -> None:
        """Drop the enforced gauge of a route a reload removed (counters keep their history)."""
        try:
            self.route_enforced.remove(name)
        except KeyError:
            pass


@dataclass
class RouteMetrics:
    name: str
    requests: dict[str, Counter]
    duration: Histogram
    upstream: Histogram
    metrics: Metrics
    # Children bound on first use: `labels()` hashes and locks on every call, and a flood of
    # forged requests calls this for each one.
    _failures: dict[tuple[str, str, str], Counter] = field(default_factory=dict)
    _secrets: dict[int, Counter] = field(default_factory=dict)

    def failure(self, check: str, reason: str, mode: str) -> None:
        child = self._failures.get((check, reason, mode))
        if child is None:
            child = self._failures[(check, reason, mode)] = self.metrics.check_failures.labels(
                self.name, check, reason, mode
            )
        child.inc()

    def secret_matched(self, index: int) -> None:
        child = self._secrets.get(index)
        if child is None:
            child = self._secrets[index] = self.metrics.secret_matches.labels(self.name, str(index))
        child.inc()


# With `workers: N`, spool gauges are read from the one shared database by every worker: the
# latest reading stands for all (summing them would count each row N times).
_FROM_DB: Final = "livemostrecent"

# Results of one spooled delivery attempt.
SPOOL_RESULTS = ("delivered", "retry", "dead_letter", "error")


class SpoolMetrics:
    """Store-and-forward (`delivery: spool`). Gauges are refreshed from the database."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.depth = Gauge(
            "webhook_gateway_spool_depth",
            "Updates spooled and not yet delivered.",
            ["route"],
            registry=r,
            multiprocess_mode=_FROM_DB,
        )
        self.oldest_age = Gauge(
            "webhook_gateway_spool_oldest_age_seconds",
            "Age of the oldest pending update (0 when none is pending).",
            ["route"],
            registry=r,
            multiprocess_mode=_FROM_DB,
        )
        self.dead = Gauge(
            "webhook_gateway_spool_dead_rows",
            "Dead-letter rows kept in the spool.",
            ["route"],
            registry=r,
            multiprocess_mode=_FROM_DB,
        )
        self.deliveries = Counter(
            "webhook_gateway_spool_deliveries",
            "Delivery attempts of spooled updates by result: delivered, retry, dead_letter, error.",
            ["route", "result"],
            registry=r,
        )
        self.probe_recoveries = Counter(
            "webhook_gateway_spool_probe_recoveries",
            "The upstream accepted connections again after refusing them: the route's backoff was cut.",
            ["route"],
            registry=r,
        )
        self.dead_letters = Counter(
            "webhook_gateway_dead_letters", "Updates moved to the dead-letter table.", ["route"], registry=r
        )
        self.write_failures = Counter(
            "webhook_gateway_spool_write_failures",
            "Updates the spool could not store (the sender got 503), by reason: full, disk_full,"
            " locked, timeout, unavailable, error.",
            ["route", "reason"],
            registry=r,
        )
        self.available = Gauge(
            "webhook_gateway_spool_available",
            "1 when the spool database is open and writable.",
            registry=r,
            multiprocess_mode="livemin",  # with workers: 0 if any live worker cannot write
        )
        self.bytes = Gauge(
            "webhook_gateway_spool_bytes",
            "Bytes held by pending and dead rows.",
            registry=r,
            multiprocess_mode=_FROM_DB,
        )
        self.items = Gauge(
            "webhook_gateway_spool_items", "Pending and dead rows.", registry=r, multiprocess_mode=_FROM_DB
        )
