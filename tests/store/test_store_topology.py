"""`store:` with Sentinel and Redis Cluster: the config forms, every problem with its location,
no password ever shown, and every key one operation touches in one hash slot."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from redis.crc import key_slot

from gateway import config as cfg
from gateway.config.redis import RedisTopology
from gateway.proxy.checks.ratelimit import RateLimitCheck
from gateway.proxy.checks.replay import ReplayCheck
from gateway.store import redis as redis_store
from gateway.store.topology import hash_tagged
from tests.support.env import ENV

PW = "s3cret-node-pw"
SENTINEL_PW = "s3cret-sentinel-pw"
SECRETS = {**ENV, "REDIS_PASSWORD": PW, "SENTINEL_PASSWORD": SENTINEL_PW}


def config(store: dict[str, Any]) -> dict[str, Any]:
    route = {
        "name": "bot",
        "path": "/tg/bot/x",
        "upstream": "http://127.0.0.1:3000/webhook",
        "verify": {"scheme": "telegram", "secrets": ["env:TG_SECRET"]},
        "replay": {},
    }
    return {"routes": [route], "store": store}


def problems(store: dict[str, Any]) -> list[str]:
    with pytest.raises(cfg.ConfigError) as info:
        cfg.build(config(store), environ=SECRETS)
    return info.value.problems


SENTINEL = {
    "master": "mymaster",
    "addresses": ["10.0.0.1:26379", "sentinel-1.redis", "[fd00::1]:26380"],
    "password": "env:REDIS_PASSWORD",
    "sentinel_password": "env:SENTINEL_PASSWORD",
    "username": "gateway",
}
CLUSTER = {"addresses": ["redis-0.redis:6379", "redis-1.redis:6380"], "password": "env:REDIS_PASSWORD"}


def test_sentinel_form() -> None:
    c = cfg.build(config({"backend": "redis", "sentinel": SENTINEL, "timeout": "250ms"}), SECRETS)
    t = c.store.topology
    assert isinstance(t, RedisTopology)
    assert (t.kind, t.master, t.username) == ("sentinel", "mymaster", "gateway")
    # A bare host takes the sentinel port.
    assert t.addresses == (("10.0.0.1", 26379), ("sentinel-1.redis", 26379), ("fd00::1", 26380))
    assert t.password is not None and t.password.value == PW.encode()
    assert t.sentinel_password is not None and t.sentinel_password.value == SENTINEL_PW.encode()
    assert c.store.redis_url is None and c.store.timeout == 0.25
    shown = repr(c.store) + str(c)
    assert PW not in shown and SENTINEL_PW not in shown and "mymaster" in shown


def test_cluster_form() -> None:
    c = cfg.build(config({"backend": "redis-cluster", "cluster": CLUSTER}), SECRETS)
    t = c.store.topology
    assert t is not None and t.kind == "cluster" and c.store.backend == "redis-cluster"
    assert t.addresses == (("redis-0.redis", 6379), ("redis-1.redis", 6380))
    assert t.password is not None and t.password.value == PW.encode() and PW not in repr(c.store)
    # Without a password (a cluster on a private network).
    bare = cfg.build(config({"backend": "redis-cluster", "cluster": {"addresses": ["h:7000"]}}), SECRETS)
    assert bare.store.topology is not None and bare.store.topology.password is None


def test_a_changed_topology_is_a_different_store() -> None:
    # A reload compares store configs: changing the nodes needs a restart, on_store_error does not.
    a = cfg.build(config({"backend": "redis", "sentinel": SENTINEL}), SECRETS).store
    b = cfg.build(config({"backend": "redis", "sentinel": {**SENTINEL, "master": "other"}}), SECRETS).store
    c = cfg.build(
        config({"backend": "redis", "sentinel": SENTINEL, "on_store_error": "fail-open"}), SECRETS
    ).store
    assert a != b and a == c


@pytest.mark.parametrize(
    ("store", "expected"),
    [
        ({"backend": "redis-cluster"}, "store.cluster: is required with backend: redis-cluster"),
        ({"backend": "redis-cluster", "cluster": {}}, "store.cluster.addresses: is required"),
        (
            {"backend": "redis-cluster", "cluster": {"addresses": []}},
            "store.cluster.addresses: needs at least",
        ),
        (
            {"backend": "redis-cluster", "cluster": {"addresses": ["h:port"]}},
            "store.cluster.addresses[0]: 'h:port' is not HOST:PORT",
        ),
        (
            {"backend": "redis-cluster", "cluster": {"addresses": ["h:7000", "h:7000"]}},
            "store.cluster.addresses[1]: 'h:7000' is listed twice",
        ),
        (
            {"backend": "redis-cluster", "cluster": {**CLUSTER, "password": PW}},
            "store.cluster.password: secrets come only from env:NAME or file:PATH",
        ),
        (
            {"backend": "redis-cluster", "cluster": {**CLUSTER, "password": "env:NOPE"}},
            "store.cluster.password: environment variable NOPE is not set",
        ),
        (
            {"backend": "redis-cluster", "cluster": {**CLUSTER, "master": "x"}},
            "store.cluster.master: unknown key",
        ),
        (
            {"backend": "redis-cluster", "cluster": CLUSTER, "redis_url": "env:REDIS_PASSWORD"},
            "store.redis_url: backend: redis-cluster takes cluster.addresses instead",
        ),
        (
            {"backend": "redis-cluster", "cluster": CLUSTER, "sentinel": SENTINEL},
            "store.sentinel: applies to backend: redis only",
        ),
        (
            {"backend": "redis-cluster", "cluster": CLUSTER, "key_prefix": "{gw}:"},
            "store.key_prefix: must not contain { or } with backend: redis-cluster",
        ),
        (
            {"backend": "redis-cluster", "cluster": CLUSTER, "max_entries": 5},
            "store.max_entries: applies to backend: memory only",
        ),
        ({"backend": "redis", "sentinel": {"addresses": ["h"]}}, "store.sentinel.master: is required"),
        ({"backend": "redis", "sentinel": {"master": "m"}}, "store.sentinel.addresses: is required"),
        (
            {"backend": "redis", "sentinel": {**SENTINEL, "sentinel_password": "inline"}},
            "store.sentinel.sentinel_password: secrets come only from env:NAME or file:PATH",
        ),
        (
            {"backend": "redis", "sentinel": SENTINEL, "redis_url": "env:REDIS_PASSWORD"},
            "store.redis_url: give either redis_url or sentinel, not both",
        ),
        ({"backend": "redis", "cluster": CLUSTER}, "store.cluster: applies to backend: redis-cluster only"),
        ({"backend": "memory", "sentinel": SENTINEL}, "store.sentinel: applies to backend: redis only"),
        ({"backend": "memory", "cluster": CLUSTER}, "store.cluster: applies to backend: redis only"),
    ],
)
def test_problems_have_locations_and_never_a_password(store: dict[str, Any], expected: str) -> None:
    found = problems(store)
    assert any(p.startswith(expected) for p in found), found
    assert not any(PW in p or SENTINEL_PW in p for p in found)


ROUTES = ["bot", "support-bot", "a", "shop.v2", "x_1"]


def keys_of_one_route(route: str) -> list[list[str]]:
    """The keys of each store operation one route makes, as the checks build them."""
    from gateway.config import RateLimitConfig, ReplayConfig

    replay = ReplayCheck(route, ReplayConfig(key="update_id"), upstream_timeout=25.0)
    rate = RateLimitCheck(route, RateLimitConfig())
    return [
        [replay.key(_headers(), b"{}", {"update_id": 7})],  # reserve / deliver / release
        [replay.key(_headers(), b"{}", None)],  # by body hash
        [f"{rate.prefix}req:149.154.167.220"],
        [f"{rate.prefix}fail:2001:db8::/64"],
    ]


def _headers() -> Any:
    from multidict import CIMultiDict, CIMultiDictProxy

    return CIMultiDictProxy(CIMultiDict())


def test_every_key_of_a_route_is_in_the_route_slot() -> None:
    prefix = "webhook-gateway:"
    slots = {}
    for route in ROUTES:
        operations = keys_of_one_route(route)
        stored = [prefix + hash_tagged(k) for op in operations for k in op]
        assert all(f"{{{route}}}" in k for k in stored), stored
        slots[route] = {key_slot(k.encode()) for k in stored}
        # Replay marks and rate windows of one route: one slot, so one master serves them all.
        assert slots[route] == {key_slot(route.encode())}, (route, stored)
    # ...and different routes spread over the slots.
    assert len({next(iter(s)) for s in slots.values()}) == len(ROUTES)


def test_every_script_touches_only_its_keys_argument() -> None:
    # A script naming a key it was not given could reach another slot: each script reads and
    # writes KEYS[1] only, and is called with exactly one key.
    for script in (redis_store._RESERVE, redis_store._RELEASE, redis_store._RATE):
        assert "KEYS[1]" in script and "KEYS[2]" not in script
        calls = re.findall(r"redis\.call\('(\w+)',\s*([^,)]+)", script)
        assert calls
        assert all(key == "KEYS[1]" for _, key in calls), calls


def test_hash_tag_leaves_other_shapes_whole() -> None:
    assert hash_tagged("replay:bot:id:1") == "replay:{bot}:id:1"
    assert hash_tagged("rate:bot:req:::1") == "rate:{bot}:req:::1"
    assert hash_tagged("plain") == "plain"
    assert hash_tagged("a::b") == "a::b"


@pytest.mark.parametrize(
    ("page", "kind"), [("redis-sentinel.md", "sentinel"), ("redis-cluster.md", "cluster")]
)
def test_the_config_each_page_shows_is_valid(page: str, kind: str) -> None:
    from tests.support.env import ROOT_DIR

    text = (ROOT_DIR / "docs" / page).read_text().split("## Config", 1)[1]
    shown = yaml.safe_load(text.split("```yaml\n", 1)[1].split("```", 1)[0])
    c = cfg.build({**config({}), **shown}, SECRETS | {"SENTINEL_PASSWORD": SENTINEL_PW})
    assert c.store.topology is not None and c.store.topology.kind == kind
    assert len(c.store.topology.addresses) == 3
