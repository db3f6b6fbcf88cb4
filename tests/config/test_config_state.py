"""Config of rate_limit, replay, accept and store: defaults, every problem with its location,
and a Redis URL (it may hold a password) never shown."""

from __future__ import annotations

from typing import Any

import pytest

from gateway import config as cfg
from tests.support.env import ENV

REDIS_URL = "redis://:s3cret-pass@redis.internal:6379/2"


def good(**route_kw: Any) -> dict[str, Any]:
    r: dict[str, Any] = {
        "name": "bot",
        "path": "/tg/bot/x",
        "upstream": "http://127.0.0.1:3000/webhook",
        "verify": {"scheme": "telegram", "secrets": ["env:TG_SECRET"]},
    }
    r.update(route_kw)
    return {"routes": [r]}


def problems(raw: Any, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(cfg.ConfigError) as info:
        cfg.build(raw, environ={**ENV, **(environ or {})})
    return info.value.problems


def test_defaults() -> None:
    c = cfg.build(good(replay={}, rate_limit={"failures": "5/m"}, accept={"updates": ["message"]}), ENV)
    assert c.store == cfg.StoreConfig()
    assert c.store.backend == "memory" and c.store.max_entries == 100_000
    assert c.store.on_store_error == "fail-closed"
    route = c.routes[0]
    assert route.replay == cfg.ReplayConfig(key="update_id", header=None, ttl=86400.0)
    assert route.rate_limit == cfg.RateLimitConfig(requests=None, failures=cfg.Rate(5, 60.0))
    assert route.accept == cfg.AcceptConfig(updates=frozenset({"message"}), chat_types=None)
    plain = cfg.build(good(), ENV).routes[0]
    assert (plain.replay, plain.rate_limit, plain.accept) == (None, None, None)


def test_replay_key_defaults_follow_the_scheme() -> None:
    hmac = {"scheme": "hmac", "header": "X-Sig", "secrets": ["env:HMAC_SECRET"]}
    c = cfg.build(good(verify=hmac, replay={"ttl": "2h"}), ENV)
    assert c.routes[0].replay == cfg.ReplayConfig(key="body-sha256", ttl=7200.0)
    c = cfg.build(good(replay={"key": "header:X-Request-Id"}), ENV)
    assert c.routes[0].replay == cfg.ReplayConfig(key="header", header="X-Request-Id")
    # A scheme's delivery-id header is the default key only when the signature covers it.
    github = {"scheme": "github", "secrets": ["env:HMAC_SECRET"]}
    c = cfg.build(good(verify=github, replay={}), ENV)
    assert c.routes[0].replay == cfg.ReplayConfig(key="body-sha256")
    svix = {"scheme": "standard-webhooks", "secrets": ["env:WHSEC"]}
    c = cfg.build(good(verify=svix, replay={}), {**ENV, "WHSEC": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})
    assert c.routes[0].replay == cfg.ReplayConfig(key="header", header="webhook-id")


def test_redis_store() -> None:
    raw = {
        **good(),
        "store": {"backend": "redis", "redis_url": "env:REDIS_URL", "on_store_error": "fail-open"},
    }
    c = cfg.build(raw, {**ENV, "REDIS_URL": REDIS_URL + "\n"})
    assert c.store.redis_url is not None and c.store.redis_url.value == REDIS_URL.encode()
    assert c.store.on_store_error == "fail-open"
    assert "s3cret" not in repr(c.store) and "s3cret" not in str(c) and "env:REDIS_URL" in repr(c.store)
    # on_store_error may be flipped by a reload; anything else in store: may not.
    assert (
        c.store
        == cfg.build(
            {**raw, "store": {**raw["store"], "on_store_error": "fail-closed"}},
            {
                **ENV,
                "REDIS_URL": REDIS_URL,
            },
        ).store
    )


ENV_URLS = {
    "REDIS_URL": REDIS_URL,
    "BAD_URL": "http://:s3cret-pass@h/",
    "BAD_PORT": "redis://:s3cret-pass@h:port/",
}


@pytest.mark.parametrize(
    ("route_kw", "expected"),
    [
        ({"rate_limit": {}}, "rate_limit: give `requests` and/or `failures`"),
        ({"rate_limit": {"requests": "fast"}}, "rate_limit.requests: 'fast' is not a rate"),
        ({"rate_limit": {"failure": "5/m"}}, "rate_limit.failure: unknown key (did you mean failures?)"),
        ({"rate_limit": {"requests": "0/s"}}, "rate_limit.requests: a rate must be positive"),
        ({"replay": {"key": "update-id"}}, "replay.key: 'update-id' is not one of"),
        ({"replay": {"key": "header:"}}, "replay.key: 'header:': header:NAME needs"),
        ({"replay": {"ttl": "0.5s"}}, "replay.ttl: must be at least 1s"),
        ({"replay": {"ttl": "forever"}}, "replay.ttl: 'forever' is not a duration"),
        ({"replay": {}, "verify": None}, "replay: needs `verify:`"),
        ({"accept": {}}, "accept: give `updates` and/or `chat_types`"),
        ({"accept": {"updates": ["mesage"]}}, "accept.updates[0]: 'mesage' is not a Telegram name (did you"),
        ({"accept": {"updates": []}}, "accept.updates: an empty list would filter every update"),
        ({"accept": {"chat_types": "private"}}, "accept.chat_types: expected a list"),
        ({"accept": {"chat_types": ["dm"]}}, "accept.chat_types[0]: 'dm' is not a Telegram name"),
    ],
)
def test_route_problems_have_locations(route_kw: dict[str, Any], expected: str) -> None:
    raw = good(**route_kw)
    if route_kw.get("verify", "") is None:
        del raw["routes"][0]["verify"]
    found = problems(raw)
    assert any(p.startswith("routes[0]." + expected) for p in found), found


@pytest.mark.parametrize(
    ("store", "expected"),
    [
        ({"backend": "etcd"}, "backend: 'etcd' is not one of: memory, redis"),
        ({"backend": "redis"}, "redis_url: is required with backend: redis"),
        ({"backend": "redis", "redis_url": REDIS_URL}, "redis_url: secrets come only from env:NAME or file:"),
        ({"backend": "redis", "redis_url": "env:NOPE"}, "redis_url: environment variable NOPE is not set"),
        ({"backend": "redis", "redis_url": "env:BAD_URL"}, "redis_url: the value of env:BAD_URL must be a"),
        ({"backend": "redis", "redis_url": "env:BAD_PORT"}, "redis_url: the value of env:BAD_PORT is not a"),
        ({"backend": "redis", "redis_url": "env:REDIS_URL", "max_entries": 5}, "max_entries: applies to"),
        ({"redis_url": "env:REDIS_URL"}, "redis_url: applies to backend: redis only"),
        ({"on_store_error": "fail-shut"}, "on_store_error: 'fail-shut' is not one of"),
        ({"max_entries": 0}, "max_entries: 0 is outside"),
    ],
)
def test_store_problems_have_locations_and_never_show_the_url(store: dict[str, Any], expected: str) -> None:
    found = problems({**good(), "store": store}, ENV_URLS)
    assert any(p.startswith("store." + expected) for p in found), found
    assert not any("s3cret" in p for p in found)


def test_every_problem_is_reported_at_once() -> None:
    raw = {
        **good(rate_limit={"requests": "x"}, replay={"key": "nope"}, accept={"updates": ["nope"]}),
        "store": {"backend": "memory", "timeout": "1s"},
    }
    found = problems(raw)
    assert len(found) == 4, found


def test_the_redis_example_passes_check() -> None:
    import subprocess
    import sys

    from tests.support.env import ROOT_DIR

    env = {"PATH": "/usr/bin:/bin", "TG_SECRET": "abc", "REDIS_URL": REDIS_URL}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "check",
            "--config",
            "config/examples/telegram-replicas-redis.yaml",
        ],
        cwd=ROOT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "s3cret" not in result.stdout + result.stderr
