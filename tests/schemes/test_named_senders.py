"""The named-senders table of docs/senders/index.md, each row tested.

The table is the one source: this test reads every row (sender, scheme, `verify:` config), signs
a request with a signer written here from that sender's own documentation (cited beside it),
and runs it through the real verifier built from exactly the config in the table. The genuine
request must pass; one changed byte of the credential, and of the body where the sender signs
the body, must fail. A row without a signer, or a signer without a row, fails.
"""

from __future__ import annotations

import base64
import hmac
import json
import re
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from tests.support.env import ROOT_DIR
from tests.support.inprocess import base_config, post, route, running_gateway
from tests.support.schemes import flip, signed, verifier
from tests.support.upstream import recording_upstream

TABLE = ROOT_DIR / "docs" / "senders" / "index.md"
NOW = 1_700_000_000
# A body with an escaped non-ASCII character, as most senders send JSON.
JSON_BODY = b'{"id":"evt_01","type":"example.created","data":{"name":"caf\\u00e9","n":1}}'
FORM_BODY = b"AccountSid=AC123&Body=Hello+there&From=%2B15551234567&To=%2B15558675310"
STANDARD_SECRET = "whsec_" + base64.b64encode(b"standard-webhooks-key-32-bytes!!").decode()


@dataclass(frozen=True)
class Row:
    sender: str
    scheme: str
    verify: dict[str, Any]
    authenticates: str
    docs: str


def table_rows() -> list[Row]:
    text = TABLE.read_text(encoding="utf-8")
    block = text.split("<!-- senders:start -->", 1)[1].split("<!-- senders:end -->", 1)[0]
    rows: list[Row] = []
    for line in block.strip().splitlines()[2:]:  # header and separator
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == 5, line
        sender, scheme, verify, authenticates, docs = cells
        rows.append(Row(sender, scheme.strip("`"), yaml.safe_load(verify.strip("`")), authenticates, docs))
    return rows


ROWS = table_rows()


@dataclass(frozen=True)
class Wire:
    headers: dict[str, str]
    body: bytes
    query: str = ""
    credential: tuple[str, str] = ("", "")  # (header, value) the secret produced, or body marker


@dataclass(frozen=True)
class Sender:
    """How one sender signs, per its docs: `sign(secret, body, now) -> Wire`."""

    secret: str
    sign: Callable[[str, bytes, int], Wire]
    body: bytes = JSON_BODY
    signs_body: bool = True
    extra: dict[str, str] = field(default_factory=dict)


def _hmac(algorithm: str, key: str | bytes, message: bytes) -> bytes:
    return hmac.new(key.encode() if isinstance(key, str) else key, message, algorithm).digest()


def header_hmac(
    header: str, algorithm: str = "sha256", encoding: str = "hex", prefix: str = ""
) -> Callable[[str, bytes, int], Wire]:
    """`header: prefix + encoding(HMAC-algorithm(secret, raw body))` (the generic layout)."""

    def sign(secret: str, body: bytes, now: int) -> Wire:
        digest = _hmac(algorithm, secret, body)
        value = prefix + (digest.hex() if encoding == "hex" else base64.b64encode(digest).decode())
        return Wire({header: value, "Content-Type": "application/json"}, body, credential=(header, value))

    return sign


def token_header(header: str) -> Callable[[str, bytes, int], Wire]:
    """The secret itself in a header; the body is not signed."""

    def sign(secret: str, body: bytes, now: int) -> Wire:
        return Wire({header: secret, "Content-Type": "application/json"}, body, credential=(header, secret))

    return sign


def slack(secret: str, body: bytes, now: int) -> Wire:
    # api.slack.com/authentication/verifying-requests-from-slack: basestring "v0:" + timestamp
    # + ":" + body, HMAC-SHA256 with the signing secret, hex, sent as "v0=" + hex.
    value = "v0=" + _hmac("sha256", secret, b"v0:%d:" % now + body).hex()
    headers = {"X-Slack-Request-Timestamp": str(now), "X-Slack-Signature": value}
    return Wire(
        {**headers, "Content-Type": "application/json"}, body, credential=("X-Slack-Signature", value)
    )


