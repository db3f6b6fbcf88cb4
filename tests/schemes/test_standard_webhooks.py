"""standard-webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<b64> ...`.

Oracles: the specification's published test vector, and the `standardwebhooks` SDK both ways.
"""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from gateway.schemes.base import ToSign
from tests.support.schemes import config_problems, flip, sign, signed, verifier

# The specification's example: this secret, id, timestamp and payload give this signature.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TS = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
OTHER = "whsec_" + base64.b64encode(b"o" * 32).decode()
NOW = 1_700_000_000
BODY = json.dumps(
    {"type": "invoice.paid", "data": {"id": "inv_1", "who": "Zoë"}}, ensure_ascii=False
).encode()
CONF = {"scheme": "standard-webhooks", "secrets": ["env:S"]}


def sdk_sign(secret: str = SECRET, msg_id: str = "msg_1", ts: int = NOW, body: bytes = BODY) -> str:
    return Webhook(secret).sign(msg_id, datetime.fromtimestamp(ts, tz=UTC), body.decode())


def headers(sig: str, msg_id: str = "msg_1", ts: int | str = NOW) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sig}


def test_specification_example() -> None:
    assert sdk_sign(SPEC_SECRET, SPEC_ID, SPEC_TS, SPEC_BODY) == SPEC_SIG
    v = verifier(CONF, {"S": SPEC_SECRET})
    r = v.verify(signed(headers(SPEC_SIG, SPEC_ID, SPEC_TS), SPEC_BODY, SPEC_TS))
    assert (r.ok, r.secret_index) == (True, 0)
    # The same secret without its whsec_ prefix is the same key.
    bare = verifier(CONF, {"S": SPEC_SECRET.removeprefix("whsec_")})
    assert bare.verify(signed(headers(SPEC_SIG, SPEC_ID, SPEC_TS), SPEC_BODY, SPEC_TS)).ok


def test_what_the_sdk_signs_passes_and_any_change_fails() -> None:
    v = verifier(CONF, {"S": SECRET})
    sig = sdk_sign()
    assert v.verify(signed(headers(sig), BODY, NOW)).ok
    for at in (0, 7, -1):
        assert v.verify(signed(headers(sig), flip(BODY, at), NOW)).reason == "mismatch"
    assert v.verify(signed(headers(sig, msg_id="msg_2"), BODY, NOW)).reason == "mismatch"  # id is signed
    assert v.verify(signed(headers(sig, ts=NOW + 1), BODY, NOW)).reason == "mismatch"  # so is the time
    reserialised = json.dumps(json.loads(BODY)).encode()
    assert reserialised != BODY
    assert v.verify(signed(headers(sig), reserialised, NOW)).reason == "mismatch"


def test_several_signatures_and_other_versions() -> None:
    v = verifier(CONF, {"S": SECRET})
    mine, other = sdk_sign(), sdk_sign(OTHER)
    assert v.verify(signed(headers(f"{other} {mine}"), BODY, NOW)).ok
    assert v.verify(signed(headers(f"v1a,{base64.b64encode(b'x' * 64).decode()} {mine}"), BODY, NOW)).ok
    assert v.verify(signed(headers(other), BODY, NOW)).reason == "mismatch"
    rotated = verifier(
        {"scheme": "standard-webhooks", "secrets": ["env:A", "env:B"]}, {"A": OTHER, "B": SECRET}
    )
    r = rotated.verify(signed(headers(mine), BODY, NOW))
    assert (r.ok, r.secret_index) == (True, 1)


def test_what_sign_prints_passes_the_sdk() -> None:
    now = int(time.time())  # the SDK reads the real clock
    out = sign(CONF, {"S": SECRET}, ToSign(BODY, now, message_id="msg_cli"))
    hdrs = dict(out.headers)
    assert hdrs["webhook-id"] == "msg_cli"
    assert Webhook(SECRET).verify(BODY, hdrs, json_parse=False) is None
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(flip(BODY, 1), hdrs, json_parse=False)


@pytest.mark.parametrize(
    ("skew", "ok", "reason"),
    [(0, True, None), (300, True, None), (-300, True, None), (301, False, "stale"), (-301, False, "stale")],
)
def test_tolerance_both_directions(skew: int, ok: bool, reason: str | None) -> None:
    r = verifier(CONF, {"S": SECRET}).verify(signed(headers(sdk_sign()), BODY, NOW + skew))
    assert (r.ok, r.reason) == (ok, reason)


GOOD = sdk_sign()
B64 = GOOD.split(",", 1)[1]


@pytest.mark.parametrize(
    ("hdrs", "reason"),
    [
        ({}, "missing"),
        ({"webhook-id": "msg_1", "webhook-timestamp": str(NOW)}, "missing"),
        ({"webhook-signature": GOOD, "webhook-timestamp": str(NOW)}, "malformed"),  # no id
        ({"webhook-signature": GOOD, "webhook-id": "msg_1"}, "malformed"),  # no timestamp
        (headers(GOOD, ts=f"{NOW}.0"), "malformed"),  # non-integer timestamp
        (headers(GOOD, ts="soon"), "malformed"),
        (headers(GOOD, ts=f"{NOW} "), "malformed"),
        (headers(B64), "malformed"),  # no version
        (headers("v2," + B64), "malformed"),  # only a version this gateway cannot check
        (headers("V1," + B64), "malformed"),
        (headers("v1;" + B64), "malformed"),
        (headers("v1," + B64.rstrip("=")), "malformed"),  # bad base64 (padding)
        (headers("v1,!" + B64[1:]), "malformed"),  # bad base64 (alphabet)
        (headers("v1," + base64.b64encode(b"short").decode()), "malformed"),
        (headers(f"{GOOD}  {GOOD}"), "malformed"),  # doubled space
        (headers(f" {GOOD}"), "malformed"),  # leading space
        (headers(f"{GOOD},{GOOD}"), "malformed"),  # comma list
        (headers(" ".join([GOOD] * 40)), "malformed"),  # absurdly many
        (headers("v1," + base64.b64encode(b"\0" * 32).decode()), "mismatch"),
    ],
)
def test_malformed_headers(hdrs: dict[str, str], reason: str) -> None:
    r = verifier(CONF, {"S": SECRET}).verify(signed(hdrs, BODY, NOW))
    assert (r.ok, r.reason) == (False, reason)


@pytest.mark.parametrize("bad", ["whsec_not base64!", "whsec_", "whsec_====", "not*base64"])
def test_secret_must_be_base64(bad: str) -> None:
    problems = config_problems(CONF, {"S": bad})
    assert len(problems) == 1 and "whsec_ followed by base64" in problems[0], problems
    assert bad.removeprefix("whsec_") not in problems[0] or not bad.removeprefix("whsec_")
