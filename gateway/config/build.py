"""Raw YAML -> `Config`: one builder per section, every problem collected with its location
(`routes[1].verify.secrets[0]: ...`). The only outside reads are the secrets named by `env:` /
`file:` references; no secret value is ever put into a message. Keys and defaults are the
dataclass fields of `model`."""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from gateway.config.model import (
    DELIVERIES,
    MODES,
    REPLAY_KEYS,
    STORE_ERROR_POLICIES,
    AcceptConfig,
    Config,
    Limits,
    Network,
    Rate,
    RateLimitConfig,
    ReplayConfig,
    RouteConfig,
    Secret,
    SpoolConfig,
    StoreConfig,
    VerifyConfig,
)
from gateway.config.redis import TOPOLOGY_KEYS, parse_topology
from gateway.config.values import PRESETS, parse_listen, parse_network, parse_order_by, parse_upstream
from gateway.reader import (
    ConfigError,
    Problems,
    Reader,
    boolean,
    choice,
    closest,
    defaults_of,
    int_range,
    keys_of,
    parse_duration,
    parse_rate,
    resolve_secret,
    secret_hint,
    text,
)
from gateway.schemes import SCHEMES
from gateway.telegram.config import parse_telegram
from gateway.tls.config import parse_tls
from gateway.updates import CHAT_TYPES, UPDATE_TYPES

ROUTE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
# Accepted and ignored, with a warning: the public listener never used aiohttp's parser.
DEPRECATED_KEYS = {
    "allow_pure_python_parser": "no longer has any effect (the public listener always runs llhttp); "
    "remove it: it will be refused in the next release",
}