def stripe(secret: str, body: bytes, now: int) -> Wire:
    # docs.stripe.com/webhooks#verify-manually: signed_payload = timestamp + "." + body,
    # HMAC-SHA256 keyed with the endpoint secret (whsec_... as is), hex; header t=...,v1=...
    value = f"t={now},v1=" + _hmac("sha256", secret, b"%d." % now + body).hex()
    return Wire(
        {"Stripe-Signature": value, "Content-Type": "application/json"},
        body,
        credential=("Stripe-Signature", value),
    )


def standard_webhooks(secret: str, body: bytes, now: int) -> Wire:
    # The Standard Webhooks spec as Replicate, OpenAI, Make and SignatureAPI document it:
    # key = base64-decode(secret without "whsec_"); HMAC-SHA256 of id + "." + timestamp + "."
    # + body; header "v1," + base64.
    key = base64.b64decode(secret.removeprefix("whsec_"))
    msg_id = "msg_2Lh9KRb0pzN4LePd3XiA0dMzhNG"
    value = "v1," + base64.b64encode(_hmac("sha256", key, f"{msg_id}.{now}.".encode() + body)).decode()
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(now), "webhook-signature": value}
    return Wire(
        {**headers, "Content-Type": "application/json"}, body, credential=("webhook-signature", value)
    )


TWILIO_URL = "https://bots.example.com/hook/twilio"


def twilio(secret: str, body: bytes, now: int) -> Wire:
    # twilio.com/docs/usage/webhooks/webhooks-security: the full URL, then each POST parameter
    # name followed by its value, sorted by name; HMAC-SHA1 with the auth token; base64.
    params = sorted(urllib.parse.parse_qsl(body.decode(), keep_blank_values=True))
    data = TWILIO_URL + "".join(k + v for k, v in params)
    value = base64.b64encode(_hmac("sha1", secret, data.encode())).decode()
    headers = {"X-Twilio-Signature": value, "Content-Type": "application/x-www-form-urlencoded"}
    return Wire(headers, body, credential=("X-Twilio-Signature", value))


def msgraph(secret: str, body: bytes, now: int) -> Wire:
    # learn.microsoft.com/en-us/graph/change-notifications-delivery-webhooks: Graph copies the
    # subscription's clientState into every item of {"value": [...]}; no header, no signature.
    items = [
        {
            "subscriptionId": "7f105c7d",
            "changeType": "created",
            "resource": "Users/a/Messages/b",
            "clientState": secret,
        },
        {
            "subscriptionId": "7f105c7d",
            "changeType": "updated",
            "resource": "Users/a/Messages/c",
            "clientState": secret,
        },
    ]
    payload = json.dumps({"value": items}).encode()
    return Wire({"Content-Type": "application/json"}, payload, credential=("", secret))


