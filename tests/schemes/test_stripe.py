"""stripe: `Stripe-Signature: t=...,v1=...` over `t.body`, keyed with the whole whsec_ secret.

Oracle: the `stripe` SDK signs (generate_signature_header) and verifies (verify_header).
"""

from __future__ import annotations

import json

import pytest
import stripe
from stripe import WebhookSignature

from gateway.schemes.base import ToSign
from tests.support.schemes import config_problems, flip, sign, signed, verifier

H = "Stripe-Signature"
SECRET = "whsec_test_0123456789abcdefABCDEF"
OLD_SECRET = "whsec_previous_secret_value"
NOW = 1_700_000_000
BODY = json.dumps(
    {"id": "evt_1", "object": "event", "type": "charge.succeeded", "data": {"object": {"name": "Zoë"}}},
    indent=2,
).encode()
CONF = {"scheme": "stripe", "secrets": ["env:S"]}


def sdk_header(body: bytes = BODY, secret: str = SECRET, t: int = NOW) -> str:
    return WebhookSignature.generate_signature_header(body.decode(), secret, timestamp=t)


def test_what_stripe_sdk_signs_passes() -> None:
    r = verifier(CONF, {"S": SECRET}).verify(signed({H: sdk_header()}, BODY, NOW))
    assert (r.ok, r.secret_index) == (True, 0)


@pytest.mark.parametrize("at", [0, 1, 40, -1])
def test_one_byte_changed_fails(at: int) -> None:
    r = verifier(CONF, {"S": SECRET}).verify(signed({H: sdk_header()}, flip(BODY, at), NOW))
    assert r.reason == "mismatch"


def test_reserialised_json_fails() -> None:
    compact = json.dumps(json.loads(BODY), separators=(",", ":")).encode()
    assert compact != BODY
    assert verifier(CONF, {"S": SECRET}).verify(signed({H: sdk_header()}, compact, NOW)).reason == "mismatch"


def test_the_timestamp_is_signed() -> None:
    header = sdk_header().replace(f"t={NOW}", f"t={NOW + 1}")
    assert verifier(CONF, {"S": SECRET}).verify(signed({H: header}, BODY, NOW)).reason == "mismatch"


def test_several_v1_while_stripe_rolls_a_secret_and_v0_is_ignored() -> None:
    new = sdk_header().split("v1=")[1]
    old = sdk_header(secret=OLD_SECRET).split("v1=")[1]
    header = f"t={NOW},v1={old},v1={new},v0={'0' * 64}"
    v = verifier(CONF, {"S": SECRET})
    assert v.verify(signed({H: header}, BODY, NOW)).ok
    # The gateway holding both secrets (its own rotation) says which one matched.
    both = verifier(
        {"scheme": "stripe", "secrets": ["env:A", "env:B"]}, {"A": "whsec_unrelated", "B": OLD_SECRET}
    )
    r = both.verify(signed({H: f"t={NOW},v1={old}"}, BODY, NOW))
    assert (r.ok, r.secret_index) == (True, 1)
    # Only a v0 (Stripe's test-mode scheme) is nothing this gateway checks.
    assert v.verify(signed({H: f"t={NOW},v0={new}"}, BODY, NOW)).reason == "malformed"


def test_what_sign_prints_passes_stripe_sdk() -> None:
    out = sign(CONF, {"S": SECRET}, ToSign(BODY, NOW))
    ((name, value),) = out.headers
    assert name == H
    assert WebhookSignature.verify_header(BODY, value, SECRET, tolerance=None)
    with pytest.raises(stripe.SignatureVerificationError):
        WebhookSignature.verify_header(flip(BODY, 2), value, SECRET, tolerance=None)


@pytest.mark.parametrize(
    ("skew", "ok", "reason"),
    [(0, True, None), (300, True, None), (-300, True, None), (301, False, "stale"), (-301, False, "stale")],
)
def test_tolerance_both_directions(skew: int, ok: bool, reason: str | None) -> None:
    r = verifier(CONF, {"S": SECRET}).verify(signed({H: sdk_header()}, BODY, NOW + skew))
    assert (r.ok, r.reason) == (ok, reason)


GOOD = sdk_header()
V1 = GOOD.split("v1=")[1]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "missing"),
        ("", "malformed"),
        (f"v1={V1}", "malformed"),  # no timestamp
        (f"t={NOW}", "malformed"),  # no signature
        (f"t={NOW},v1={V1},t={NOW}", "malformed"),  # two timestamps
        (f"t={NOW}, v1={V1}", "malformed"),  # extra space
        (f"t = {NOW},v1={V1}", "malformed"),
        (f"t={NOW},v1={V1},", "malformed"),  # trailing comma
        (f",t={NOW},v1={V1}", "malformed"),
        (f"t={NOW};v1={V1}", "malformed"),
        (f"t={NOW}.0,v1={V1}", "malformed"),  # non-integer timestamp
        (f"t=-{NOW},v1={V1}", "malformed"),
        (f"t=abc,v1={V1}", "malformed"),
        (f"t={NOW},v1={V1[:-1]}", "malformed"),  # short digest
        (f"t={NOW},v1={V1.upper()}", "malformed"),
        (f"t={NOW},v1=", "malformed"),
        (f"t={NOW},v1={V1},v1=zz", "malformed"),  # one garbled signature spoils the header
        (f"T={NOW},V1={V1}", "malformed"),
        (f"t={NOW},v1={'0' * 64}", "mismatch"),
        (f"t={NOW},v1={V1}," + ",".join(["v0=00"] * 40), "malformed"),  # absurdly many items
    ],
)
def test_malformed_headers(value: str | None, reason: str) -> None:
    headers = {} if value is None else {H: value}
    r = verifier(CONF, {"S": SECRET}).verify(signed(headers, BODY, NOW))
    assert (r.ok, r.reason) == (False, reason)


def test_secret_must_be_an_endpoint_secret() -> None:
    problems = config_problems(CONF, {"S": "sk_live_notawebhooksecret"})
    assert problems == [
        "routes[0].verify.secrets[0]: secret from env:S: "
        "a Stripe endpoint signing secret starts with whsec_ (not an API key)"
    ]
