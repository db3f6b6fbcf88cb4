"""Meta's GET verification handshake: unit table, then through a real gateway."""

from __future__ import annotations

import aiohttp
import pytest

from gateway.schemes.handshake import MetaHandshake
from tests.support.inprocess import base_config, route, running_gateway
from tests.support.upstream import recording_upstream

TOKEN = "meta-verify-token_42"
ENV = {"APP_SECRET": "app-secret-0123", "META_VERIFY_TOKEN": TOKEN}
META = {"scheme": "meta", "secrets": ["env:APP_SECRET"], "verify_token": "env:META_VERIFY_TOKEN"}


def q(mode: str | None = "subscribe", token: str | None = TOKEN, challenge: str | None = "1158201444") -> str:
    parts = []
    if mode is not None:
        parts.append(f"hub.mode={mode}")
    if token is not None:
        parts.append(f"hub.verify_token={token}")
    if challenge is not None:
        parts.append(f"hub.challenge={challenge}")
    return "&".join(parts)


@pytest.mark.parametrize(
    ("query", "status", "body", "reason"),
    [
        (q(), 200, b"1158201444", None),
        (q(challenge="CHALLENGE_ACCEPTED"), 200, b"CHALLENGE_ACCEPTED", None),
        (
            q().replace("hub.verify_token=meta", "hub.verify_token=%6Deta"),
            200,
            b"1158201444",
            None,
        ),  # decoded
        (q() + "&other=1", 200, b"1158201444", None),
        (q(token="meta-verify-token_43"), 403, b"", "mismatch"),
        (q(token=TOKEN + "x"), 403, b"", "mismatch"),
        (q(token="t%C3%B6k%C3%A9n"), 403, b"", "mismatch"),  # non-ASCII: a 403, never a TypeError
        (q(token=None), 403, b"", "missing"),
        (q(token=""), 403, b"", "missing"),
        (q(mode="unsubscribe"), 400, b"", "malformed"),
        (q(mode=None), 400, b"", "malformed"),
        (q(challenge=None), 400, b"", "malformed"),
        (q(challenge=""), 400, b"", "malformed"),
        (q(challenge="%3Cscript%3Ealert(1)%3C/script%3E"), 400, b"", "malformed"),  # never reflected
        (q(challenge="a b"), 400, b"", "malformed"),
        (q(challenge="x" * 257), 400, b"", "malformed"),
        (q() + "&hub.challenge=2", 400, b"", "malformed"),  # repeated
        (q() + f"&hub.verify_token={TOKEN}", 400, b"", "malformed"),
        (q(token="%ff"), 400, b"", "malformed"),  # not UTF-8
        (q() + "&x=1" * 20, 400, b"", "malformed"),  # too many fields
        ("", 400, b"", "malformed"),
    ],
)
def test_answers(query: str, status: int, body: bytes, reason: str | None) -> None:
    answer = MetaHandshake(TOKEN.encode()).answer(query)
    assert (answer.status, answer.body, answer.reason) == (status, body, reason)


def test_repr_hides_the_token() -> None:
    assert TOKEN not in repr(MetaHandshake(TOKEN.encode()))


async def _get(url: str) -> tuple[int, bytes, aiohttp.typedefs.LooseHeaders]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, await r.read(), r.headers


@pytest.mark.parametrize("mode", ["enforce", "report-only"])
async def test_handshake_through_the_gateway(mode: str) -> None:
    async with recording_upstream() as up:
        cfg = base_config([route("wa", upstream=up.url, verify=META, mode=mode)])
        async with running_gateway(cfg, ENV) as gw:
            status, body, headers = await _get(f"{gw.base}/hook/wa?{q()}")
            assert (status, body) == (200, b"1158201444")
            assert headers["Content-Type"] == "text/plain; charset=utf-8"
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert await gw.metric("webhook_gateway_requests_total", route="wa", outcome="handshake") == 1

            # A wrong token is refused in both modes: the GET is the gateway's to answer.
            status, body, _ = await _get(f"{gw.base}/hook/wa?{q(token='guess')}")
            assert status == 403 and b"verify_token_mismatch" in body and b"guess" not in body
            labels = {"route": "wa", "check": "signature", "mode": "enforce"}
            assert await gw.metric("webhook_gateway_check_failures_total", reason="mismatch", **labels) == 1
            status, body, headers = await _get(f"{gw.base}/hook/wa?{q(challenge='%3Ch1%3E')}")
            assert status == 400 and headers["Content-Type"] == "application/json" and b"<h1>" not in body
            assert await gw.metric("webhook_gateway_check_failures_total", reason="malformed", **labels) == 1
            assert await gw.metric("webhook_gateway_requests_total", route="wa", outcome="rejected") == 2
            assert up.received == []  # nothing was forwarded
            assert TOKEN not in gw.log.getvalue()


async def test_get_only_where_a_handshake_is_configured() -> None:
    async with recording_upstream() as up:
        no_token = {"scheme": "meta", "secrets": ["env:APP_SECRET"]}
        gh = {"scheme": "github", "secrets": ["env:APP_SECRET"]}
        routes = [route("wa", upstream=up.url, verify=no_token), route("gh", upstream=up.url, verify=gh)]
        async with running_gateway(base_config(routes), ENV) as gw:
            for name in ("wa", "gh"):
                status, _, headers = await _get(f"{gw.base}/hook/{name}?{q()}")
                assert (status, headers["Allow"]) == (405, "POST")
            assert up.received == []


async def test_source_allow_list_applies_to_the_handshake() -> None:
    async with recording_upstream() as up:
        r = route("wa", upstream=up.url, verify=META, allow_sources=["203.0.113.0/24"])
        async with running_gateway(base_config([r]), ENV) as gw:
            async with (
                aiohttp.ClientSession() as s,
                s.get(f"{gw.base}/hook/wa?{q()}", headers={"X-Forwarded-For": "198.51.100.7"}) as resp,
            ):
                assert resp.status == 403
                assert b"source_not_allowed" in await resp.read()
            async with (
                aiohttp.ClientSession() as s,
                s.get(f"{gw.base}/hook/wa?{q()}", headers={"X-Forwarded-For": "203.0.113.9"}) as resp,
            ):
                assert (resp.status, await resp.read()) == (200, b"1158201444")