def _limits(raw: Any, problems: Problems) -> Limits:
    r = Reader(raw, "limits", problems, keys_of(Limits))
    d = defaults_of(Limits)
    return Limits(
        max_body_bytes=r.get("max_body_bytes", int_range(1, 1 << 30), d["max_body_bytes"]),
        header_timeout=r.get("header_timeout", parse_duration, d["header_timeout"]),
        body_timeout=r.get("body_timeout", parse_duration, d["body_timeout"]),
        upstream_timeout=r.get("upstream_timeout", parse_duration, d["upstream_timeout"]),
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


def _secret_refs(r: Reader, at: str) -> list[Any]:
    """The `secrets:` list, with one message (and the env: hint) for the usual slips."""
    value = r.raw.get("secrets")
    if "secrets" not in r.raw:
        if "secrets" not in r.misspelt:
            r.problems.add(f"{at}.secrets", "at least one secret (env:NAME or file:PATH) is required")
        return []
    if isinstance(value, str):
        # A single reference where a list is expected: say how to write it, in one message.
        shell = secret_hint(value)
        if shell:
            name = shell.split("env:", 1)[1].split(" ", 1)[0]
            how = f"write secrets: [env:{name}] (YAML does not expand ${name})"
        elif value.startswith(("env:", "file:")):
            how = f"write secrets: [{value}]"
        else:
            how = "each an env:NAME or file:PATH reference (inline values refused)"
        r.problems.add(f"{at}.secrets", f"expected a list of secret references: {how}")
        return []
    refs = r.list("secrets")
    if not refs:
        if refs is not None or value is None:
            r.problems.add(f"{at}.secrets", "at least one secret (env:NAME or file:PATH) is required")
        return []
    return refs


def _verify(raw: Any, at: str, problems: Problems, environ: Mapping[str, str]) -> VerifyConfig | None:
    if not isinstance(raw, dict):
        problems.add(at, "expected a mapping with at least `scheme` and `secrets`")
        return None
    scheme_name = raw.get("scheme")
    scheme = SCHEMES.get(scheme_name) if isinstance(scheme_name, str) else None
    if scheme is None:
        hint = closest(scheme_name, SCHEMES) if isinstance(scheme_name, str) else None
        more = f" (did you mean {hint}?)" if hint else f"; known: {', '.join(sorted(SCHEMES))}"
        problems.add(f"{at}.scheme", f"{scheme_name!r} is not a scheme{more}")
        return None
    r = Reader(raw, at, problems, (keys_of(VerifyConfig) - {"options"}) | set(scheme.option_keys), environ)
    on_missing = r.get("on_missing", choice("reject", "allow"), defaults_of(VerifyConfig)["on_missing"])
    secrets: list[Secret] = []
    # Asymmetric schemes verify with public keys (their `public_keys:` option): no secret needed.
    needs_secrets = getattr(scheme, "secrets_required", True)
    for i, ref in enumerate(_secret_refs(r, at) if needs_secrets or r.has("secrets") else []):
        loc = f"{at}.secrets[{i}]"
        before = len(problems)
        value = resolve_secret(ref, loc, problems, environ)
        if len(problems) == before:
            problem = scheme.check_secret(value)
            if problem:
                problems.add(loc, f"secret from {ref}: {problem}")
        secrets.append(Secret(i, str(ref) if isinstance(ref, str) else "inline", value))
    options = scheme.parse_options(r, problems)
    return VerifyConfig(scheme=scheme.name, secrets=tuple(secrets), options=options, on_missing=on_missing)


def _rate(value: Any) -> Rate:
    count, window = parse_rate(value)
    return Rate(count, window)


def _rate_limit(raw: Any, at: str, problems: Problems) -> RateLimitConfig:
    r = Reader(raw, at, problems, keys_of(RateLimitConfig))
    requests = r.get("requests", _rate)
    failures = r.get("failures", _rate)
    route_failures = r.get("route_failures", _rate)
    if not (r.has("requests") or r.has("failures") or r.has("route_failures")) and not r.misspelt:
        problems.add(at, "give `requests` and/or `failures` (e.g. {requests: 100/s, failures: 5/m})")
    return RateLimitConfig(requests=requests, failures=failures, route_failures=route_failures)


def _replay(raw: Any, at: str, problems: Problems, verify: VerifyConfig | None) -> ReplayConfig:
    r = Reader(raw, at, problems, keys_of(ReplayConfig))
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
        hint = closest(key, REPLAY_KEYS)
        more = f" (did you mean {hint}?)" if hint else ""
        problems.add(r.loc("key"), f"{key!r} is not one of: {', '.join(REPLAY_KEYS)}{more}")
    ttl = r.get("ttl", parse_duration, defaults_of(ReplayConfig)["ttl"])
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
            hint = closest(str(item), known)
            more = f" (did you mean {hint}?)" if hint else f"; known: {', '.join(sorted(known))}"
            r.problems.add(f"{r.loc(key)}[{i}]", f"{item!r} is not a Telegram name{more}")
            continue
        out.add(item)
    return frozenset(out)


def _accept(raw: Any, at: str, problems: Problems) -> AcceptConfig:
    r = Reader(raw, at, problems, keys_of(AcceptConfig))
    if not r.has("updates") and not r.has("chat_types") and not r.misspelt:
        problems.add(at, "give `updates` and/or `chat_types` (e.g. {updates: [message, callback_query]})")
    return AcceptConfig(
        updates=_names(r, "updates", UPDATE_TYPES), chat_types=_names(r, "chat_types", CHAT_TYPES)
    )


def _route(
    raw: Any, at: str, problems: Problems, default_mode: str, environ: Mapping[str, str]
) -> RouteConfig | None:
    r = Reader(raw, at, problems, keys_of(RouteConfig))
    d = defaults_of(RouteConfig)
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
    percent = r.get("enforce_percent", int_range(1, 100), d["enforce_percent"])
    delivery = r.get("delivery", choice(*DELIVERIES), d["delivery"])
    concurrency = r.get("spool_concurrency", int_range(1, 64), d["spool_concurrency"])
    if r.has("spool_concurrency") and delivery != "spool":
        problems.add(r.loc("spool_concurrency"), "applies only to a route with delivery: spool")
    order_by = r.get("spool_order_by", parse_order_by, d["spool_order_by"])
    if r.has("spool_order_by") and delivery != "spool":
        problems.add(r.loc("spool_order_by"), "applies only to a route with delivery: spool")
    rate_limit = (
        _rate_limit(r.raw["rate_limit"], r.loc("rate_limit"), problems) if r.has("rate_limit") else None
    )
    replay = _replay(r.raw["replay"], r.loc("replay"), problems, verify) if r.has("replay") else None
    accept = _accept(r.raw["accept"], r.loc("accept"), problems) if r.has("accept") else None
    telegram = (
        parse_telegram(r.raw["telegram"], r.loc("telegram"), problems, environ) if r.has("telegram") else None
    )
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
        spool_order_by=order_by,
        rate_limit=rate_limit,
        replay=replay,
        accept=accept,
        telegram=telegram,
    )


def _spool(raw: Any, problems: Problems) -> SpoolConfig:
    r = Reader(raw, "spool", problems, keys_of(SpoolConfig))
    d = defaults_of(SpoolConfig)
    path = r.get("path", text, d["path"])
    if not path or path.endswith("/"):
        problems.add(r.loc("path"), f"{path!r} must name a database file (e.g. {d['path']})")
    initial = r.get("backoff_initial", parse_duration, d["backoff_initial"])
    cap = r.get("backoff_max", parse_duration, d["backoff_max"])
    if cap < initial:
        problems.add(r.loc("backoff_max"), "must not be smaller than backoff_initial")
    return SpoolConfig(
        path=path,
        max_bytes=r.get("max_bytes", int_range(1024, 1 << 50), d["max_bytes"]),
        max_items=r.get("max_items", int_range(1, 1 << 40), d["max_items"]),
        max_age=r.get("max_age", parse_duration, d["max_age"]),
        max_attempts=r.get("max_attempts", int_range(1, 1000), d["max_attempts"]),
        backoff_initial=initial,
        backoff_max=cap,
        lock_timeout=r.get("lock_timeout", parse_duration, d["lock_timeout"]),
        dedup=r.get("dedup", boolean, d["dedup"]),
        dedup_window=r.get("dedup_window", parse_duration, d["dedup_window"]),
    )


