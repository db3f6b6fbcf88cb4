"""YAML -> frozen configuration objects.

Strict and pure: unknown keys are errors, every problem is collected with its location
(`routes[1].verify.secrets[0]: ...`), and the only outside reads are the secrets named by
`env:` / `file:` references. No secret value is ever put into an error message.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any

import yaml
from yarl import URL

if TYPE_CHECKING:
    from gateway.store.config import RedisTopology
    from gateway.telegram.config import TelegramConfig
    from gateway.tls.config import TlsConfig

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MODES = ("enforce", "report-only")
DELIVERIES = ("passthrough", "spool")
DEFAULT_SPOOL_PATH = "/var/lib/webhook-gateway/spool.db"
DEFAULT_CONFIG_PATH = "config/gateway.yaml"
CONFIG_ENV = "WEBHOOK_GATEWAY_CONFIG"
ROUTE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_RATE_RE = re.compile(r"^(\d+)\s*/\s*(\d*)(s|m|h)$")


class ConfigError(Exception):
    """Raised with every problem found; `problems` holds one `location: message` per entry."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class Problems:
    """Collects `location: message` lines instead of stopping at the first one."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, at: str, message: str) -> None:
        self.items.append(f"{at}: {message}" if at else message)

    def __bool__(self) -> bool:
        return bool(self.items)


# ---------------------------------------------------------------- frozen objects


@dataclass(frozen=True, repr=False)
class Secret:
    """One configured secret. `repr` and `str` never show the value."""

    index: int
    source: str  # e.g. "env:TG_SECRET": safe to show
    value: bytes

    def __repr__(self) -> str:
        return f"Secret(index={self.index}, source={self.source!r})"

    __str__ = __repr__


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

    @property
    def pool_key(self) -> str:
        return f"unix:{self.unix_socket}" if self.unix_socket else "tcp"


@dataclass(frozen=True)
class VerifyConfig:
    scheme: str
    secrets: tuple[Secret, ...]
    options: Any  # the scheme's own frozen options object
    on_missing: str = "reject"  # reject | allow


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


REPLAY_KEYS = ("update_id", "body-sha256", "header:NAME")


@dataclass(frozen=True)
class ReplayConfig:
    """`replay:` per route. `key` is update_id, body-sha256 or header (then `header` names it)."""

    key: str
    header: str | None = None
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
    spool_concurrency: int = 1  # deliveries in flight at once for this route (spool only)
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


STORE_ERROR_POLICIES = ("fail-closed", "fail-open")


@dataclass(frozen=True, repr=False)
class StoreConfig:
    """`store:` where replay marks and rate windows live. Bound at start (a reload that
    changes it is refused), except `on_store_error`, which a reload may flip: it is left out of
    equality for that reason."""

    backend: str = "memory"  # memory | redis | redis-cluster
    redis_url: Secret | None = None  # from env:/file: only: it may hold a password
    topology: RedisTopology | None = None  # redis via sentinel, or redis-cluster
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
    listen: Listen
    admin_listen: Listen
    mode: str
    trusted_proxies: tuple[Network, ...]
    limits: Limits
    routes: tuple[RouteConfig, ...]
    shutdown_timeout: float = 20.0
    max_concurrency: int = 1024
    allow_pure_python_parser: bool = False
    workers: int = 1  # processes sharing the public port (SO_REUSEPORT)
    spool: SpoolConfig | None = None  # None: no `spool:` section (defaults apply if a route spools)
    store: StoreConfig = field(default_factory=StoreConfig)
    tls: TlsConfig | None = None  # None: plain HTTP on `listen`
    source_path: str | None = field(default=None, compare=False)

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


# ---------------------------------------------------------------- scalar parsers


def parse_duration(value: Any) -> float:
    """`10s`, `500ms`, `5m`, `24h`, `1d`, or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 10s")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        m = _DURATION_RE.match(str(value).strip())
        if not m:
            raise ValueError(f"{value!r} is not a duration (examples: 500ms, 10s, 5m, 24h)")
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    if not math.isfinite(seconds):
        # YAML reads `.nan` and `.inf` as floats: a NaN deadline never compares, an infinite
        # one is no deadline at all.
        raise ValueError(f"a duration must be a finite number of seconds, not {value!r}")
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


