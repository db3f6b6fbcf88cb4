"""Replay protection end to end: real gateway and upstream on loopback, memory store."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.serve.reload import Reloader
from tests.support.env import ENV
from tests.support.inprocess import base_config, route, tg_verify
from tests.support.state import FORGED, TOKEN, FakeClock, gated_upstream, gateway, send, update
from tests.support.upstream import recording_upstream

OK = b'{"ok":true}'
DUP = "webhook_gateway_requests_total"


def replay_route(upstream: str, name: str = "bot", **replay: Any) -> dict[str, Any]:
    return route(name, upstream, verify=tg_verify(), replay=replay)


async def test_duplicate_of_a_delivered_update_gets_200_and_is_not_forwarded() -> None:
    async with (
        recording_upstream(body=b'{"method":"sendMessage"}') as up,
        gateway(base_config([replay_route(up.url)])) as gw,
    ):
        status, answer, _ = await send(gw, update(1), TOKEN)
        assert (status, answer) == (200, b'{"method":"sendMessage"}')
        status, answer, headers = await send(gw, update(1), TOKEN)
        assert (status, answer) == (200, OK)
        assert headers["Content-Type"].startswith("application/json")
        assert [r.body for r in up.received] == [update(1)]
        assert await gw.metric(DUP, route="bot", outcome="duplicate") == 1
        assert await gw.metric(DUP, route="bot", outcome="forwarded") == 1
        failures = await gw.metric(
            "webhook_gateway_check_failures_total",
            route="bot",
            check="replay",
            reason="duplicate",
            mode="enforce",
        )
        assert failures == 1


async def test_a_failed_delivery_releases_the_update_so_the_retry_is_forwarded() -> None:
    async with recording_upstream(status=500) as up, gateway(base_config([replay_route(up.url)])) as gw:
        assert (await send(gw, update(7), TOKEN))[0] == 500
        up.status = 429
        assert (await send(gw, update(7), TOKEN))[0] == 429
        up.status = 200
        assert (await send(gw, update(7), TOKEN))[0] == 200
        assert (await send(gw, update(7), TOKEN))[:2] == (200, OK)
        assert len(up.received) == 3


async def test_an_unreachable_upstream_releases_the_update() -> None:
    from tests.support.process import free_port

    dead = f"http://127.0.0.1:{free_port()}/webhook"
    async with gateway(base_config([replay_route(dead)])) as gw:
        assert (await send(gw, update(3), TOKEN))[0] == 502
        # Not 409 (still reserved) and not 200 (marked delivered): tried again.
        assert (await send(gw, update(3), TOKEN))[0] == 502
        assert await gw.metric(DUP, route="bot", outcome="upstream_error") == 2


async def test_a_duplicate_while_the_first_is_in_flight_gets_no_2xx_until_it_resolves() -> None:
    async with gated_upstream() as up, gateway(base_config([replay_route(up.url)])) as gw:
        first = asyncio.create_task(send(gw, update(9), TOKEN))
        await up.arrived.wait()
        status, answer, headers = await send(gw, update(9), TOKEN)
        assert status == 409
        assert json.loads(answer) == {"error": "replay_in_flight"}
        assert headers["Retry-After"] == "1"
        up.gate.set()
        assert (await first)[0] == 200
        assert (await send(gw, update(9), TOKEN))[:2] == (200, OK)
        assert len(up.received) == 1
        assert await gw.metric(DUP, route="bot", outcome="duplicate") == 2
        in_flight = await gw.metric(
            "webhook_gateway_check_failures_total", route="bot", check="replay", reason="in_flight"
        )
        assert in_flight == 1


async def test_when_the_first_copy_fails_the_next_retry_goes_through() -> None:
    async with gated_upstream(status=503) as up, gateway(base_config([replay_route(up.url)])) as gw:
        first = asyncio.create_task(send(gw, update(10), TOKEN))
        await up.arrived.wait()
        assert (await send(gw, update(10), TOKEN))[0] == 409
        up.gate.set()
        assert (await first)[0] == 503
        up.status = 200
        assert (await send(gw, update(10), TOKEN))[0] == 200
        assert len(up.received) == 2


async def test_many_identical_updates_at_once_reach_the_upstream_exactly_once() -> None:
    async with (
        recording_upstream(body=b'{"method":"sendMessage"}') as up,
        gateway(base_config([replay_route(up.url)])) as gw,
    ):
        results = await asyncio.gather(*(send(gw, update(77), TOKEN) for _ in range(60)))
    assert len(up.received) == 1
    assert up.received[0].body == update(77)
    answers = [(status, body) for status, body, _ in results]
    assert answers.count((200, b'{"method":"sendMessage"}')) == 1
    # Everything else was either refused while in flight or answered as a duplicate after.
    assert all(a == (200, OK) or a[0] == 409 for a in answers if a != (200, b'{"method":"sendMessage"}'))


async def test_a_forged_request_never_marks_an_update_as_seen() -> None:
    async with recording_upstream() as up, gateway(base_config([replay_route(up.url)])) as gw:
        assert (await send(gw, update(5), FORGED))[0] == 401
        assert (await send(gw, update(5), TOKEN))[0] == 200
        assert len(up.received) == 1 and up.received[0].header("X-Webhook-Verdict") == "pass"


async def test_report_only_forwards_duplicates_marked_and_forgeries_without_touching_the_store() -> None:
    async with recording_upstream() as up:
        cfg = base_config([replay_route(up.url)], mode="report-only")
        async with gateway(cfg) as gw:
            # A forgery is forwarded (report-only) but must not poison the genuine update.
            assert (await send(gw, update(8), FORGED))[0] == 200
            assert (await send(gw, update(8), TOKEN))[0] == 200
            # The genuine update was marked: its replay would be refused under enforce.
            assert (await send(gw, update(8), TOKEN))[0] == 200
    verdicts = [r.header("X-Webhook-Verdict") for r in up.received]
    assert verdicts == [
        "would-reject; check=signature; reason=mismatch",
        "pass",
        "would-reject; check=replay; reason=duplicate",
    ]


async def test_keys_are_scoped_per_route() -> None:
    async with recording_upstream() as up:
        cfg = base_config([replay_route(up.url, "a"), replay_route(up.url, "b")])
        async with gateway(cfg) as gw:
            assert (await send(gw, update(1), TOKEN, "/hook/a"))[0] == 200
            assert (await send(gw, update(1), TOKEN, "/hook/b"))[0] == 200
            assert (await send(gw, update(1), TOKEN, "/hook/b"))[:2] == (200, OK)
            assert len(up.received) == 2


async def test_a_lower_update_id_after_a_pause_is_accepted_and_marks_expire_after_ttl() -> None:
    clock = FakeClock()
    async with (
        recording_upstream() as up,
        gateway(base_config([replay_route(up.url, ttl="1h")]), clock) as gw,
    ):
        for uid in (500_000, 500_001):
            assert (await send(gw, update(uid), TOKEN))[0] == 200
        clock.advance(8 * 86400)  # a week of silence: Telegram restarts at a random id
        assert (await send(gw, update(12), TOKEN))[0] == 200
        assert (await send(gw, update(12), TOKEN))[:2] == (200, OK)
        clock.advance(3599)
        assert (await send(gw, update(12), TOKEN))[:2] == (200, OK)
        clock.advance(1)
        assert (await send(gw, update(12), TOKEN))[0] == 200
        assert len(up.received) == 4


async def test_update_id_is_the_key_even_when_the_bytes_differ() -> None:
    async with recording_upstream() as up, gateway(base_config([replay_route(up.url)])) as gw:
        assert (await send(gw, b'{"update_id":41,"message":{}}', TOKEN))[0] == 200
        assert (await send(gw, b'{"message":{}, "update_id": 41}', TOKEN))[:2] == (200, OK)
        assert len(up.received) == 1


@pytest.mark.parametrize(
    "body",
    [b"not json", b'["update_id", 1]', b'{"update_id": "1"}', b'{"update_id": true}', b"[" * 100_000],
)
async def test_without_a_usable_update_id_the_body_hash_is_the_key(body: bytes) -> None:
    async with recording_upstream() as up, gateway(base_config([replay_route(up.url)])) as gw:
        assert (await send(gw, body, TOKEN))[0] == 200
        assert (await send(gw, body, TOKEN))[:2] == (200, OK)
        assert (await send(gw, body + b" ", TOKEN))[0] == 200
        assert [r.body for r in up.received] == [body, body + b" "]


async def test_header_key_and_body_hash_key() -> None:
    async with recording_upstream() as up:
        routes = [
            replay_route(up.url, "h", key="header:Webhook-Id"),
            replay_route(up.url, "b", key="body-sha256"),
        ]
        async with gateway(base_config(routes)) as gw:
            h = "/hook/h"
            assert (await send(gw, b'{"a":1}', {**TOKEN, "Webhook-Id": "msg_1"}, h))[0] == 200
            assert (await send(gw, b'{"a":2}', {**TOKEN, "Webhook-Id": "msg_1"}, h))[:2] == (200, OK)
            assert (await send(gw, b'{"a":1}', {**TOKEN, "Webhook-Id": "msg_2"}, h))[0] == 200
            b = "/hook/b"
            assert (await send(gw, update(1), TOKEN, b))[0] == 200
            assert (await send(gw, update(1), TOKEN, b))[:2] == (200, OK)
            assert (await send(gw, update(1, text2="x"), TOKEN, b))[0] == 200
            assert len(up.received) == 4


async def test_marks_survive_a_config_reload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    async with recording_upstream() as up:
        cfg = base_config([replay_route(up.url)])
        path = tmp_path / "gateway.yaml"
        path.write_text(yaml.safe_dump(cfg))
        async with gateway(cfg) as gw:
            assert (await send(gw, update(1), TOKEN))[0] == 200
            # Reload a different config (the same route, now with a rate limit).
            cfg["routes"][0]["rate_limit"] = {"requests": "100/s"}
            path.write_text(yaml.safe_dump(cfg))
            before = gw.service.holder.current
            assert Reloader(str(path), gw.service.holder, gw.service.metrics).reload(force=True)
            assert gw.service.holder.current is not before
            assert (await send(gw, update(1), TOKEN))[:2] == (200, OK)
            assert len(up.received) == 1


async def test_canary_route_is_unaffected_for_report_only_share() -> None:
    # With enforce_percent the choice hangs on the body: a retry gets the same decision, so a
    # duplicate is refused consistently or forwarded-and-marked consistently.
    async with recording_upstream(body=b"{}") as up:
        r = replay_route(up.url)
        r["enforce_percent"] = 50
        async with gateway(base_config([r])) as gw:
            outcomes = []
            for uid in range(20):
                await send(gw, update(uid), TOKEN)
                _, answer, _ = await send(gw, update(uid), TOKEN)
                outcomes.append(answer == OK)
            # Some ids fall in the enforced share (duplicate refused), some in report-only.
            assert any(outcomes) and not all(outcomes)
            assert len(up.received) == 20 + outcomes.count(False)
            marked = [r.header("X-Webhook-Verdict") for r in up.received]
            assert marked.count("pass") == 20
            assert marked.count("would-reject; check=replay; reason=duplicate") == outcomes.count(False)
