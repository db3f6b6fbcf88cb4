"""The gateway's configuration: `model` (frozen dataclasses, one field per key), `values` (the
gateway's value types), `build` (a builder per section), `load` (files, with line numbers).
The toolkit the sections are read with is `gateway.reader`."""

from gateway.config.build import DEPRECATED_KEYS, ROUTE_NAME_RE, build
from gateway.config.load import CONFIG_ENV, default_path, load, parse_yaml, parse_yaml_marked, read_bytes
from gateway.config.model import (
    DEFAULT_CONFIG_PATH,
    DEFAULT_SPOOL_PATH,
    DELIVERIES,
    MODES,
    REPLAY_KEYS,
    STORE_ERROR_POLICIES,
    AcceptConfig,
    Config,
    Limits,
    Listen,
    Network,
    Rate,
    RateLimitConfig,
    ReplayConfig,
    RouteConfig,
    Secret,
    SpoolConfig,
    StoreConfig,
    Upstream,
    VerifyConfig,
)
from gateway.config.values import PRESETS, parse_listen, parse_network, parse_upstream
from gateway.reader import ConfigError, parse_duration, parse_rate

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_SPOOL_PATH",
    "DELIVERIES",
    "DEPRECATED_KEYS",
    "MODES",
    "PRESETS",
    "REPLAY_KEYS",
    "ROUTE_NAME_RE",
    "STORE_ERROR_POLICIES",
    "AcceptConfig",
    "Config",
    "ConfigError",
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
    "build",
    "default_path",
    "load",
    "parse_duration",
    "parse_listen",
    "parse_network",
    "parse_rate",
    "parse_upstream",
    "parse_yaml",
    "parse_yaml_marked",
    "read_bytes",
]
