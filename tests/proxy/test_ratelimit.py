"""Rate limits per route and client IP: 429 with an integer Retry-After, before the body."""

from __future__ import annotations

import json
from typing import Any

from tests.support.env import TELEGRAM_IP
from tests.support.inprocess import base_config, route, tg_verify
from tests.support.rawclient import raw_exchange, raw_request, status_of
from tests.support.state import FORGED, FakeClock, gateway, send, tg, update
from tests.support.upstream import recording_upstream

# Aligned on a minute: a window starts at this instant, so the expected waits read simply.
T0 = 1_700_000_040.0
ATTACKER = "203.0.113.7"
REQUESTS = "webhook_gateway_requests_total"
FAILURES = "webhook_gateway_check_failures_total"


def limited(upstream: str, **rate_limit: Any) -> dict[str, Any]:
    return route("bot", upstream, verify=tg_verify(), rate_limit=rate_limit)


async def test_request_limit_answers_429_with_retry_after_and_spares_other_clients() -> None:
    async with (
        recording_upstream() as up,
        gateway(base_config([limited(up.url, requests="3/m")]), FakeClock(T0)) as gw,
    ):
        for uid in range(3):
            assert (await send(gw, update(uid), tg()))[0] == 200
        status, answer, headers = await send(gw, update(3), tg())
        assert status == 429
        assert json.loads(answer) == {"error": "rate_limited"}
        # 3 in the window just started: the 4th fits once the full window has weight 2/3
        # in the next one (60 s + 20 s).
        assert headers["Retry-After"] == "80"
        assert (await send(gw, update(4), tg("149.154.167.221")))[0] == 200
        assert len(up.received) == 4
        assert await gw.metric(REQUESTS, route="bot", outcome="rate_limited") == 1
        assert (
            await gw.metric(FAILURES, route="bot", check="rate_limit", reason="requests", mode="enforce") == 1
        )


async def test_the_window_slides_on_the_clock() -> None:
    clock = FakeClock(T0)
    async with (
        recording_upstream() as up,
        gateway(base_config([limited(up.url, requests="2/10s")]), clock) as gw,
    ):
        assert [(await send(gw, update(i), tg()))[0] for i in range(3)] == [200, 200, 429]
        clock.advance(14.999)  # 10 s + 5 s: half of the full previous window still counts
        assert (await send(gw, update(3), tg()))[0] == 429
        clock.advance(0.001)
        assert (await send(gw, update(4), tg()))[0] == 200
        assert len(up.received) == 3


async def test_failure_limit_blocks_a_forger_before_verification_and_never_telegram() -> None:
    clock = FakeClock(T0)
    async with recording_upstream() as up:
        cfg = base_config([limited(up.url, requests="100/s", failures="2/m")])
        async with gateway(cfg, clock) as gw:
            # Valid updates from Telegram's address are never counted as failures.
            for uid in range(10):
                assert (await send(gw, update(uid), tg()))[0] == 200
            assert (await send(gw, update(100), tg(ATTACKER, FORGED)))[0] == 401
            assert (await send(gw, update(101), tg(ATTACKER, FORGED)))[0] == 401
            status, _, headers = await send(gw, update(102), tg(ATTACKER, FORGED))
            assert status == 429 and headers["Retry-After"].isdigit()
            # Refused before verification: even a correct token from that address waits.
            assert (await send(gw, update(103), tg(ATTACKER)))[0] == 429
            assert (await send(gw, update(11), tg()))[0] == 200
            clock.advance(int(headers["Retry-After"]))
            assert (await send(gw, update(104), tg(ATTACKER)))[0] == 200
            assert {r.header("X-Forwarded-For") for r in up.received} == {TELEGRAM_IP, ATTACKER}
            assert len(up.received) == 12
            assert await gw.metric(FAILURES, route="bot", check="signature", reason="mismatch") == 2
            assert await gw.metric(FAILURES, route="bot", check="rate_limit", reason="failures") == 2
            assert await gw.metric(REQUESTS, route="bot", outcome="rate_limited") == 2
            assert await gw.metric(REQUESTS, route="bot", outcome="rejected") == 2


async def test_the_limit_is_applied_before_the_body_is_read() -> None:
    async with recording_upstream() as up:
        cfg = base_config([limited(up.url, requests="1/m")], limits={"max_body_bytes": 1000})
        async with gateway(cfg, FakeClock(T0)) as gw:
            assert (await send(gw, update(1), tg()))[0] == 200
            # Headers announce a body far over the limit, and none follows: a 429 (not a 413,
            # not a body timeout) shows the limit was decided without reading it.
            head = raw_request("/hook/bot", b"", [("X-Forwarded-For", TELEGRAM_IP)])
            head = head.replace(b"Content-Length: 0", b"Content-Length: 5000000")
            answer = await raw_exchange(gw.service.public_port, head, read_timeout=5)
            assert status_of(answer) == 429
            assert b"\r\nRetry-After: " in answer
            assert len(up.received) == 1


async def test_report_only_forwards_what_enforce_would_limit_and_counts_it() -> None:
    async with recording_upstream() as up:
        cfg = base_config([limited(up.url, requests="1/m", failures="1/m")], mode="report-only")
        async with gateway(cfg, FakeClock(T0)) as gw:
            assert (await send(gw, update(1), tg()))[0] == 200
            assert (await send(gw, update(2), tg()))[0] == 200
            # A wrong secret in report-only must not cut the sender off: still forwarded.
            assert (await send(gw, update(3), tg(ATTACKER, FORGED)))[0] == 200
            assert (await send(gw, update(4), tg(ATTACKER, FORGED)))[0] == 200
            verdicts = [r.header("X-Webhook-Verdict") for r in up.received]
            assert verdicts == [
                "pass",
                "would-reject; check=rate_limit; reason=requests",
                "would-reject; check=signature; reason=mismatch",
                "would-reject; check=rate_limit; reason=failures",
            ]
            assert await gw.metric(REQUESTS, route="bot", outcome="would_reject") == 3
            assert await gw.metric(REQUESTS, route="bot", outcome="rate_limited") == 0
            assert (
                await gw.metric(
                    FAILURES, route="bot", check="rate_limit", reason="requests", mode="report-only"
                )
                == 1
            )


async def test_ipv6_clients_are_counted_by_their_64() -> None:
    async with (
        recording_upstream() as up,
        gateway(base_config([limited(up.url, requests="2/m")]), FakeClock(T0)) as gw,
    ):
        assert (await send(gw, update(1), tg("2001:db8:1:2::1")))[0] == 200
        assert (await send(gw, update(2), tg("2001:db8:1:2:ffff::9")))[0] == 200
        assert (await send(gw, update(3), tg("2001:db8:1:2::abcd")))[0] == 429
        assert (await send(gw, update(4), tg("2001:db8:1:3::1")))[0] == 200
        assert len(up.received) == 3


async def test_routes_have_their_own_windows() -> None:
    async with recording_upstream() as up:
        routes = [
            route("a", up.url, verify=tg_verify(), rate_limit={"requests": "1/m"}),
            route("b", up.url, verify=tg_verify(), rate_limit={"requests": "1/m"}),
        ]
        async with gateway(base_config(routes), FakeClock(T0)) as gw:
            assert (await send(gw, update(1), tg(), "/hook/a"))[0] == 200
            assert (await send(gw, update(1), tg(), "/hook/b"))[0] == 200
            assert (await send(gw, update(2), tg(), "/hook/a"))[0] == 429