SENDERS: dict[str, Sender] = {
    # core.telegram.org/bots/api#setwebhook: the secret_token comes back in
    # X-Telegram-Bot-Api-Secret-Token.
    "Telegram": Sender(
        "tg-secret_TOKEN-0123456789", token_header("X-Telegram-Bot-Api-Secret-Token"), signs_body=False
    ),
    # docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries: sha256= + hex
    # HMAC-SHA256 of the body.
    "GitHub": Sender("It's a Secret to Everybody", header_hmac("X-Hub-Signature-256", prefix="sha256=")),
    # docs.gitlab.com/user/project/integrations/webhooks/: the secret token in X-Gitlab-Token.
    "GitLab": Sender("gitlab-token-0123", token_header("X-Gitlab-Token"), signs_body=False),
    "Slack": Sender("8f742231b10e8888abcd99yyyzzz85a5", slack),
    "Stripe": Sender("whsec_test_secret_0123456789", stripe),
    # shopify.dev/docs/apps/build/webhooks/subscribe/https: base64 HMAC-SHA256 of the body in
    # X-Shopify-Hmac-Sha256.
    "Shopify": Sender("shopify-client-secret", header_hmac("X-Shopify-Hmac-Sha256", encoding="base64")),
    "Twilio": Sender("12345-auth-token", twilio, body=FORM_BODY),
    # developers.facebook.com/docs/graph-api/webhooks/getting-started: X-Hub-Signature-256,
    # sha256= + hex HMAC-SHA256 of the payload with the app secret (the same for all three).
    "WhatsApp Cloud API": Sender("meta-app-secret", header_hmac("X-Hub-Signature-256", prefix="sha256=")),
    "Messenger": Sender("meta-app-secret", header_hmac("X-Hub-Signature-256", prefix="sha256=")),
    "Instagram": Sender("meta-app-secret", header_hmac("X-Hub-Signature-256", prefix="sha256=")),
    "Microsoft Graph": Sender("client-state-7a3f", msgraph, signs_body=False),
    # replicate.com/docs/topics/webhooks/verify-webhook; platform.openai.com/docs/guides/webhooks;
    # developers.make.com/event-subscription/implementation/verify-signatures;
    # signatureapi.com/docs/api/guides/how-to/verify-webhooks: all Standard Webhooks v1.
    "Replicate": Sender(STANDARD_SECRET, standard_webhooks),
    "OpenAI": Sender(STANDARD_SECRET, standard_webhooks),
    "Make": Sender(STANDARD_SECRET, standard_webhooks),
    "SignatureAPI": Sender(STANDARD_SECRET, standard_webhooks),
    # linear.app/developers/webhooks: Linear-Signature, hex HMAC-SHA256 of the raw body.
    "Linear": Sender("lin_wh_secret", header_hmac("Linear-Signature")),
    # docs.sentry.io/integrations/integration-platform/webhooks/: Sentry-Hook-Signature, hex
    # HMAC-SHA256 of the body with the integration's client secret.
    "Sentry": Sender("sentry-client-secret", header_hmac("Sentry-Hook-Signature")),
    # bitbucket.org/blog/enhanced-webhook-security: X-Hub-Signature: sha256= + hex HMAC-SHA256.
    "Bitbucket Cloud": Sender("bb-secret", header_hmac("X-Hub-Signature", prefix="sha256=")),
    # docs.gitea.com/usage/webhooks and forgejo.org/docs/latest/user/webhooks/: bare hex
    # HMAC-SHA256 of the body in X-Gitea-Signature / X-Forgejo-Signature.
    "Gitea": Sender("gitea-secret", header_hmac("X-Gitea-Signature")),
    "Forgejo": Sender("forgejo-secret", header_hmac("X-Forgejo-Signature")),
    # developers.intercom.com/docs/references/webhooks/webhook-models: X-Hub-Signature,
    # sha1= + hex HMAC-SHA1 of the body with the app's client_secret.
    "Intercom": Sender("intercom-client-secret", header_hmac("X-Hub-Signature", "sha1", prefix="sha1=")),
    # docs.lemonsqueezy.com/help/webhooks/signing-requests: X-Signature, HMAC-SHA256 hex digest.
    "Lemon Squeezy": Sender("lemon-secret", header_hmac("X-Signature")),
    # typeform.com/developers/webhooks/secure-your-webhooks/: Typeform-Signature: sha256= + base64.
    "Typeform": Sender(
        "typeform-secret", header_hmac("Typeform-Signature", encoding="base64", prefix="sha256=")
    ),
    # vercel.com/docs/observability/webhooks: x-vercel-signature, hex HMAC-SHA1 of the body.
    "Vercel": Sender("vercel-secret", header_hmac("x-vercel-signature", "sha1")),
    # developer.clickup.com/docs/webhooksignature: X-Signature, hex HMAC-SHA256 of the body.
    "ClickUp": Sender("clickup-secret", header_hmac("X-Signature")),
    # docs.logto.io/developers/webhooks/secure-webhooks: logto-signature-sha-256, hex HMAC-SHA256.
    "Logto": Sender("logto-signing-key", header_hmac("logto-signature-sha-256")),
    # developer.katanamrp.com/docs/verifying-webhook-signature: x-sha2-signature, hex HMAC-SHA256.
    "Katana": Sender("katana-token", header_hmac("x-sha2-signature")),
    # Todoist's SDK docs (VerifyWebhookSignatureArgs): X-Todoist-Hmac-SHA256, base64 HMAC-SHA256
    # of the raw body keyed with the app's client secret.
    "Todoist": Sender("todoist-client-secret", header_hmac("X-Todoist-Hmac-SHA256", encoding="base64")),
    # Razorpay: HMAC-SHA256(raw webhook body, webhook secret), hex, in X-Razorpay-Signature.
    "Razorpay": Sender("razorpay-webhook-secret", header_hmac("X-Razorpay-Signature")),
    # docs.cdp.coinbase.com/commerce/api-arcitecture/webhooks-security: X-CC-Webhook-Signature,
    # SHA256 HMAC of the raw payload with the shared secret (hex, as its reference code).
    "Coinbase Commerce": Sender("cc-shared-secret", header_hmac("X-CC-Webhook-Signature")),
    # coinify.readme.io/docs/webhook-signature: lowercase hex HMAC-SHA256 of the body.
    "Coinify": Sender("my-shared-secret", header_hmac("X-Coinify-Webhook-Signature")),
    # docs.oracle.com/en/cloud/saas/cx-commerce/ccdev/secure-webhooks.html: base64 HMAC-SHA512.
    "Oracle Commerce": Sender(
        "oracle-cc-secret", header_hmac("X-Oracle-CC-WebHook-Signature", "sha512", encoding="base64")
    ),
    # developers.yousign.com/docs/security: X-Yousign-Signature-256: sha256= + hex HMAC-SHA256.
    "Yousign": Sender("yousign-secret", header_hmac("X-Yousign-Signature-256", prefix="sha256=")),
    # aftership.com/docs/returns/2025-04/webhook/signature: as-signature-hmac-sha256, base64.
    "AfterShip Returns": Sender(
        "aftership-secret", header_hmac("as-signature-hmac-sha256", encoding="base64")
    ),
}


