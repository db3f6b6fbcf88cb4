"""The presets' handshakes (Zoom, Twitch, X CRC, Dropbox) through a real gateway, on a
passthrough and on a spool route: answered by the gateway, never forwarded or spooled, counted
as outcome="handshake"; a forged signed handshake is refused and never answered.

Each expected answer is computed here from the sender's documentation, not the gateway's code.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.schemes.base import Signed
from gateway.schemes.sender_handshakes import DropboxChallenge, TwitchChallenge, XCrc
from tests.schemes.test_template_presets import twitch_headers, zoom_headers
from tests.support.inprocess import base_config, post, route, running_gateway
from tests.support.schemes import signed
from tests.support.spool import FAST_SPOOL, rows
from tests.support.upstream import recording_upstream

SECRET = "handshake-secret-0123"
ENV = {"S": SECRET}
DELIVERIES = ["passthrough", "spool"]


def gateway_config(tmp_path: Path, scheme: str, delivery: str, upstream: str) -> dict[str, Any]:
    r = route("h", upstream=upstream, verify={"scheme": scheme, "secrets": ["env:S"]}, delivery=delivery)
    extra = {"spool": {"path": str(tmp_path / "spool.db"), **FAST_SPOOL}} if delivery == "spool" else {}
    return base_config([r], **extra)


async def get(url: str) -> tuple[int, bytes, Any]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, await r.read(), r.headers


async def assert_answered_only(gw: Any, up: Any, tmp_path: Path, delivery: str, count: int = 1) -> None:
    assert await gw.metric("webhook_gateway_requests_total", route="h", outcome="handshake") == count
    assert up.received == []
    if delivery == "spool":
        assert rows(tmp_path / "spool.db") == []


# ---------------------------------------------------------------- Zoom


def zoom_validation(plain: str) -> bytes:
    # developers.zoom.us/docs/api/webhooks "Validate your webhook endpoint": the POST body.
    return json.dumps(
        {"payload": {"plainToken": plain}, "event_ts": 1654503849680, "event": "endpoint.url_validation"}
    ).encode()


@pytest.mark.parametrize("delivery", DELIVERIES)
async def test_zoom_url_validation(tmp_path: Path, delivery: str) -> None:
    async with (
        recording_upstream() as up,
        running_gateway(gateway_config(tmp_path, "zoom", delivery, up.url), ENV) as gw,
    ):
        body = zoom_validation("qgg8vlvZRS6UYooatFL8Aw")
        status, answer, headers = await post(
            f"{gw.base}/hook/h", body, zoom_headers(SECRET, body, int(time.time()))
        )
        assert status == 200 and headers["Content-Type"].startswith("application/json")
        # encryptedToken = hex HMAC-SHA256(secret token, plainToken), as Zoom documents it.
        expected = hmac.new(SECRET.encode(), b"qgg8vlvZRS6UYooatFL8Aw", hashlib.sha256).hexdigest()
        assert json.loads(answer) == {"plainToken": "qgg8vlvZRS6UYooatFL8Aw", "encryptedToken": expected}
        await assert_answered_only(gw, up, tmp_path, delivery)

        # Forged: the same validation signed with another secret is refused, not answered.
        status, answer, _ = await post(
            f"{gw.base}/hook/h", body, zoom_headers("guess", body, int(time.time()))
        )
        assert status == 401 and b"encryptedToken" not in answer
        # A token outside the safe alphabet is refused even when signed.
        odd = zoom_validation("<script>")
        status, answer, _ = await post(f"{gw.base}/hook/h", odd, zoom_headers(SECRET, odd, int(time.time())))
        assert status == 400 and b"<script>" not in answer
        await assert_answered_only(gw, up, tmp_path, delivery)

        # An ordinary event goes on as usual.
        event = b'{"event":"meeting.started","payload":{}}'
        status, _, _ = await post(f"{gw.base}/hook/h", event, zoom_headers(SECRET, event, int(time.time())))
        assert status == 200
        outcome = "spooled" if delivery == "spool" else "forwarded"
        assert await gw.metric("webhook_gateway_requests_total", route="h", outcome=outcome) == 1


# ---------------------------------------------------------------- Twitch


def twitch_verification(challenge: str) -> bytes:
    # dev.twitch.tv/docs/eventsub/handling-webhook-events: the verification request's body.
    return json.dumps(
        {
            "challenge": challenge,
            "subscription": {
                "id": "f1c2a387-161a-49f9-a165-0f21d7a4e1c4",
                "status": "webhook_callback_verification_pending",
            },
        }
    ).encode()


@pytest.mark.parametrize("delivery", DELIVERIES)
async def test_twitch_callback_verification(tmp_path: Path, delivery: str) -> None:
    async with (
        recording_upstream() as up,
        running_gateway(gateway_config(tmp_path, "twitch", delivery, up.url), ENV) as gw,
    ):
        body = twitch_verification("pogchamp-kappa-360noscope-vohiyo")
        headers = twitch_headers(SECRET, body, int(time.time()))
        headers["Twitch-Eventsub-Message-Type"] = "webhook_callback_verification"
        status, answer, resp_headers = await post(f"{gw.base}/hook/h", body, headers)
        assert (status, answer) == (200, b"pogchamp-kappa-360noscope-vohiyo")
        assert resp_headers["Content-Type"].startswith("text/plain")
        await assert_answered_only(gw, up, tmp_path, delivery)

        forged = twitch_headers("guess", body, int(time.time()))
        forged["Twitch-Eventsub-Message-Type"] = "webhook_callback_verification"
        status, answer, _ = await post(f"{gw.base}/hook/h", body, forged)
        assert status == 401 and b"pogchamp" not in answer
        await assert_answered_only(gw, up, tmp_path, delivery)

        # A notification (same signature layout, other type) is delivered, not answered.
        note = b'{"subscription":{},"event":{"user_id":"1"}}'
        headers = twitch_headers(SECRET, note, int(time.time()))
        headers["Twitch-Eventsub-Message-Type"] = "notification"
        status, _, _ = await post(f"{gw.base}/hook/h", note, headers)
        assert status == 200
        outcome = "spooled" if delivery == "spool" else "forwarded"
        assert await gw.metric("webhook_gateway_requests_total", route="h", outcome=outcome) == 1


# ---------------------------------------------------------------- X CRC and Dropbox (GET)


@pytest.mark.parametrize("delivery", DELIVERIES)
async def test_x_crc(tmp_path: Path, delivery: str) -> None:
    async with (
        recording_upstream() as up,
        running_gateway(gateway_config(tmp_path, "x", delivery, up.url), ENV) as gw,
    ):
        token = "9b4507b3-9040-4669-9ca3-6b94edb50553"  # the example token in X's CRC samples
        status, answer, headers = await get(f"{gw.base}/hook/h?crc_token={token}")
        assert status == 200 and headers["Content-Type"].startswith("application/json")
        assert headers["X-Content-Type-Options"] == "nosniff"
        digest = hmac.new(SECRET.encode(), token.encode(), hashlib.sha256).digest()
        assert json.loads(answer) == {"response_token": "sha256=" + base64.b64encode(digest).decode()}
        await assert_answered_only(gw, up, tmp_path, delivery)

        # A token that could be a JSON body is never signed: that would forge a delivery.
        status, answer, _ = await get(f"{gw.base}/hook/h?crc_token=%7B%22a%22%3A1%7D")
        assert status == 400 and b"response_token" not in answer
        status, _, _ = await get(f"{gw.base}/hook/h")
        assert status == 400
        await assert_answered_only(gw, up, tmp_path, delivery)


@pytest.mark.parametrize("delivery", DELIVERIES)
async def test_dropbox_challenge(tmp_path: Path, delivery: str) -> None:
    async with (
        recording_upstream() as up,
        running_gateway(gateway_config(tmp_path, "dropbox", delivery, up.url), ENV) as gw,
    ):
        status, answer, headers = await get(f"{gw.base}/hook/h?challenge=eCAQHvKhq3pPQgGmA0Y")
        assert (status, answer) == (200, b"eCAQHvKhq3pPQgGmA0Y")
        assert headers["Content-Type"].startswith("text/plain")
        assert headers["X-Content-Type-Options"] == "nosniff"
        await assert_answered_only(gw, up, tmp_path, delivery)
        status, answer, _ = await get(f"{gw.base}/hook/h?challenge=%3Ch1%3Ehi")
        assert status == 400 and b"<h1>" not in answer
        await assert_answered_only(gw, up, tmp_path, delivery)


async def test_routes_without_a_handshake_still_refuse_get(tmp_path: Path) -> None:
    async with (
        recording_upstream() as up,
        running_gateway(gateway_config(tmp_path, "xero", "passthrough", up.url), ENV) as gw,
    ):
        status, _, headers = await get(f"{gw.base}/hook/h?challenge=abc")
        assert (status, headers["Allow"]) == (405, "POST")


# ---------------------------------------------------------------- units


@pytest.mark.parametrize(
    ("query", "ok"),
    [
        ("crc_token=abc-123_x.y~z", True),
        ("crc_token=", False),
        ("crc_token=a&crc_token=b", False),
        ("crc_token=" + "a" * 257, False),
        ("crc_token=%FF", False),
        ("crc_token=a+b", False),  # a space once decoded
        ("crc_token=dGVzdA%2B%2F%3D", True),  # base64
        ("other=1", False),
        ("crc_token=a" + "&x=1" * 20, False),
    ],
)
def test_x_crc_token_alphabet(query: str, ok: bool) -> None:
    assert (XCrc(b"k").answer(query).status == 200) is ok
    assert (DropboxChallenge().answer(query.replace("crc_token", "challenge")).status == 200) is ok


def test_x_crc_repr_hides_the_key() -> None:
    assert SECRET not in repr(XCrc(SECRET.encode()))


def test_twitch_challenge_only_for_its_message_type() -> None:
    body = twitch_verification("abc")
    c = TwitchChallenge()
    assert c.answer(signed({}, body, 0)) is None
    assert c.answer(signed({"Twitch-Eventsub-Message-Type": "revocation"}, body, 0)) is None
    answered = c.answer(signed({"Twitch-Eventsub-Message-Type": "webhook_callback_verification"}, body, 0))
    assert answered is not None and answered.body == b"abc"
    bad: Signed = signed({"Twitch-Eventsub-Message-Type": "webhook_callback_verification"}, b"[1]", 0)
    answered = c.answer(bad)
    assert answered is not None and answered.status == 400
