"""shopify (base64 HMAC-SHA256 of the raw body) and gitlab (plain token, constant-time)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from tests.support.schemes import config_problems, flip, signed, verifier

SH = "X-Shopify-Hmac-Sha256"
SHOP_SECRET = "shpss_0123456789abcdef0123456789abcdef"
SHOP_BODY = json.dumps(
    {"id": 820982911946154508, "email": "jon@example.com", "note": "Grüße"}, indent=2
).encode()
SHOP_CONF = {"scheme": "shopify", "secrets": ["env:S"]}


def shopify_sig(body: bytes = SHOP_BODY, secret: str = SHOP_SECRET) -> str:
    # What Shopify's docs say it sends: base64 of the HMAC-SHA256 digest of the raw body.
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def test_shopify_valid_changed_and_reserialised() -> None:
    v = verifier(SHOP_CONF, {"S": SHOP_SECRET})
    r = v.verify(signed({SH: shopify_sig()}, SHOP_BODY, 0))
    assert (r.ok, r.secret_index) == (True, 0)
    for at in (0, 10, -1):
        assert v.verify(signed({SH: shopify_sig()}, flip(SHOP_BODY, at), 0)).reason == "mismatch"
    compact = json.dumps(json.loads(SHOP_BODY)).encode()
    assert v.verify(signed({SH: shopify_sig()}, compact, 0)).reason == "mismatch"
    # The hex form of the same digest is not what Shopify sends.
    hexsig = hmac.new(SHOP_SECRET.encode(), SHOP_BODY, hashlib.sha256).hexdigest()
    assert v.verify(signed({SH: hexsig}, SHOP_BODY, 0)).reason == "malformed"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "missing"),
        ("", "malformed"),
        ("sha256=" + shopify_sig(), "malformed"),  # a prefix Shopify never sends
        (shopify_sig().rstrip("="), "malformed"),
        ("*" + shopify_sig()[1:], "malformed"),
        (shopify_sig() + " " + shopify_sig(), "malformed"),
        (shopify_sig() + "," + shopify_sig(), "malformed"),
        (base64.b64encode(b"\0" * 32).decode(), "mismatch"),
    ],
)
def test_shopify_malformed(value: str | None, reason: str) -> None:
    hdrs = {} if value is None else {SH: value}
    r = verifier(SHOP_CONF, {"S": SHOP_SECRET}).verify(signed(hdrs, SHOP_BODY, 0))
    assert (r.ok, r.reason) == (False, reason)


GL = "X-Gitlab-Token"
GL_CONF = {"scheme": "gitlab", "secrets": ["env:A", "env:B"]}
GL_ENV = {"A": "current token with spaces", "B": "previous-token"}


@pytest.mark.parametrize(
    ("headers", "ok", "reason", "index"),
    [
        ([(GL, "current token with spaces")], True, None, 0),
        ([(GL, "previous-token")], True, None, 1),
        ([(GL, "previous-tokeN")], False, "mismatch", None),
        ([(GL, "previous-token2")], False, "mismatch", None),
        ([(GL, "previous")], False, "mismatch", None),
        ([], False, "missing", None),
        ([(GL, "")], False, "malformed", None),
        ([(GL, "previous-token"), (GL, "previous-token")], False, "malformed", None),
        ([(GL, "prévious-token")], False, "malformed", None),  # non-ASCII: never a TypeError
    ],
)
def test_gitlab_token(
    headers: list[tuple[str, str]], ok: bool, reason: str | None, index: int | None
) -> None:
    r = verifier(GL_CONF, GL_ENV).verify(signed(headers, b"{}", 0))
    assert (r.ok, r.reason, r.secret_index) == (ok, reason, index)


def test_gitlab_token_must_fit_in_a_header() -> None:
    problems = config_problems({"scheme": "gitlab", "secrets": ["env:A"]}, {"A": "tökén"})
    assert len(problems) == 1 and "printable ASCII" in problems[0]
    assert "tökén" not in problems[0]
