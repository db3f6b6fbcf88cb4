"""The configuration as frozen objects. Each field of a section's dataclass is one config key,
and its default is the key's default: the builders read both from here."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.reader import Secret, config_key
from gateway.schemes.base import VerifyConfig

if TYPE_CHECKING:
    from gateway.config.redis import RedisTopology
    from gateway.telegram.config import TelegramConfig
    from gateway.tls.config import TlsConfig

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_SPOOL_PATH",
    "DELIVERIES",
    "MODES",
    "REPLAY_KEYS",
    "STORE_ERROR_POLICIES",
    "AcceptConfig",
    "Config",
    "Limits",
    "Listen",
    "Network",
    "Rate",
    "RateLimitConfig",
    "ReplayConfig",
    "RouteConfig",
    "Secret",
    "SpoolConfig",
    "StoreConfig",
    "Upstream",
    "VerifyConfig",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MODES = ("enforce", "report-only")
DELIVERIES = ("passthrough", "spool")
DEFAULT_SPOOL_PATH = "/var/lib/webhook-gateway/spool.db"
DEFAULT_CONFIG_PATH = "config/gateway.yaml"
REPLAY_KEYS = ("update_id", "body-sha256", "header:NAME")
STORE_ERROR_POLICIES = ("fail-closed", "fail-open")


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 1_048_576
    header_timeout: float = 10.0
    body_timeout: float = 15.0
    upstream_timeout: float = 25.0


@dataclass(frozen=True)
class Upstream:
    """`http://host:port/path` or `unix:/socket/path:/http/path`."""

    url: str  # full http URL used on the wire (host is "localhost" for unix sockets)
    unix_socket: str | None = None


@dataclass(frozen=True)
class Rate:
    count: int
    window: float  # seconds

    def __str__(self) -> str:
        return f"{self.count}/{self.window:g}s"


@dataclass(frozen=True)
class RateLimitConfig:
    """`rate_limit:` per route, per client IP (an IPv6 client by its /64)."""

    requests: Rate | None = None  # every request
    failures: Rate | None = None  # failed verifications; over it, the IP is refused before verifying
    # failed verifications over all clients; over it, a failed verification is answered 429
    route_failures: Rate | None = None


@dataclass(frozen=True)
class ReplayConfig:
    """`replay:` per route. `key` is update_id, body-sha256 or header (then `header` names it)."""

    key: str
    header: str | None = config_key(default=None, key=False)  # from `key: header:NAME`
    ttl: float = 86400.0  # Telegram retries an update for up to a day


@dataclass(frozen=True)
class AcceptConfig:
    """`accept:` per route: which verified Telegram updates reach the bot (None = any)."""

    updates: frozenset[str] | None = None
    chat_types: frozenset[str] | None = None


@dataclass(frozen=True)
class RouteConfig:
    name: str
    path: str
    upstream: Upstream
    mode: str
    verify: VerifyConfig | None
    allow_sources: tuple[Network, ...] | None  # None = any source
    enforce_percent: int = 100
    delivery: str = "passthrough"  # passthrough | spool
    spool_concurrency: int = 8  # ordering keys in flight at once for this route (spool only)
    spool_order_by: str = "auto"  # auto | route | chat | field:a.b (gateway/spool/order.py)
    rate_limit: RateLimitConfig | None = None
    replay: ReplayConfig | None = None
    accept: AcceptConfig | None = None
    telegram: TelegramConfig | None = None  # setWebhook / getWebhookInfo / watcher settings


@dataclass(frozen=True)
class SpoolConfig:
    """`spool:`: where and how spooled updates are kept (used by `delivery: spool` routes)."""

    path: str = DEFAULT_SPOOL_PATH
    max_bytes: int = 256 * 1024 * 1024  # pending + dead rows, bodies and headers
    max_items: int = 100_000  # pending + dead rows
    max_age: float = 7 * 86400.0  # a row older than this is dead-lettered after its next failure
    max_attempts: int = 5  # answers 4xx (not 408/429) this many times: dead letter
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    lock_timeout: float = 2.0  # wait this long for the write lock (or a slow disk), then 503
    dedup: bool = True  # a retry of a spooled update is answered 200 and not stored again
    dedup_window: float = 86400.0  # how long a spooled update's mark is kept


@dataclass(frozen=True, repr=False)
class StoreConfig:
    """`store:` where replay marks and rate windows live. Bound at start (a reload that
    changes it is refused), except `on_store_error`, which a reload may flip: it is left out of
    equality for that reason."""

    backend: str = "memory"  # memory | redis | redis-cluster
    redis_url: Secret | None = None  # from env:/file: only: it may hold a password
    # redis via `sentinel:`, or redis-cluster's `cluster:` (gateway/config/redis.py)
    topology: RedisTopology | None = field(default=None, metadata={"key": False})
    max_entries: int = 100_000  # memory: per table (replay marks, rate windows)
    key_prefix: str = "webhook-gateway:"  # redis: shared by every replica of one deployment
    timeout: float = 0.5  # redis: connect and per-command deadline
    on_store_error: str = field(default="fail-closed", compare=False)

    def __repr__(self) -> str:
        # Never the URL itself: it may carry a password.
        where = f", redis_url={self.redis_url.source}" if self.redis_url is not None else ""
        where += f", {self.topology}" if self.topology is not None else ""
        return f"StoreConfig(backend={self.backend}{where})"

    __str__ = __repr__


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Config:
    routes: tuple[RouteConfig, ...]
    listen: Listen = Listen("0.0.0.0", 8080)
    admin_listen: Listen = Listen("127.0.0.1", 9090)
    mode: str = "report-only"
    trusted_proxies: tuple[Network, ...] = ()
    limits: Limits = field(default_factory=Limits)
    shutdown_timeout: float = 20.0
    max_concurrency: int = 1024
    workers: int = 1  # processes sharing the public port (SO_REUSEPORT)
    spool: SpoolConfig | None = None  # None: no `spool:` section (defaults apply if a route spools)
    store: StoreConfig = field(default_factory=StoreConfig)
    tls: TlsConfig | None = None  # None: plain HTTP on `listen`
    source_path: str | None = field(default=None, compare=False, metadata={"key": False})

    @property
    def spool_settings(self) -> SpoolConfig:
        return self.spool if self.spool is not None else SpoolConfig()

    @property
    def spool_wanted(self) -> bool:
        """Open the spool: it is configured, or a route delivers through it."""
        return self.spool is not None or any(r.delivery == "spool" for r in self.routes)

    @property
    def spool_path(self) -> str:
        """Bound at start: a reload that changes it is refused (see `reload.RESTART_ONLY`)."""
        return self.spool_settings.path
