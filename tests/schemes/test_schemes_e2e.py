"""Every scheme through a real gateway and a recording upstream on loopback.

Requests are signed by the senders' own SDKs where they publish one (stripe, slack_sdk,
standardwebhooks, twilio) and by plain hmac/base64 per the senders' docs otherwise.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest
from slack_sdk.signature import SignatureVerifier
from standardwebhooks.webhooks import Webhook
from stripe import WebhookSignature
from twilio.request_validator import RequestValidator

from tests.support.inprocess import base_config, post, route, running_gateway
from tests.support.upstream import recording_upstream

SECRETS = {
    "APP_SECRET": "meta-app-secret-0123456789",
    "GH_SECRET": "It's a Secret to Everybody",
    "SLACK_SECRET": "8f742231b10e8888abcd99yyyzzz85a5",
    "STRIPE_SECRET": "whsec_stripe_endpoint_secret",
    "SW_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "SHOP_SECRET": "shpss_shop_secret",
    "GL_TOKEN": "gitlab-token-value",
    "TWILIO_TOKEN": "twilio-auth-token-0123",
}
TWILIO_URL = "https://bots.example.com/hook/bot"  # what Twilio calls, in front of a TLS proxy
JSON_BODY = b'{"id":"evt_1","text":"caf\\u00e9 \\ud83d\\ude00","n":1}'
FORM_BODY = urlencode([("Body", "héllo & bye"), ("From", "+15005550006"), ("FromCity", "")]).encode()

Sign = Callable[[bytes, int], tuple[list[tuple[str, str]], str]]  # body, unix time -> headers, query


def _hub(secret: str) -> Sign:
    def sign(body: bytes, now: int) -> tuple[list[tuple[str, str]], str]:
        mac = hmac.new(SECRETS[secret].encode(), body, hashlib.sha256).hexdigest()
        return [("X-Hub-Signature-256", "sha256=" + mac)], ""

    return sign


def _slack(body: bytes, now: int) -> tuple[list[tuple[str, str]], str]:
    sig = SignatureVerifier(SECRETS["SLACK_SECRET"]).generate_signature(timestamp=str(now), body=body)
    assert sig is not None
    return [("X-Slack-Request-Timestamp", str(now)), ("X-Slack-Signature", sig)], ""


def _stripe(body: bytes, now: int) -> tuple[list[tuple[str, str]], str]:
    header = WebhookSignature.generate_signature_header(
        body.decode(), SECRETS["STRIPE_SECRET"], timestamp=now
    )
    return [("Stripe-Signature", header)], ""


def _standard(body: bytes, now: int) -> tuple[list[tuple[str, str]], str]:
    sig = Webhook(SECRETS["SW_SECRET"]).sign("msg_e2e", datetime.fromtimestamp(now, tz=UTC), body.decode())
    return [("webhook-id", "msg_e2e"), ("webhook-timestamp", str(now)), ("webhook-signature", sig)], ""


def _shopify(body: bytes, now: int) -> tuple[list[tuple[str, str]], str]:
    digest = hmac.new(SECRETS["SHOP_SECRET"].encode(), body, hashlib.sha256).digest()
    return [("X-Shopify-Hmac-Sha256", base64.b64encode(digest).decode())], ""


def _gitlab(body: bytes, now: int) -> tuple[list[tuple[str, str]], str]:
    return [("X-Gitlab-Token", SECRETS["GL_TOKEN"])], ""


def _twilio_form(body: bytes, now: int) -> tuple[list[tuple[str, str]], str]:
    from urllib.parse import parse_qsl

    query = "tenant=acme"
    params = dict(parse_qsl(body.decode(), keep_blank_values=True))
    sig = RequestValidator(SECRETS["TWILIO_TOKEN"]).compute_signature(f"{TWILIO_URL}?{query}", params)
    return [("X-Twilio-Signature", sig), ("Content-Type", "application/x-www-form-urlencoded")], query


def _twilio_json(body: bytes, now: int) -> tuple[list[tuple[str, str]], str]:
    query = f"bodySHA256={hashlib.sha256(body).hexdigest()}"
    sig = RequestValidator(SECRETS["TWILIO_TOKEN"]).compute_signature(f"{TWILIO_URL}?{query}", {})
    return [("X-Twilio-Signature", sig), ("Content-Type", "application/json")], query


@dataclass(frozen=True)
class Case:
    verify: dict[str, object]
    sign: Sign
    body: bytes = JSON_BODY
    timestamped: bool = False


CASES: dict[str, Case] = {
    "meta": Case({"scheme": "meta", "secrets": ["env:APP_SECRET"]}, _hub("APP_SECRET")),
    "github": Case({"scheme": "github", "secrets": ["env:GH_SECRET"]}, _hub("GH_SECRET")),
    "slack": Case({"scheme": "slack", "secrets": ["env:SLACK_SECRET"]}, _slack, timestamped=True),
    "stripe": Case({"scheme": "stripe", "secrets": ["env:STRIPE_SECRET"]}, _stripe, timestamped=True),
    "standard-webhooks": Case(
        {"scheme": "standard-webhooks", "secrets": ["env:SW_SECRET"]}, _standard, timestamped=True
    ),
    "shopify": Case({"scheme": "shopify", "secrets": ["env:SHOP_SECRET"]}, _shopify),
    "gitlab": Case({"scheme": "gitlab", "secrets": ["env:GL_TOKEN"]}, _gitlab),
    "twilio-form": Case(
        {"scheme": "twilio", "secrets": ["env:TWILIO_TOKEN"], "public_url": TWILIO_URL},
        _twilio_form,
        FORM_BODY,
    ),
    "twilio-json": Case(
        {"scheme": "twilio", "secrets": ["env:TWILIO_TOKEN"], "public_url": TWILIO_URL}, _twilio_json
    ),
}
SIGNATURE = {"check": "signature", "route": "bot"}


def _url(base: str, query: str) -> str:
    return f"{base}/hook/bot" + (f"?{query}" if query else "")


@pytest.mark.parametrize("name", sorted(CASES))
async def test_valid_is_forwarded_byte_exact(name: str) -> None:
    case = CASES[name]
    headers, query = case.sign(case.body, int(time.time()))
    async with (
        recording_upstream() as up,
        running_gateway(base_config([route(upstream=up.url, verify=case.verify)]), SECRETS) as gw,
    ):
        status, answer, _ = await post(_url(gw.base, query), case.body, headers)
        assert (status, answer) == (200, b'{"ok":true}')
        (got,) = up.received
        assert got.body == case.body
        assert got.path_qs == "/webhook" + (f"?{query}" if query else "")
        assert got.header("X-Webhook-Verdict") == "pass"
        assert await gw.metric("webhook_gateway_requests_total", route="bot", outcome="forwarded") == 1
        assert await gw.metric("webhook_gateway_secret_matches_total", route="bot", secret="0") == 1
        assert await gw.metric("webhook_gateway_check_failures_total", **SIGNATURE) == 0


@pytest.mark.parametrize("name", sorted(CASES))
async def test_one_byte_changed_is_rejected_in_enforce(name: str) -> None:
    case = CASES[name]
    headers, query = case.sign(case.body, int(time.time()))
    tampered = case.body.replace(b"1", b"2", 1) if b"1" in case.body else case.body + b" "
    if name == "gitlab":
        headers = [("X-Gitlab-Token", SECRETS["GL_TOKEN"][:-1] + "X")]  # GitLab signs no body
    async with (
        recording_upstream() as up,
        running_gateway(base_config([route(upstream=up.url, verify=case.verify)]), SECRETS) as gw,
    ):
        status, answer, _ = await post(_url(gw.base, query), tampered, headers)
        assert status == 401
        assert json.loads(answer) == {"error": "signature_mismatch"}
        assert up.received == []
        labels = {**SIGNATURE, "reason": "mismatch", "mode": "enforce"}
        assert await gw.metric("webhook_gateway_check_failures_total", **labels) == 1
        assert await gw.metric("webhook_gateway_requests_total", route="bot", outcome="rejected") == 1


@pytest.mark.parametrize("name", sorted(CASES))
async def test_report_only_forwards_and_marks_a_forgery(name: str) -> None:
    case = CASES[name]
    headers, query = case.sign(case.body, int(time.time()))
    headers = [(k, v) for k, v in headers if k.lower() == "content-type"]  # every credential removed
    async with recording_upstream() as up:
        cfg = base_config([route(upstream=up.url, verify=case.verify, mode="report-only")])
        async with running_gateway(cfg, SECRETS) as gw:
            status, _, _ = await post(_url(gw.base, query), case.body, headers)
            assert status == 200
            (got,) = up.received
            assert got.body == case.body
            assert got.header("X-Webhook-Verdict") == "would-reject; check=signature; reason=missing"
            labels = {**SIGNATURE, "reason": "missing", "mode": "report-only"}
            assert await gw.metric("webhook_gateway_check_failures_total", **labels) == 1
            assert await gw.metric("webhook_gateway_requests_total", route="bot", outcome="would_reject") == 1


@pytest.mark.parametrize("name", sorted(n for n, c in CASES.items() if c.timestamped))
@pytest.mark.parametrize("skew", [-400, 400])
async def test_stale_timestamp_is_rejected(name: str, skew: int) -> None:
    case = CASES[name]
    headers, query = case.sign(case.body, int(time.time()) + skew)
    async with (
        recording_upstream() as up,
        running_gateway(base_config([route(upstream=up.url, verify=case.verify)]), SECRETS) as gw,
    ):
        status, answer, _ = await post(_url(gw.base, query), case.body, headers)
        assert (status, json.loads(answer)) == (401, {"error": "signature_stale"})
        assert up.received == []
        labels = {**SIGNATURE, "reason": "stale", "mode": "enforce"}
        assert await gw.metric("webhook_gateway_check_failures_total", **labels) == 1


@pytest.mark.parametrize(
    ("name", "header", "value"),
    [
        ("meta", "X-Hub-Signature-256", "sha1=abc"),
        ("github", "X-Hub-Signature-256", "sha256=" + "Z" * 64),
        ("slack", "X-Slack-Request-Timestamp", "12.5"),
        ("stripe", "Stripe-Signature", "t=1, v1=00"),
        ("standard-webhooks", "webhook-signature", "v1,not base64!"),
        ("shopify", "X-Shopify-Hmac-Sha256", "%%%"),
        ("twilio-json", "X-Twilio-Signature", "###"),
    ],
)
async def test_malformed_header_is_a_401_never_a_500(name: str, header: str, value: str) -> None:
    case = CASES[name]
    headers, query = case.sign(case.body, int(time.time()))
    headers = [(k, value if k.lower() == header.lower() else v) for k, v in headers]
    async with (
        recording_upstream() as up,
        running_gateway(base_config([route(upstream=up.url, verify=case.verify)]), SECRETS) as gw,
    ):
        status, answer, _ = await post(_url(gw.base, query), case.body, headers)
        assert (status, json.loads(answer)) == (401, {"error": "signature_malformed"})
        labels = {**SIGNATURE, "reason": "malformed", "mode": "enforce"}
        assert await gw.metric("webhook_gateway_check_failures_total", **labels) == 1
        assert up.received == []
