"""slack: `v0=` hex HMAC-SHA256 of `v0:<timestamp>:<body>`, 300 s tolerance both ways.

Oracles: Slack's documented example, and slack_sdk's SignatureVerifier both ways.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, urlencode

import pytest
from slack_sdk.signature import Clock, SignatureVerifier

from gateway.schemes.base import ToSign
from tests.support.schemes import flip, sign, signed, verifier

SIG = "X-Slack-Signature"
TS = "X-Slack-Request-Timestamp"

# Slack's "Verifying requests from Slack" walk-through: this secret, timestamp and slash-command
# body give exactly this signature.
DOC_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
DOC_TS = 1531420618
DOC_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
    b"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
    b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
    b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
DOC_SIG = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"

SECRET = "e3b0c44298fc1c149afbf4c8996fb924"
EVENT = b'{"token":"x","type":"event_callback","event":{"type":"message","text":"caf\\u00e9"}}'
NOW = 1_700_000_000
CONF = {"scheme": "slack", "secrets": ["env:S"]}


class FixedClock(Clock):
    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now


def test_documented_example() -> None:
    v = verifier(CONF, {"S": DOC_SECRET})
    r = v.verify(signed({SIG: DOC_SIG, TS: str(DOC_TS)}, DOC_BODY, DOC_TS + 60))
    assert (r.ok, r.secret_index) == (True, 0)
    assert v.verify(signed({SIG: DOC_SIG, TS: str(DOC_TS)}, flip(DOC_BODY, -1), DOC_TS)).reason == "mismatch"


def test_what_slack_sdk_signs_passes_and_any_change_fails() -> None:
    sdk = SignatureVerifier(SECRET, clock=FixedClock(NOW))
    sig = sdk.generate_signature(timestamp=str(NOW), body=EVENT)
    assert sig is not None
    v = verifier(CONF, {"S": SECRET})
    assert v.verify(signed({SIG: sig, TS: str(NOW)}, EVENT, NOW)).ok
    for at in (0, len(EVENT) // 2, -1):
        assert v.verify(signed({SIG: sig, TS: str(NOW)}, flip(EVENT, at), NOW)).reason == "mismatch"
    # The timestamp is signed too: moving it by one second breaks the signature.
    assert v.verify(signed({SIG: sig, TS: str(NOW + 1)}, EVENT, NOW)).reason == "mismatch"
    reserialised = json.dumps(json.loads(EVENT), ensure_ascii=False).encode()
    assert v.verify(signed({SIG: sig, TS: str(NOW)}, reserialised, NOW)).reason == "mismatch"
    # A form body re-encoded by a framework (same fields, other bytes) fails as well.
    reencoded = urlencode(parse_qsl(DOC_BODY.decode(), keep_blank_values=True), safe="/:").encode()
    assert reencoded != DOC_BODY
    doc = verifier(CONF, {"S": DOC_SECRET})
    assert doc.verify(signed({SIG: DOC_SIG, TS: str(DOC_TS)}, reencoded, DOC_TS)).reason == "mismatch"


def test_what_sign_prints_passes_slack_sdk() -> None:
    out = sign(CONF, {"S": SECRET}, ToSign(EVENT, NOW))
    headers = dict(out.headers)
    sdk = SignatureVerifier(SECRET, clock=FixedClock(NOW))
    assert sdk.is_valid_request(EVENT, headers)
    assert not sdk.is_valid_request(flip(EVENT, 3), headers)


@pytest.mark.parametrize(
    ("skew", "ok", "reason"),
    [(0, True, None), (300, True, None), (-300, True, None), (301, False, "stale"), (-301, False, "stale")],
)
def test_tolerance_both_directions(skew: int, ok: bool, reason: str | None) -> None:
    sig = SignatureVerifier(SECRET).generate_signature(timestamp=str(NOW), body=EVENT)
    assert sig is not None
    r = verifier(CONF, {"S": SECRET}).verify(signed({SIG: sig, TS: str(NOW)}, EVENT, NOW + skew))
    assert (r.ok, r.reason) == (ok, reason)


def test_configured_tolerance() -> None:
    sig = SignatureVerifier(SECRET).generate_signature(timestamp=str(NOW), body=EVENT)
    assert sig is not None
    v = verifier({**CONF, "tolerance": "30s"}, {"S": SECRET})
    assert v.verify(signed({SIG: sig, TS: str(NOW)}, EVENT, NOW + 30)).ok
    assert v.verify(signed({SIG: sig, TS: str(NOW)}, EVENT, NOW + 31)).reason == "stale"


def test_forged_old_request_reads_as_mismatch_not_stale() -> None:
    r = verifier(CONF, {"S": SECRET}).verify(
        signed({SIG: "v0=" + "ab" * 32, TS: str(NOW)}, EVENT, NOW + 9999)
    )
    assert r.reason == "mismatch"


GOOD = SignatureVerifier(SECRET).generate_signature(timestamp=str(NOW), body=EVENT) or ""


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing"),
        ({TS: str(NOW)}, "missing"),
        ({SIG: GOOD}, "malformed"),  # signature without its timestamp
        ({SIG: GOOD, TS: ""}, "malformed"),
        ({SIG: GOOD[3:], TS: str(NOW)}, "malformed"),  # no version tag
        ({SIG: "v1=" + GOOD[3:], TS: str(NOW)}, "malformed"),  # wrong version tag
        ({SIG: "v0:" + GOOD[3:], TS: str(NOW)}, "malformed"),
        ({SIG: GOOD + "0", TS: str(NOW)}, "malformed"),
        ({SIG: "v0=" + GOOD[3:].upper(), TS: str(NOW)}, "malformed"),
        ({SIG: GOOD + "," + GOOD, TS: str(NOW)}, "malformed"),  # comma list
        ({SIG: GOOD, TS: f"{NOW}.5"}, "malformed"),  # non-integer timestamp
        ({SIG: GOOD, TS: f"+{NOW}"}, "malformed"),
        ({SIG: GOOD, TS: f" {NOW}"}, "malformed"),  # extra space
        ({SIG: GOOD, TS: f"0{NOW}"}, "malformed"),  # leading zero: not what was signed
        ({SIG: GOOD, TS: "1e9"}, "malformed"),
        ({SIG: GOOD, TS: "9" * 40}, "malformed"),  # absurdly large, never an overflow
        ({SIG: GOOD, TS: "\uff11\uff17\uff10\uff10"}, "malformed"),  # fullwidth (non-ASCII) digits
    ],
)
def test_malformed_headers(headers: dict[str, str], reason: str) -> None:
    r = verifier(CONF, {"S": SECRET}).verify(signed(headers, EVENT, NOW))
    assert (r.ok, r.reason) == (False, reason)


def test_repeated_timestamp_header_is_malformed() -> None:
    headers = [(SIG, GOOD), (TS, str(NOW)), (TS, str(NOW))]
    assert verifier(CONF, {"S": SECRET}).verify(signed(headers, EVENT, NOW)).reason == "malformed"