def parse_rate(value: Any) -> tuple[int, float]:
    """`100/s`, `20/m`, `5/10s` -> (count, window seconds)."""
    m = _RATE_RE.match(str(value).strip())
    if not m:
        raise ValueError(f"{value!r} is not a rate (examples: 100/s, 20/m, 5/10s)")
    count = int(m.group(1))
    window = float(m.group(2) or 1) * _DURATION_UNITS[m.group(3)]
    if count <= 0 or window <= 0:
        raise ValueError("a rate must be positive")
    return count, window


def parse_listen(value: Any) -> Listen:
    text = str(value).strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        raise ValueError(f"{text!r} is not HOST:PORT (examples: 0.0.0.0:8080, [::]:8443)")
    return Listen(host, int(port))


def parse_network(value: Any) -> Network:
    text = str(value).strip()
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        if "has host bits set" in str(exc):
            fixed = ipaddress.ip_network(text, strict=False)
            raise ValueError(f"{text!r} has host bits set (did you mean {fixed}?)") from None
        raise ValueError(f"{text!r} is not an IP network in CIDR form") from None


def parse_upstream(value: Any) -> Upstream:
    text = str(value).strip()
    if text.startswith("unix:"):
        rest = text[len("unix:") :]
        cut = rest.rfind(":/")
        sock, http_path = (rest[:cut], rest[cut + 1 :]) if cut > 0 else (rest, "/")
        if not sock.startswith("/"):
            raise ValueError("a unix upstream is unix:/absolute/socket/path[:/http/path]")
        return Upstream(url=f"http://localhost{http_path}", unix_socket=sock)
    try:
        url = URL(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"{text!r}: an upstream is http(s)://host:port/path or unix:/socket:/path")
    if url.query_string or url.fragment:
        raise ValueError("an upstream URL carries no query or fragment")
    return Upstream(url=str(url))


def load_presets() -> dict[str, tuple[Network, ...]]:
    raw = yaml.safe_load(resources.files("gateway").joinpath("presets.yaml").read_text())
    return {name: tuple(ipaddress.ip_network(n) for n in nets) for name, nets in raw.items()}


PRESETS = load_presets()


# ---------------------------------------------------------------- secrets


def resolve_secret(ref: Any, at: str, problems: Problems, environ: Mapping[str, str]) -> bytes:
    """Resolve `env:NAME` or `file:PATH`; surrounding whitespace is stripped."""
    if not isinstance(ref, str) or not ref.startswith(("env:", "file:")):
        # Never echo the value: it may be the secret pasted inline.
        problems.add(at, "secrets come only from env:NAME or file:PATH (inline values refused)")
        return b""
    kind, _, name = ref.partition(":")
    if not name:
        problems.add(at, f"{kind}: needs a name")
        return b""
    if kind == "env":
        if name not in environ:
            problems.add(at, f"environment variable {name} is not set")
            return b""
        value = environ[name].encode("utf-8", "surrogateescape").strip()
    else:
        try:
            with open(name, "rb") as fh:
                value = fh.read().strip()
        except OSError as exc:
            problems.add(at, f"cannot read secret file {name}: {exc.strerror or exc}")
            return b""
    if not value:
        problems.add(at, f"secret from {ref} is empty")
    return value


# ---------------------------------------------------------------- structure helpers