_REDIS_ONLY = ("redis_url", "key_prefix", "timeout", "sentinel", "cluster")


def _redis_url_problem(url: bytes) -> str | None:
    """What is wrong with a Redis URL, said without repeating it (it may hold a password)."""
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
    r = Reader(raw, "store", problems, keys_of(StoreConfig) | TOPOLOGY_KEYS)
    d = defaults_of(StoreConfig)
    backend = r.get("backend", choice("memory", "redis", "redis-cluster"), d["backend"])
    url: Secret | None = None
    several = backend == "redis-cluster" or (backend == "redis" and r.has("sentinel"))
    topology = parse_topology(r, backend, problems, environ) if several else None
    if backend != "memory":
        if several:
            pass  # the nodes are named by `sentinel:` / `cluster:` instead of redis_url
        elif not r.has("redis_url"):
            r.require("redis_url", "is required with backend: redis (e.g. env:REDIS_URL)")
        else:
            ref = r.raw["redis_url"]
            before = len(problems)
            value = resolve_secret(ref, r.loc("redis_url"), problems, environ)
            if len(problems) == before:
                problem = _redis_url_problem(value)
                if problem:
                    problems.add(r.loc("redis_url"), f"the value of {ref} {problem}")
            url = Secret(0, str(ref) if isinstance(ref, str) else "inline", value)
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
        max_entries=r.get("max_entries", int_range(1, 100_000_000), d["max_entries"]),
        key_prefix=r.get("key_prefix", text, d["key_prefix"]),
        timeout=r.get("timeout", parse_duration, d["timeout"]),
        on_store_error=r.get("on_store_error", choice(*STORE_ERROR_POLICIES), d["on_store_error"]),
    )


def _routes(r: Reader, problems: Problems, mode: str, env: Mapping[str, str]) -> list[RouteConfig]:
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
    return routes


def build(
    raw: Any,
    environ: Mapping[str, str] | None = None,
    source_path: str | None = None,
    warnings: list[str] | None = None,
) -> Config:
    """Turn parsed YAML into a `Config`, or raise `ConfigError` with every problem. Deprecated
    keys are accepted; what to do about them is appended to `warnings` when given."""
    env = os.environ if environ is None else environ
    problems = Problems()
    r = Reader(raw, "", problems, keys_of(Config) | set(DEPRECATED_KEYS))
    for key, advice in DEPRECATED_KEYS.items():
        if r.has(key) and warnings is not None:
            warnings.append(f"{key}: {advice}")
    d = defaults_of(Config)
    listen = r.get("listen", parse_listen, d["listen"])
    admin = r.get("admin_listen", parse_listen, d["admin_listen"])
    if listen.port and listen.port == admin.port and listen.host == admin.host:
        problems.add("admin_listen", "must differ from listen: admin endpoints never share the public port")
    mode = r.get("mode", choice(*MODES), d["mode"])
    trusted = _networks(r.list("trusted_proxies"), "trusted_proxies", problems, presets=False)
    for i, net in enumerate(trusted):
        if net.prefixlen == 0:
            problems.add(
                f"trusted_proxies[{i}]",
                f"{net} trusts X-Forwarded-For from every address, so any client could pick its own IP",
            )
    limits = _limits(r.raw.get("limits"), problems)
    shutdown = r.get("shutdown_timeout", parse_duration, d["shutdown_timeout"])
    max_conc = r.get("max_concurrency", int_range(1, 1_000_000), d["max_concurrency"])
    workers = r.get("workers", int_range(1, 64), d["workers"])
    if workers > 1 and listen.port == 0:
        problems.add("workers", "several workers share one fixed port: `listen` cannot use port 0")
    spool = _spool(r.raw["spool"], problems) if r.has("spool") else None
    store = _store(r.raw.get("store"), problems, env)
    tls = parse_tls(r.raw["tls"], problems) if r.has("tls") else None
    routes = _routes(r, problems, mode, env)
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
        raise ConfigError(problems.items, problems.found)
    return Config(
        listen=listen,
        admin_listen=admin,
        mode=mode,
        trusted_proxies=trusted,
        limits=limits,
        routes=tuple(routes),
        shutdown_timeout=shutdown,
        max_concurrency=max_conc,
        workers=workers,
        spool=spool,
        store=store,
        tls=tls,
        source_path=source_path,
    )
