"""`delivery:` / `spool:` config, and the worker's pure parts (backoff, Retry-After, keys)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from gateway import config as cfg
from gateway.spool.order import order_key
from gateway.spool.service import dedup_key
from gateway.spool.worker import RETRY_AFTER_CAP, backoff, retry_after
from tests.support.env import ENV


def conf(route: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    r = {"name": "bot", "path": "/tg/bot/x", "upstream": "http://127.0.0.1:3000/webhook", **(route or {})}
    return {"routes": [r], **top}


def problems(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(cfg.ConfigError) as info:
        cfg.build(raw, environ=ENV)
    return info.value.problems


def test_defaults_passthrough_and_no_spool() -> None:
    c = cfg.build(conf(), environ=ENV)
    assert c.routes[0].delivery == "passthrough"
    assert c.spool is None and not c.spool_wanted


def test_a_spool_route_uses_the_documented_defaults() -> None:
    c = cfg.build(conf({"delivery": "spool"}), environ=ENV)
    assert c.spool_wanted and c.routes[0].spool_concurrency == 8
    assert c.routes[0].spool_order_by == "auto"
    s = c.spool_settings
    assert s == cfg.SpoolConfig()
    assert (s.path, s.max_items, s.max_bytes) == ("/var/lib/webhook-gateway/spool.db", 100_000, 256 << 20)
    assert (s.max_age, s.max_attempts, s.backoff_initial, s.backoff_max) == (7 * 86400, 5, 1.0, 60.0)
    assert (s.lock_timeout, s.dedup, s.dedup_window) == (2.0, True, 86400.0)


def test_a_full_spool_section() -> None:
    spool = {
        "path": "/data/s.db",
        "max_bytes": 1 << 20,
        "max_items": 10,
        "max_age": "1h",
        "max_attempts": 2,
        "backoff_initial": "500ms",
        "backoff_max": "10s",
        "lock_timeout": "1s",
        "dedup": False,
        "dedup_window": "2h",
    }
    c = cfg.build(conf({"delivery": "spool", "spool_concurrency": 3}, spool=spool), environ=ENV)
    assert c.spool == cfg.SpoolConfig("/data/s.db", 1 << 20, 10, 3600.0, 2, 0.5, 10.0, 1.0, False, 7200.0)
    assert c.routes[0].spool_concurrency == 3


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            conf({"delivery": "queue"}),
            "routes[0].delivery: 'queue' is not one of: passthrough, spool",
        ),
        (
            conf({"spool_concurrency": 2}),
            "routes[0].spool_concurrency: applies only to a route with delivery: spool",
        ),
        (
            conf({"delivery": "spool", "spool_concurrency": 0}),
            "routes[0].spool_concurrency: 0 is outside 1..64",
        ),
        (conf(spool={"max_item": 5}), "spool.max_item: unknown key (did you mean max_items?)"),
        (conf(spool={"max_items": 0}), "spool.max_items: 0 is outside"),
        (conf(spool={"max_bytes": "1GB"}), "spool.max_bytes: expected a whole number"),
        (conf(spool={"path": "/var/lib/"}), "spool.path: '/var/lib/' must name a database file"),
        (conf(spool={"max_age": "forever"}), "spool.max_age: 'forever' is not a duration"),
        (
            conf(spool={"backoff_initial": "10s", "backoff_max": "1s"}),
            "spool.backoff_max: must not be smaller than backoff_initial",
        ),
        (conf(spool={"dedup": "yes"}), "spool.dedup: expected true or false"),
        (conf(spool=[1]), "spool: expected a mapping, got list"),
    ],
)
def test_spool_config_problems_have_locations(raw: dict[str, Any], expected: str) -> None:
    found = problems(raw)
    assert any(p.startswith(expected) for p in found), found


def test_backoff_grows_is_capped_and_jittered() -> None:
    rng = random.Random(1)
    for attempts, base in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (7, 60.0), (50, 60.0)]:
        delays = [backoff(attempts, 1.0, 60.0, rng) for _ in range(200)]
        assert all(base / 2 <= d <= base for d in delays), (attempts, min(delays), max(delays))
        assert len(set(delays)) > 100  # jittered, not in step


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("7", 7.0),
        (" 12 ", 12.0),
        ("999999", RETRY_AFTER_CAP),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),  # 30 s after `now` below
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # already past
        ("soon", None),
        ("-5", None),
    ],
)
def test_retry_after(header: str | None, expected: float | None) -> None:
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert retry_after(header, now) == expected


def test_the_dedup_key_is_the_body_sha256() -> None:
    assert dedup_key(b"{}") == "body-sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    assert dedup_key(b"{} ") != dedup_key(b"{}")


@pytest.mark.parametrize(
    ("order_by", "verify", "body", "expected"),
    [
        ("auto", True, b'{"update_id":1,"message":{"chat":{"id":-100}}}', "chat:-100"),
        ("auto", True, b'{"update_id":1,"callback_query":{"message":{"chat":{"id":5}}}}', "chat:5"),
        ("auto", True, b'{"update_id":1,"chat_join_request":{"chat":{"id":6}}}', "chat:6"),
        ("auto", True, b'{"update_id":1,"inline_query":{"from":{"id":7}}}', ""),
        ("auto", True, b"not json", ""),
        ("auto", False, b'{"message":{"chat":{"id":5}}}', ""),
        ("route", True, b'{"message":{"chat":{"id":5}}}', ""),
        ("chat", False, b'{"edited_message":{"chat":{"id":8}}}', "chat:8"),
        ("field:event.account", False, b'{"event":{"account":"a1"}}', "field:a1"),
        ("field:event.account", False, b'{"event":{"account":{"x":1}}}', ""),
    ],
)
def test_ordering_keys(order_by: str, verify: bool, body: bytes, expected: str) -> None:
    extra: dict[str, Any] = {"delivery": "spool", "spool_order_by": order_by}
    if verify:
        extra["verify"] = {"scheme": "telegram", "secrets": ["env:TG_SECRET"]}
    c = cfg.build(conf(extra), environ=ENV)
    assert order_key(c.routes[0], body) == expected


def test_order_by_problems() -> None:
    with pytest.raises(cfg.ConfigError) as e:
        cfg.build(conf({"delivery": "spool", "spool_order_by": "field:"}), environ=ENV)
    assert "routes[0].spool_order_by" in str(e.value.problems)
    with pytest.raises(cfg.ConfigError) as e:
        cfg.build(conf({"spool_order_by": "chat"}), environ=ENV)
    assert "applies only to a route with delivery: spool" in str(e.value.problems)