class Reader:
    """Typed access to one mapping of the raw YAML, reporting with locations."""

    def __init__(
        self,
        raw: Any,
        at: str,
        problems: Problems,
        keys: set[str],
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.at = at
        self.problems = problems
        self.environ: Mapping[str, str] = environ if environ is not None else {}
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            problems.add(at, f"expected a mapping, got {type(raw).__name__}")
            raw = {}
        self.raw: dict[str, Any] = raw
        for key in raw:
            if key not in keys:
                hint = _closest(str(key), keys)
                problems.add(self.loc(str(key)), "unknown key" + (f" (did you mean {hint}?)" if hint else ""))

    def loc(self, key: str) -> str:
        return f"{self.at}.{key}" if self.at else key

    def has(self, key: str) -> bool:
        return key in self.raw

    def get(
        self, key: str, parse: Callable[[Any], Any], default: Any = None, *, required: bool = False
    ) -> Any:
        if key not in self.raw:
            if required:
                self.problems.add(self.loc(key), "is required")
            return default
        try:
            return parse(self.raw[key])
        except (ValueError, TypeError) as exc:
            self.problems.add(self.loc(key), str(exc))
            return default

    def secret(self, key: str, *, required: bool = False) -> bytes | None:
        """An `env:` / `file:` reference under `key`, resolved (None when absent or broken)."""
        if key not in self.raw:
            if required:
                self.problems.add(self.loc(key), "is required (env:NAME or file:PATH)")
            return None
        before = len(self.problems.items)
        value = resolve_secret(self.raw[key], self.loc(key), self.problems, self.environ)
        return value if len(self.problems.items) == before else None

    def list(self, key: str) -> list[Any] | None:
        if key not in self.raw or self.raw[key] is None:
            return None
        value = self.raw[key]
        if not isinstance(value, list):
            self.problems.add(self.loc(key), "expected a list")
            return None
        return value


def _closest(key: str, keys: set[str]) -> str | None:
    import difflib

    match = difflib.get_close_matches(key, sorted(keys), n=1, cutoff=0.75)
    return match[0] if match else None


def choice(*options: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in options:
            raise ValueError(f"{value!r} is not one of: {', '.join(options)}")
        return str(value)

    return parse


def int_range(lo: int, hi: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected a whole number from {lo} to {hi}")
        if not lo <= value <= hi:
            raise ValueError(f"{value} is outside {lo}..{hi}")
        return value

    return parse


def text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    return value


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


# ---------------------------------------------------------------- sections


def _limits(raw: Any, problems: Problems) -> Limits:
    r = Reader(
        raw,
        "limits",
        problems,
        {"max_body_bytes", "header_timeout", "body_timeout", "upstream_timeout"},
    )
    d = Limits()
    return Limits(
        max_body_bytes=r.get("max_body_bytes", int_range(1, 1 << 30), d.max_body_bytes),
        header_timeout=r.get("header_timeout", parse_duration, d.header_timeout),
        body_timeout=r.get("body_timeout", parse_duration, d.body_timeout),
        upstream_timeout=r.get("upstream_timeout", parse_duration, d.upstream_timeout),
    )


def _networks(values: list[Any] | None, at: str, problems: Problems, presets: bool) -> tuple[Network, ...]:
    out: list[Network] = []
    for i, item in enumerate(values or []):
        loc = f"{at}[{i}]"
        if presets and isinstance(item, str) and item in PRESETS:
            out.extend(PRESETS[item])
            continue
        try:
            out.append(parse_network(item))
        except ValueError as exc:
            names = ", ".join(sorted(PRESETS))
            problems.add(loc, f"{exc}" + (f"; presets: {names}" if presets else ""))
    return tuple(out)


def _verify(raw: Any, at: str, problems: Problems, environ: Mapping[str, str]) -> VerifyConfig | None:
    from gateway.schemes import SCHEMES

    if not isinstance(raw, dict):
        problems.add(at, "expected a mapping with at least `scheme` and `secrets`")
        return None
    scheme_name = raw.get("scheme")
    scheme = SCHEMES.get(scheme_name) if isinstance(scheme_name, str) else None
    common = {"scheme", "secrets", "on_missing"}
    if scheme is None:
        problems.add(f"{at}.scheme", f"{scheme_name!r} is not a scheme; known: {', '.join(sorted(SCHEMES))}")
        return None
    r = Reader(raw, at, problems, common | set(scheme.option_keys), environ)
    on_missing = r.get("on_missing", choice("reject", "allow"), "reject")
    refs = r.list("secrets")
    if not refs:
        problems.add(f"{at}.secrets", "at least one secret (env:NAME or file:PATH) is required")
        refs = []
    secrets: list[Secret] = []
    for i, ref in enumerate(refs):
        loc = f"{at}.secrets[{i}]"
        before = len(problems.items)
        value = resolve_secret(ref, loc, problems, environ)
        if len(problems.items) == before:
            problem = scheme.check_secret(value)
            if problem:
                problems.add(loc, f"secret from {ref}: {problem}")
        secrets.append(Secret(i, str(ref) if isinstance(ref, str) else "inline", value))
    options = scheme.parse_options(r, problems)
    return VerifyConfig(scheme=scheme_name, secrets=tuple(secrets), options=options, on_missing=on_missing)


_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")


def _rate(value: Any) -> Rate:
    count, window = parse_rate(value)
    return Rate(count, window)


def _rate_limit(raw: Any, at: str, problems: Problems) -> RateLimitConfig:
    r = Reader(raw, at, problems, {"requests", "failures"})
    requests = r.get("requests", _rate)
    failures = r.get("failures", _rate)
    if not r.has("requests") and not r.has("failures"):
        problems.add(at, "give `requests` and/or `failures` (e.g. {requests: 100/s, failures: 5/m})")
    return RateLimitConfig(requests=requests, failures=failures)


def _replay(raw: Any, at: str, problems: Problems, verify: VerifyConfig | None) -> ReplayConfig:
    from gateway.schemes import SCHEMES

    r = Reader(raw, at, problems, {"key", "ttl"})
    if verify is None:
        # An unverified request must never touch the store: anyone could mark an id as seen
        # ahead of the sender and make the gateway drop the genuine update.
        problems.add(at, "needs `verify:` on the route: replay marks are written only for verified requests")
    default = "body-sha256"
    scheme = SCHEMES.get(verify.scheme) if verify is not None else None
    if scheme is not None and scheme.name == "telegram":
        default = "update_id"
    elif scheme is not None and scheme.replay_header and getattr(scheme, "replay_header_signed", False):
        # Only a header the signature covers: an unsigned one (X-GitHub-Delivery, ...) could be
        # changed by whoever replays a captured request. The body hash catches those senders'
        # retries just as well: they repeat the same bytes.
        default = f"header:{scheme.replay_header}"
    key = r.get("key", text, default)
    header = None
    if key.startswith("header:"):
        header = key[len("header:") :].strip()
        if not _HEADER_NAME_RE.match(header):
            problems.add(r.loc("key"), f"{key!r}: header:NAME needs a valid header name")
        key = "header"
    elif key not in REPLAY_KEYS:
        problems.add(r.loc("key"), f"{key!r} is not one of: {', '.join(REPLAY_KEYS)}")
    ttl = r.get("ttl", parse_duration, 86400.0)
    if ttl < 1:
        problems.add(r.loc("ttl"), "must be at least 1s")
    return ReplayConfig(key=key, header=header, ttl=ttl)


def _names(r: Reader, key: str, known: frozenset[str]) -> frozenset[str] | None:
    values = r.list(key)  # reports a value that is not a list
    if values is None:
        if r.has(key) and r.raw[key] is None:
            r.problems.add(r.loc(key), "expected a list")
        return None
    if not values:
        r.problems.add(r.loc(key), "an empty list would filter every update; omit the key to accept any")
    out: set[str] = set()
    for i, item in enumerate(values):
        if not isinstance(item, str) or item not in known:
            hint = _closest(str(item), set(known))
            more = f" (did you mean {hint}?)" if hint else f"; known: {', '.join(sorted(known))}"
            r.problems.add(f"{r.loc(key)}[{i}]", f"{item!r} is not a Telegram name{more}")
            continue
        out.add(item)
    return frozenset(out)


def _accept(raw: Any, at: str, problems: Problems) -> AcceptConfig:
    from gateway.updates import CHAT_TYPES, UPDATE_TYPES

    r = Reader(raw, at, problems, {"updates", "chat_types"})
    if not r.has("updates") and not r.has("chat_types"):
        problems.add(at, "give `updates` and/or `chat_types` (e.g. {updates: [message, callback_query]})")
    return AcceptConfig(
        updates=_names(r, "updates", UPDATE_TYPES), chat_types=_names(r, "chat_types", CHAT_TYPES)
    )


ROUTE_KEYS = {
    "name",
    "path",
    "upstream",
    "mode",
    "verify",
    "allow_sources",
    "enforce_percent",
    "delivery",
    "spool_concurrency",
    "rate_limit",
    "replay",
    "accept",
    "telegram",
}


def _route(
    raw: Any, at: str, problems: Problems, default_mode: str, environ: Mapping[str, str]
) -> RouteConfig | None:
    r = Reader(raw, at, problems, ROUTE_KEYS)
    name = r.get("name", text, "", required=True)
    if name and not ROUTE_NAME_RE.match(name):
        problems.add(r.loc("name"), f"{name!r}: use letters, digits, '_', '.', '-' (at most 63)")
    path = r.get("path", text, "", required=True)
    if path and (not path.startswith("/") or "?" in path or "#" in path or " " in path):
        problems.add(r.loc("path"), f"{path!r} must start with / and hold no query, fragment or space")
    upstream = r.get("upstream", parse_upstream, None, required=True)
    mode = r.get("mode", choice(*MODES), default_mode)
    verify = _verify(r.raw["verify"], r.loc("verify"), problems, environ) if r.has("verify") else None
    sources = r.list("allow_sources")
    allow = (
        _networks(sources, r.loc("allow_sources"), problems, presets=True) if sources is not None else None
    )
    if sources is not None and not sources:
        problems.add(
            r.loc("allow_sources"),
            "an empty list would refuse everyone; omit the key to allow any source",
        )
    percent = r.get("enforce_percent", int_range(1, 100), 100)
    delivery = r.get("delivery", choice(*DELIVERIES), "passthrough")
    concurrency = r.get("spool_concurrency", int_range(1, 64), 1)
    if r.has("spool_concurrency") and delivery != "spool":
        problems.add(r.loc("spool_concurrency"), "applies only to a route with delivery: spool")
    rate_limit = (
        _rate_limit(r.raw["rate_limit"], r.loc("rate_limit"), problems) if r.has("rate_limit") else None
    )
    replay = _replay(r.raw["replay"], r.loc("replay"), problems, verify) if r.has("replay") else None
    accept = _accept(r.raw["accept"], r.loc("accept"), problems) if r.has("accept") else None
    telegram = None
    if r.has("telegram"):
        from gateway.telegram.config import parse_telegram

        telegram = parse_telegram(r.raw["telegram"], r.loc("telegram"), problems, environ)
    if upstream is None:
        return None
    return RouteConfig(
        name=name,
        path=path,
        upstream=upstream,
        mode=mode,
        verify=verify,
        allow_sources=allow,
        enforce_percent=percent,
        delivery=delivery,
        spool_concurrency=concurrency,
        rate_limit=rate_limit,
        replay=replay,
        accept=accept,
        telegram=telegram,
    )


SPOOL_KEYS = {
    "path",
    "max_bytes",
    "max_items",
    "max_age",
    "max_attempts",
    "backoff_initial",
    "backoff_max",
    "lock_timeout",
    "dedup",
    "dedup_window",
}


def _spool(raw: Any, problems: Problems) -> SpoolConfig:
    r = Reader(raw, "spool", problems, SPOOL_KEYS)
    d = SpoolConfig()
    path = r.get("path", text, d.path)
    if not path or path.endswith("/"):
        problems.add(r.loc("path"), f"{path!r} must name a database file (e.g. {d.path})")
    initial = r.get("backoff_initial", parse_duration, d.backoff_initial)
    cap = r.get("backoff_max", parse_duration, d.backoff_max)
    if cap < initial:
        problems.add(r.loc("backoff_max"), "must not be smaller than backoff_initial")
    return SpoolConfig(
        path=path,
        max_bytes=r.get("max_bytes", int_range(1024, 1 << 50), d.max_bytes),
        max_items=r.get("max_items", int_range(1, 1 << 40), d.max_items),
        max_age=r.get("max_age", parse_duration, d.max_age),
        max_attempts=r.get("max_attempts", int_range(1, 1000), d.max_attempts),
        backoff_initial=initial,
        backoff_max=cap,
        lock_timeout=r.get("lock_timeout", parse_duration, d.lock_timeout),
        dedup=r.get("dedup", boolean, d.dedup),
        dedup_window=r.get("dedup_window", parse_duration, d.dedup_window),
    )


STORE_KEYS = {
    "backend",
    "redis_url",
    "sentinel",
    "cluster",
    "on_store_error",
    "max_entries",
    "key_prefix",
    "timeout",
}
_REDIS_ONLY = ("redis_url", "key_prefix", "timeout", "sentinel", "cluster")


def _redis_url_problem(url: bytes) -> str | None:
    """What is wrong with a Redis URL, said without repeating it (it may hold a password)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url.decode("utf-8"))
        _ = parts.port  # raises for a port that is not a number
    except (UnicodeDecodeError, ValueError):
        return "is not a valid URL"
    if parts.scheme not in ("redis", "rediss", "unix"):
        return "must be a redis://, rediss:// or unix:// URL"
    if parts.scheme != "unix" and not parts.hostname:
        return "names no host"
    if parts.scheme == "unix" and not parts.path:
        return "names no socket path"
    return None


def _store(raw: Any, problems: Problems, environ: Mapping[str, str]) -> StoreConfig:
    r = Reader(raw, "store", problems, STORE_KEYS)
    d = StoreConfig()
    backend = r.get("backend", choice("memory", "redis", "redis-cluster"), d.backend)
    url: Secret | None = None
    topology = None
    if backend == "redis-cluster" or (backend == "redis" and r.has("sentinel")):
        # Several nodes, named by `sentinel:` / `cluster:` instead of redis_url.
        from gateway.store.config import parse_topology

        topology = parse_topology(r, backend, problems, environ)
    if backend != "memory":
        if backend == "redis-cluster" or r.has("sentinel"):
            pass
        elif not r.has("redis_url"):
            problems.add(r.loc("redis_url"), "is required with backend: redis (e.g. env:REDIS_URL)")
        else:
            ref = r.raw["redis_url"]
            before = len(problems.items)
            value = resolve_secret(ref, r.loc("redis_url"), problems, environ)
            if len(problems.items) == before:
                problem = _redis_url_problem(value)
                if problem:
                    problems.add(r.loc("redis_url"), f"the value of {ref} {problem}")
            url = Secret(0, str(ref) if isinstance(ref, str) else "inline", value)
        import importlib.util

        if importlib.util.find_spec("redis") is None:
            problems.add(
                r.loc("backend"),
                "redis needs the Python package redis: pip install 'webhook-gateway[redis]'",
            )
        if r.has("max_entries"):
            problems.add(r.loc("max_entries"), "applies to backend: memory only")
        if backend == "redis" and r.has("cluster"):
            problems.add(r.loc("cluster"), "applies to backend: redis-cluster only")
    else:
        for key in _REDIS_ONLY:
            if r.has(key):
                problems.add(r.loc(key), "applies to backend: redis only")
    return StoreConfig(
        backend=backend,
        redis_url=url,
        topology=topology,
        max_entries=r.get("max_entries", int_range(1, 100_000_000), d.max_entries),
        key_prefix=r.get("key_prefix", text, d.key_prefix),
        timeout=r.get("timeout", parse_duration, d.timeout),
        on_store_error=r.get("on_store_error", choice(*STORE_ERROR_POLICIES), d.on_store_error),
    )


TOP_KEYS = {
    "listen",
    "admin_listen",
    "mode",
    "trusted_proxies",
    "limits",
    "routes",
    "shutdown_timeout",
    "max_concurrency",
    "allow_pure_python_parser",
    "workers",
    "spool",
    "store",
    "tls",
}


def build(raw: Any, environ: Mapping[str, str] | None = None, source_path: str | None = None) -> Config:
    """Turn parsed YAML into a `Config`, or raise `ConfigError` with every problem."""
    env = os.environ if environ is None else environ
    problems = Problems()
    r = Reader(raw, "", problems, TOP_KEYS)
    listen = r.get("listen", parse_listen, Listen("0.0.0.0", 8080))
    admin = r.get("admin_listen", parse_listen, Listen("127.0.0.1", 9090))
    if listen.port and listen.port == admin.port and listen.host == admin.host:
        problems.add("admin_listen", "must differ from listen: admin endpoints never share the public port")
    mode = r.get("mode", choice(*MODES), "report-only")
    trusted = _networks(r.list("trusted_proxies"), "trusted_proxies", problems, presets=False)
    for i, net in enumerate(trusted):
        if net.prefixlen == 0:
            problems.add(
                f"trusted_proxies[{i}]",
                f"{net} trusts X-Forwarded-For from every address, so any client could pick its own IP",
            )
    limits = _limits(r.raw.get("limits"), problems)
    shutdown = r.get("shutdown_timeout", parse_duration, 20.0)
    max_conc = r.get("max_concurrency", int_range(1, 1_000_000), 1024)
    pure = r.get("allow_pure_python_parser", boolean, False)
    workers = r.get("workers", int_range(1, 64), 1)
    if workers > 1 and listen.port == 0:
        problems.add("workers", "several workers share one fixed port: `listen` cannot use port 0")
    spool = _spool(r.raw["spool"], problems) if r.has("spool") else None
    store = _store(r.raw.get("store"), problems, env)
    tls = None
    if r.has("tls"):
        from gateway.tls.config import parse_tls

        tls = parse_tls(r.raw["tls"], problems)
    routes: list[RouteConfig] = []
    raw_routes = r.list("routes")
    if not raw_routes:
        problems.add("routes", "at least one route is required")
    names: dict[str, int] = {}
    paths: dict[str, int] = {}
    for i, raw_route in enumerate(raw_routes or []):
        at = f"routes[{i}]"
        route = _route(raw_route, at, problems, mode, env)
        if route is None:
            continue
        if route.name in names:
            problems.add(f"{at}.name", f"{route.name!r} is already used by routes[{names[route.name]}]")
        if route.path in paths:
            problems.add(f"{at}.path", f"{route.path!r} is already used by routes[{paths[route.path]}]")
        names.setdefault(route.name, i)
        paths.setdefault(route.path, i)
        routes.append(route)
    if (
        workers > 1
        and store.backend == "memory"
        and any(rt.replay is not None or rt.rate_limit is not None for rt in routes)
    ):
        # In memory, each worker would keep its own replay marks and rate windows: a duplicate
        # or a burst spread over the workers would get through.
        problems.add("workers", "replay and rate limits across workers need `store: {backend: redis}`")
    if workers > 1 and (spool is not None or any(rt.delivery == "spool" for rt in routes)):
        # Each worker would run its own delivery loop over the one database.
        problems.add("workers", "the spool is owned by one process: use workers: 1 with a spool")
    if problems:
        raise ConfigError(problems.items)
    return Config(
        listen=listen,
        admin_listen=admin,
        mode=mode,
        trusted_proxies=trusted,
        limits=limits,
        routes=tuple(routes),
        shutdown_timeout=shutdown,
        max_concurrency=max_conc,
        allow_pure_python_parser=pure,
        workers=workers,
        spool=spool,
        store=store,
        tls=tls,
        source_path=source_path,
    )


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (YAML would silently keep the last one)."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (line {mark.line + 1})", mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def parse_yaml(text_: str, name: str = "config") -> Any:
    try:
        return yaml.load(text_, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{where}: invalid YAML: {problem}"]) from None


def read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config: {exc.strerror or exc}"]) from None


def load(path: str, environ: Mapping[str, str] | None = None) -> Config:
    data = read_bytes(path)
    try:
        decoded = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: config is not UTF-8"]) from None
    return build(parse_yaml(decoded, path), environ, source_path=path)


def default_path(explicit: str | None, environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return explicit or env.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH
