"""Handshakes the gateway answers itself (Slack url_verification, Microsoft Graph validation,
Meta's GET), on a passthrough and on a spool route: answered, never forwarded or spooled."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.schemes.slack import SlackChallenge
from tests.support.inprocess import base_config, post, route, running_gateway
from tests.support.schemes import signed
from tests.support.spool import rows
from tests.support.upstream import recording_upstream

SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
GRAPH_STATE = "graph-client-state-0123"
META_TOKEN = "meta-verify-token_42"
ENV = {
    "SLACK_SECRET": SLACK_SECRET,
    "GRAPH_STATE": GRAPH_STATE,
    "APP_SECRET": "app-secret-0123",
    "META_VERIFY_TOKEN": META_TOKEN,
}
VERIFY: dict[str, dict[str, Any]] = {
    "slack": {"scheme": "slack", "secrets": ["env:SLACK_SECRET"]},
    "msgraph": {"scheme": "msgraph", "secrets": ["env:GRAPH_STATE"]},
    "meta": {"scheme": "meta", "secrets": ["env:APP_SECRET"], "verify_token": "env:META_VERIFY_TOKEN"},
}
# Slack's documented url_verification body (api.slack.com/events/url_verification).
CHALLENGE = "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
URL_VERIFICATION = json.dumps(
    {"token": "Jhj5dZrVaK7ZwHHjRyZWjbDl", "challenge": CHALLENGE, "type": "url_verification"}
).encode()
GRAPH_TOKEN = "Validation: Testing client application reachability for subscription Request-Id: 522a8e7e"
GRAPH_QUERY = "validationToken=" + (
    "Validation%3A%20Testing%20client%20application%20reachability%20for%20subscription%20Request-Id%3A%20522a8e7e"
)


def slack_headers(body: bytes, secret: str = SLACK_SECRET, ts: int | None = None) -> dict[str, str]:
    """As Slack signs (api.slack.com/authentication/verifying-requests-from-slack):
    `v0=` + hex HMAC-SHA256(signing secret, "v0:" + timestamp + ":" + body)."""
    stamp = str(int(time.time()) if ts is None else ts)
    digest = hmac.new(secret.encode(), b"v0:" + stamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": "v0=" + digest,
    }


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (URL_VERIFICATION, (200, CHALLENGE.encode(), None)),
        (b'{"type":"url_verification","challenge":"abc_123-x.y~z"}', (200, b"abc_123-x.y~z", None)),
        (b'{"type":"url_verification"}', (400, b"", "malformed")),
        (b'{"type":"url_verification","challenge":""}', (400, b"", "malformed")),
        (b'{"type":"url_verification","challenge":7}', (400, b"", "malformed")),
        (b'{"type":"url_verification","challenge":"<script>"}', (400, b"", "malformed")),  # never reflected
        (b'{"type":"url_verification","challenge":"' + b"x" * 257 + b'"}', (400, b"", "malformed")),
        (b'{"type":"event_callback","event":{"text":"url_verification"}}', None),  # an event
        (b'{"type":"event_callback","note":"\\"url_verification\\""}', None),
        (b"payload=%7B%22type%22%3A%22url_verification%22%7D", None),  # form-encoded: not JSON
        (b'["url_verification"]', None),
        (b'"url_verification"', None),
        (b"{" * 50_000 + b'"url_verification"', None),  # never raises
    ],
)
def test_slack_challenge_answers(body: bytes, expected: tuple[int, bytes, str | None] | None) -> None:
    got = SlackChallenge().answer(signed({}, body, 0.0))
    assert (None if got is None else (got.status, got.body, got.reason)) == expected


def _route(name: str, up_url: str, delivery: str, mode: str = "enforce") -> dict[str, Any]:
    return route(name, upstream=up_url, verify=VERIFY[name], delivery=delivery, mode=mode)


def _config(routes: list[dict[str, Any]], tmp_path: Path) -> dict[str, Any]:
    return base_config(routes, spool={"path": str(tmp_path / "spool.db")})


def _spooled(tmp_path: Path) -> list[tuple[Any, ...]]:
    db = tmp_path / "spool.db"
    return rows(db, "pending") + rows(db, "dead") if db.exists() else []


async def _handshake(base: str, sender: str) -> tuple[int, bytes, Any]:
    if sender == "slack":
        return await post(f"{base}/hook/slack", URL_VERIFICATION, slack_headers(URL_VERIFICATION))
    if sender == "msgraph":
        # Graph's validation POST: an empty text/plain body, the token in the query.
        return await post(
            f"{base}/hook/msgraph?{GRAPH_QUERY}", b"", {"Content-Type": "text/plain; charset=utf-8"}
        )
    query = f"hub.mode=subscribe&hub.verify_token={META_TOKEN}&hub.challenge=1158201444"
    async with aiohttp.ClientSession() as s, s.get(f"{base}/hook/meta?{query}") as r:
        return r.status, await r.read(), r.headers


ANSWERS = {"slack": CHALLENGE.encode(), "msgraph": GRAPH_TOKEN.encode(), "meta": b"1158201444"}


@pytest.mark.parametrize("delivery", ["passthrough", "spool"])
@pytest.mark.parametrize("sender", ["slack", "msgraph", "meta"])
async def test_answered_by_the_gateway_in_both_delivery_modes(
    sender: str, delivery: str, tmp_path: Path
) -> None:
    async with recording_upstream() as up:
        async with running_gateway(_config([_route(sender, up.url, delivery)], tmp_path), ENV) as gw:
            status, body, headers = await _handshake(gw.base, sender)
            assert (status, body) == (200, ANSWERS[sender])
            assert headers["Content-Type"] == "text/plain; charset=utf-8"
            assert headers["X-Content-Type-Options"] == "nosniff"
            handshakes = await gw.metric("webhook_gateway_requests_total", route=sender, outcome="handshake")
            assert handshakes == 1
            spooled = await gw.metric("webhook_gateway_requests_total", route=sender, outcome="spooled")
            assert spooled == 0
        assert up.received == []  # nothing forwarded
        assert _spooled(tmp_path) == []  # nothing stored
        assert SLACK_SECRET not in gw.log.getvalue() and GRAPH_STATE not in gw.log.getvalue()


@pytest.mark.parametrize("delivery", ["passthrough", "spool"])
async def test_a_forged_slack_url_verification_is_refused_and_never_answered(
    delivery: str, tmp_path: Path
) -> None:
    async with recording_upstream() as up:
        async with running_gateway(_config([_route("slack", up.url, delivery)], tmp_path), ENV) as gw:
            forged = slack_headers(URL_VERIFICATION, secret="not-the-signing-secret")
            status, body, _ = await post(f"{gw.base}/hook/slack", URL_VERIFICATION, forged)
            assert status == 401 and CHALLENGE.encode() not in body
            stale = slack_headers(URL_VERIFICATION, ts=int(time.time()) - 3600)  # a replayed handshake
            status, body, _ = await post(f"{gw.base}/hook/slack", URL_VERIFICATION, stale)
            assert status == 401 and CHALLENGE.encode() not in body
            unsigned = {"Content-Type": "application/json"}
            status, body, _ = await post(f"{gw.base}/hook/slack", URL_VERIFICATION, unsigned)
            assert status == 401 and CHALLENGE.encode() not in body
            assert await gw.metric("webhook_gateway_requests_total", route="slack", outcome="rejected") == 3
            assert await gw.metric("webhook_gateway_requests_total", route="slack", outcome="handshake") == 0
        assert up.received == []
        assert _spooled(tmp_path) == []


async def test_report_only_forwards_a_forged_url_verification_unanswered(tmp_path: Path) -> None:
    # Report-only forwards what enforce would refuse; the gateway still never answers for it.
    async with recording_upstream() as up:
        r = _route("slack", up.url, "passthrough", mode="report-only")
        async with running_gateway(_config([r], tmp_path), ENV) as gw:
            forged = slack_headers(URL_VERIFICATION, secret="not-the-signing-secret")
            status, body, _ = await post(f"{gw.base}/hook/slack", URL_VERIFICATION, forged)
            assert (status, body) == (200, b'{"ok":true}')  # the upstream's answer, not the challenge
            assert await gw.metric("webhook_gateway_requests_total", route="slack", outcome="handshake") == 0
        [got] = up.received
        assert got.body == URL_VERIFICATION
        assert got.header("X-Webhook-Verdict") == "would-reject; check=signature; reason=mismatch"


async def test_other_slack_requests_are_forwarded(tmp_path: Path) -> None:
    event = b'{"type":"event_callback","event":{"type":"message","text":"url_verification"}}'
    async with recording_upstream() as up:
        async with running_gateway(_config([_route("slack", up.url, "passthrough")], tmp_path), ENV) as gw:
            status, body, _ = await post(f"{gw.base}/hook/slack", event, slack_headers(event))
            assert (status, body) == (200, b'{"ok":true}')
        [got] = up.received
        assert got.body == event and got.header("X-Webhook-Verdict") == "pass"


def graph_body(*states: str) -> bytes:
    items = [{"subscriptionId": "sub-1", "changeType": "created", "clientState": s} for s in states]
    return json.dumps({"value": items}).encode()


@pytest.mark.parametrize("mode", ["enforce", "report-only"])
async def test_graph_notifications_through_the_gateway(mode: str, tmp_path: Path) -> None:
    json_ct = {"Content-Type": "application/json"}
    async with recording_upstream() as up:
        r = _route("msgraph", up.url, "passthrough", mode=mode)
        async with running_gateway(_config([r], tmp_path), ENV) as gw:
            url = f"{gw.base}/hook/msgraph"
            genuine = graph_body(GRAPH_STATE, GRAPH_STATE)
            assert (await post(url, genuine, json_ct))[0] == 200
            forged = graph_body(GRAPH_STATE, "guess")
            status, _, _ = await post(url, forged, json_ct)
            assert status == (401 if mode == "enforce" else 200)
            # A markup token is refused in both modes, and never reflected.
            status, body, headers = await post(f"{url}?validationToken=%3Ch1%3Ehi%3C%2Fh1%3E", b"", {})
            assert status == 400 and b"<h1>" not in body and headers["Content-Type"] == "application/json"
            # An empty POST without a token is neither a handshake nor a notification.
            status, _, _ = await post(url, b"", {})
            assert status == (401 if mode == "enforce" else 200)
            labels = {"route": "msgraph", "check": "signature", "mode": "enforce"}
            assert await gw.metric("webhook_gateway_check_failures_total", reason="malformed", **labels) == 1
        got = [g.body for g in up.received]
        assert got == ([genuine] if mode == "enforce" else [genuine, forged, b""])
        assert up.received[0].header("X-Webhook-Verdict") == "pass"