def test_the_table_and_the_signers_are_the_same_senders() -> None:
    names = [r.sender for r in ROWS]
    assert len(names) == len(set(names)), "a sender is listed twice"
    assert set(names) == set(SENDERS)
    assert len(names) >= 30


@pytest.mark.parametrize("row", ROWS, ids=[r.sender for r in ROWS])
def test_the_row_is_consistent(row: Row) -> None:
    assert row.verify["scheme"] == row.scheme
    assert row.docs.startswith("https://")
    [ref] = row.verify["secrets"]
    assert re.fullmatch(r"env:[A-Z][A-Z0-9_]*", ref), ref
    # "token"/"echoed" rows are exactly the ones whose body is not signed.
    assert (row.authenticates in ("token", "echoed clientState")) == (not SENDERS[row.sender].signs_body)


def _check(row: Row, wire: Wire, now: int = NOW) -> tuple[bool, str | None]:
    sender = SENDERS[row.sender]
    env = {row.verify["secrets"][0].removeprefix("env:"): sender.secret}
    r = verifier(row.verify, env).verify(signed(wire.headers, wire.body, now, wire.query))
    return r.ok, r.reason


@pytest.mark.parametrize("row", ROWS, ids=[r.sender for r in ROWS])
def test_genuine_passes_and_one_changed_byte_fails(row: Row) -> None:
    sender = SENDERS[row.sender]
    wire = sender.sign(sender.secret, sender.body, NOW)
    assert _check(row, wire) == (True, None)

    header, value = wire.credential
    if header:  # the signature or token header, one byte changed
        changed = {**wire.headers, header: flip(value.encode(), -1).decode("latin-1")}
        assert not _check(row, Wire(changed, wire.body, wire.query))[0]
    else:  # the credential travels in the body (Microsoft Graph's clientState)
        at = wire.body.index(value.encode())
        assert not _check(row, Wire(wire.headers, flip(wire.body, at), wire.query))[0]

    # A byte of content, away from any credential (and still valid JSON or form data).
    at = wire.body.find(b"Messages/") if b"Messages/" in wire.body else -3
    body_changed = _check(row, Wire(wire.headers, flip(wire.body, at), wire.query))
    if sender.signs_body:
        assert not body_changed[0]
    else:
        assert body_changed == (True, None)  # what "token" means: the body is not covered

    wrong = sender.sign(_other_secret(sender.secret), sender.body, NOW)
    assert not _check(row, wrong)[0]


