"""Shared state in a real redis-server: two gateway processes, Redis killed and restarted,
fail-closed and fail-open, and the password never in a log line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from gateway.serve.reload import Reloader
from tests.support.env import ENV
from tests.support.inprocess import RunningGateway, base_config, post, route, tg_verify
from tests.support.leaks import record_output
from tests.support.process import GatewayProcess, free_port
from tests.support.redis import PASSWORD, RedisServer, redis_server  # noqa: F401 - a fixture
from tests.support.state import TOKEN, gateway, send, tg, update
from tests.support.upstream import recording_upstream

OK = b'{"ok":true}'
UPSTREAM_ANSWER = b'{"method":"sendMessage"}'
REQUESTS = "webhook_gateway_requests_total"


def redis_config(upstream: str, on_store_error: str = "fail-closed", **route_kw: Any) -> dict[str, Any]:
    r = route("bot", upstream, verify=tg_verify(), replay={}, **route_kw)
    store = {"backend": "redis", "redis_url": "env:REDIS_URL", "on_store_error": on_store_error}
    return base_config([r], store=store)


def env_with(server: RedisServer) -> dict[str, str]:
    return {**ENV, "REDIS_URL": server.url}


@contextlib.asynccontextmanager
async def processes(
    tmp_path: Path, config: dict[str, Any], server: RedisServer, count: int = 2
) -> AsyncIterator[list[GatewayProcess]]:
    """`count` real `python -m gateway run` processes with one config, sharing one Redis."""
    started: list[GatewayProcess] = []
    try:
        for i in range(count):
            port, admin = free_port(), free_port()
            doc = {**config, "listen": f"127.0.0.1:{port}", "admin_listen": f"127.0.0.1:{admin}"}
            path = tmp_path / f"gateway{i}.yaml"
            path.write_text(yaml.safe_dump(doc))
            gw = GatewayProcess(path, env={"REDIS_URL": server.url})
            started.append(gw)
            await gw.start(port, admin)
        yield started
    finally:
        for gw in started:
            if gw.proc is not None and gw.proc.returncode is None:
                await gw.stop()
        for gw in started:
            record_output("gateway stderr", gw.stderr)
            assert PASSWORD not in gw.stderr, "the Redis password leaked into a log line"


async def wait_for_metric(gw: GatewayProcess, name: str, value: float, **labels: str) -> None:
    async with asyncio.timeout(10):
        while await gw.metric(name, **labels) != value:
            await asyncio.sleep(0.1)


async def ready_status(gw: GatewayProcess) -> int:
    async with aiohttp.ClientSession() as s, s.get(gw.admin + "/readyz") as r:
        return r.status


async def to(gw: GatewayProcess | RunningGateway, body: bytes, ip: str = "149.154.167.220") -> Any:
    return await post(gw.base + "/hook/bot", body, tg(ip))


async def test_two_processes_refuse_a_duplicate_the_other_delivered(
    tmp_path: Path,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    async with (
        recording_upstream(body=UPSTREAM_ANSWER) as up,
        processes(tmp_path, redis_config(up.url), redis_server) as (a, b),
    ):
        assert (await to(a, update(1)))[:2] == (200, UPSTREAM_ANSWER)
        assert (await to(b, update(1)))[:2] == (200, OK)
        assert (await to(b, update(2)))[:2] == (200, UPSTREAM_ANSWER)
        assert (await to(a, update(2)))[:2] == (200, OK)
        assert [r.body for r in up.received] == [update(1), update(2)]
        assert await a.metric(REQUESTS, route="bot", outcome="duplicate") == 1
        assert await b.metric(REQUESTS, route="bot", outcome="duplicate") == 1


async def test_two_processes_share_one_rate_window(
    tmp_path: Path,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    async with recording_upstream() as up:
        config = redis_config(up.url, rate_limit={"requests": "3/h"})
        async with processes(tmp_path, config, redis_server) as (a, b):
            statuses = [(await to(gw, update(i)))[0] for i, gw in enumerate([a, b, a, b, a])]
            assert statuses == [200, 200, 200, 429, 429]
            # Another client has its own window, on either process.
            assert (await to(b, update(9), "149.154.167.221"))[0] == 200
            assert len(up.received) == 4
            assert await a.metric(REQUESTS, route="bot", outcome="rate_limited") == 1
            assert await b.metric(REQUESTS, route="bot", outcome="rate_limited") == 1


async def test_many_identical_updates_across_two_processes_reach_the_upstream_once(
    tmp_path: Path,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    async with (
        recording_upstream(body=UPSTREAM_ANSWER) as up,
        processes(tmp_path, redis_config(up.url), redis_server) as (a, b),
    ):
        results = await asyncio.gather(*(to(gw, update(500)) for _ in range(30) for gw in (a, b)))
        assert [r.body for r in up.received] == [update(500)]
        answers = [(status, body) for status, body, _ in results]
        assert answers.count((200, UPSTREAM_ANSWER)) == 1
        assert all(s == 409 or body == OK for s, body in answers if body != UPSTREAM_ANSWER)


async def test_redis_down_fails_closed_with_503_and_recovers_when_it_returns(
    tmp_path: Path,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    async with recording_upstream(body=UPSTREAM_ANSWER) as up:
        config = redis_config(up.url, rate_limit={"requests": "100/s"})
        async with processes(tmp_path, config, redis_server) as (a, b):
            address = f"127.0.0.1:{redis_server.port}"
            for gw in (a, b):
                assert await gw.metric("webhook_gateway_store_up") == 1
            assert (await to(a, update(1)))[0] == 200
            redis_server.kill()
            for gw in (a, b):
                status, answer, headers = await to(gw, update(2))
                assert status == 503
                assert json.loads(answer) == {"error": "store_unavailable"}
                assert int(headers["Retry-After"]) >= 1
                assert await gw.metric(REQUESTS, route="bot", outcome="store_unavailable") == 1
                assert (
                    await gw.metric("webhook_gateway_store_errors_total", route="bot", operation="rate") == 1
                )
            assert len(up.received) == 1  # nothing reached the bot unguarded
            for gw in (a, b):
                # The probe (once a second) reports the outage; the pod stays ready, since
                # on_store_error decides per request.
                await wait_for_metric(gw, "webhook_gateway_store_up", 0)
                # No Sentinel or cluster to say a replica takes over: simply unreachable.
                await wait_for_metric(gw, "webhook_gateway_store_state", 1, state="unreachable")
                assert await gw.metric("webhook_gateway_store_state", state="connected") == 0
                assert await gw.metric("webhook_gateway_store_master", address=address) == 1
                assert await ready_status(gw) == 200
            redis_server.start()  # same port, empty (no persistence): the gateways reconnect
            assert (await to(a, update(2)))[:2] == (200, UPSTREAM_ANSWER)
            assert (await to(b, update(2)))[:2] == (200, OK)
            assert (await to(b, update(3)))[:2] == (200, UPSTREAM_ANSWER)
            assert len(up.received) == 3
            assert "store unavailable" in a.stderr and "store available" in a.stderr
            for gw in (a, b):
                await wait_for_metric(gw, "webhook_gateway_store_up", 1)
                assert await gw.metric("webhook_gateway_store_failovers_total") == 0  # same master


async def test_fail_open_forwards_and_counts_while_redis_is_down(
    redis_server: RedisServer,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="webhook_gateway")
    async with recording_upstream() as up:
        config = redis_config(up.url, on_store_error="fail-open", rate_limit={"requests": "100/s"})
        async with gateway(config, environ=env_with(redis_server)) as gw:
            assert (await send(gw, update(1), TOKEN))[0] == 200
            redis_server.kill()
            assert (await send(gw, update(1), TOKEN))[0] == 200  # no mark to refuse it with
            # A forgery is still refused: fail-open relaxes the store, never verification.
            assert (await send(gw, update(2), {"X-Telegram-Bot-Api-Secret-Token": "x"}))[0] == 401
            verdicts = [r.header("X-Webhook-Verdict") for r in up.received]
            assert verdicts == ["pass", "allowed; check=rate_limit; reason=unavailable"]
            # Both requests after the kill met the rate check; only the verified one the replay.
            for operation, count in (("rate", 2), ("reserve", 1)):
                errors = await gw.metric(
                    "webhook_gateway_store_errors_total", route="bot", operation=operation
                )
                assert errors == count, operation
            assert (
                await gw.metric(
                    "webhook_gateway_check_failures_total",
                    route="bot",
                    check="replay",
                    reason="unavailable",
                    mode="enforce",
                )
                == 1
            )
            assert PASSWORD not in gw.log.getvalue()
    assert "store unavailable" in caplog.text
    assert PASSWORD not in caplog.text


async def test_on_store_error_flips_by_reload_while_the_store_stays(
    tmp_path: Path,
    redis_server: RedisServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in env_with(redis_server).items():
        monkeypatch.setenv(name, value)
    async with recording_upstream() as up:
        config = redis_config(up.url)
        path = tmp_path / "gateway.yaml"
        path.write_text(yaml.safe_dump(config))
        async with gateway(config, environ=env_with(redis_server)) as gw:
            reloader = Reloader(str(path), gw.service.holder, gw.service.metrics)
            store = gw.service.gateway.store
            redis_server.kill()
            assert (await send(gw, update(1), TOKEN))[0] == 503
            config["store"]["on_store_error"] = "fail-open"
            path.write_text(yaml.safe_dump(config))
            assert reloader.reload()
            assert (await send(gw, update(1), TOKEN))[0] == 200
            # Anything else in `store:` is bound at start: such a reload is refused.
            config["store"]["key_prefix"] = "other:"
            path.write_text(yaml.safe_dump(config))
            assert not reloader.reload()
            assert gw.service.gateway.store is store
            assert len(up.received) == 1


async def test_a_redis_restart_between_requests_costs_no_request(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    async with (
        recording_upstream() as up,
        gateway(redis_config(up.url, rate_limit={"requests": "100/s"}), environ=env_with(redis_server)) as gw,
    ):
        assert (await send(gw, update(1), TOKEN))[0] == 200
        # Every pooled connection is now dead; nothing was sent while Redis was away.
        redis_server.kill()
        redis_server.start()
        assert (await send(gw, update(2), TOKEN))[0] == 200
        assert (await send(gw, update(2), TOKEN))[:2] == (200, OK)
        assert await gw.metric("webhook_gateway_store_errors_total", route="bot", operation="rate") == 0
        assert len(up.received) == 2


async def test_report_only_forwards_while_redis_is_down_and_marks_why(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    config = redis_config("", rate_limit={"requests": "100/s"})
    config["mode"] = "report-only"
    async with recording_upstream() as up:
        config["routes"][0]["upstream"] = up.url
        async with gateway(config, environ=env_with(redis_server)) as gw:
            redis_server.kill()
            assert (await send(gw, update(1), TOKEN))[0] == 200
            assert up.received[0].header("X-Webhook-Verdict") == (
                "would-reject; check=rate_limit; reason=unavailable"
            )
            assert await gw.metric(REQUESTS, route="bot", outcome="would_reject") == 1