def _other_secret(secret: str) -> str:
    if secret.startswith("whsec_"):
        return "whsec_" + base64.b64encode(b"another-standard-webhooks-key-32").decode()
    return secret[:-1] + ("x" if secret[-1] != "x" else "y")


def test_coinify_documented_example() -> None:
    # Coinify's page gives a full vector: secret my-shared-secret, payload {"examplePayload":true}.
    expected = "bcdbb89e3031905f3cc1a20d16b5f969a17a7d8fa0c26e4a807c2193402d66f4"
    wire = SENDERS["Coinify"].sign("my-shared-secret", b'{"examplePayload":true}', NOW)
    assert wire.headers["X-Coinify-Webhook-Signature"] == expected
    [row] = [r for r in ROWS if r.sender == "Coinify"]
    assert _check(row, wire) == (True, None)


def test_github_documented_example() -> None:
    # GitHub's page: this secret and payload give exactly this X-Hub-Signature-256.
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    wire = SENDERS["GitHub"].sign("It's a Secret to Everybody", b"Hello, World!", NOW)
    assert wire.headers["X-Hub-Signature-256"] == expected
    [row] = [r for r in ROWS if r.sender == "GitHub"]
    assert _check(row, wire) == (True, None)


def test_slack_documented_example() -> None:
    # Slack's walk-through: this secret, timestamp and body give exactly this signature.
    body = (
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
        b"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
        b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
        b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    )
    wire = slack("8f742231b10e8888abcd99yyyzzz85a5", body, 1531420618)
    assert (
        wire.headers["X-Slack-Signature"]
        == "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    )


THROUGH_A_GATEWAY = ["GitHub", "Stripe", "Replicate", "Linear", "Typeform", "Microsoft Graph", "Telegram"]


@pytest.mark.parametrize("name", THROUGH_A_GATEWAY)
async def test_through_a_real_gateway(name: str) -> None:
    [row] = [r for r in ROWS if r.sender == name]
    sender = SENDERS[name]
    env = {row.verify["secrets"][0].removeprefix("env:"): sender.secret}
    now = int(time.time())  # the gateway's own clock judges the timestamped ones
    wire = sender.sign(sender.secret, sender.body, now)
    header, value = wire.credential
    config = base_config([route("s", upstream="http://127.0.0.1:1/", verify=row.verify)])
    async with recording_upstream() as up:
        config["routes"][0]["upstream"] = up.url
        async with running_gateway(config, env) as gw:
            status, _, _ = await post(f"{gw.base}/hook/s", wire.body, wire.headers)
            assert status == 200
            if header:
                forged = {**wire.headers, header: flip(value.encode(), -1).decode("latin-1")}
                status, _, _ = await post(f"{gw.base}/hook/s", wire.body, forged)
            else:
                at = wire.body.index(value.encode())
                status, _, _ = await post(f"{gw.base}/hook/s", flip(wire.body, at), wire.headers)
            assert status == 401
            assert await gw.metric("webhook_gateway_requests_total", route="s", outcome="rejected") == 1
    [got] = up.received
    assert got.body == wire.body  # forwarded byte for byte
    assert got.header("X-Webhook-Verdict") == "pass"
