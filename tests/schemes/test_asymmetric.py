"""Public-key schemes: discord, telnyx (Ed25519), sendgrid (ECDSA P-256), standard-webhooks v1a.

Oracles: PyNaCl signs Ed25519 independently of `cryptography`; SendGrid's published test vector
(the same key, payload, timestamp and signature in every one of its SDKs' test suites) and the
`sendgrid` package's `EventWebhook` helper for ECDSA. The `standardwebhooks` package (1.x)
signs v1 (HMAC) only, so v1a is signed with PyNaCl too.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from sendgrid.helpers.eventwebhook import EventWebhook

from gateway.schemes.base import ToSign
from tests.support.inprocess import base_config, post, route, running_gateway
from tests.support.schemes import config_problems, flip, sign, signed, verifier
from tests.support.upstream import recording_upstream

NOW = 1_700_000_000
SEED = bytes(range(32))
NACL = nacl.signing.SigningKey(SEED)
PUBLIC_HEX = NACL.verify_key.encode().hex()
PUBLIC_B64 = base64.b64encode(NACL.verify_key.encode()).decode()
OTHER = nacl.signing.SigningKey(b"\x07" * 32)
BODY = b'{"type":2,"id":"816437322781949972","data":{"name":"caf\xc3\xa9"}}'

# SendGrid's example, as its Python, Node, Go, Java, PHP and Ruby SDK tests carry it.
SG_PUBLIC = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepxo7yAQGh"
    "HPTnlvFYPAZFceEu/1FwCM/QmGUhA=="
)
SG_PRIVATE = (  # the matching key from sendgrid-go's test (SEC1 DER, base64)
    "MHcCAQEEIEQmZgBEh9DcU9zMl34czK3xov4AYvm9P3r7rNB2dNXtoAoGCCqGSM49AwEHoUQDQgAEEDr2LjtURuePQzpl"
    "ybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepxo7yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA=="
)
SG_SIGNATURE = (
    "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlxFDWYNH2j/0="
)
SG_TIMESTAMP = "1588788367"
SG_PAYLOAD = b'{"category":"example_payload","event":"test_event","message_id":"message_id"}'
SG_SIG_H = "X-Twilio-Email-Event-Webhook-Signature"
SG_TS_H = "X-Twilio-Email-Event-Webhook-Timestamp"

DISCORD = {"scheme": "discord", "public_keys": [PUBLIC_HEX]}
TELNYX = {"scheme": "telnyx", "public_keys": [PUBLIC_B64]}
SENDGRID = {"scheme": "sendgrid", "public_keys": [SG_PUBLIC]}


def discord_headers(key: nacl.signing.SigningKey = NACL, ts: int = NOW, body: bytes = BODY) -> dict[str, str]:
    sig = key.sign(str(ts).encode() + body).signature.hex()
    return {"X-Signature-Ed25519": sig, "X-Signature-Timestamp": str(ts)}


def telnyx_headers(key: nacl.signing.SigningKey = NACL, ts: int = NOW, body: bytes = BODY) -> dict[str, str]:
    sig = base64.b64encode(key.sign(f"{ts}|".encode() + body).signature).decode()
    return {"telnyx-signature-ed25519": sig, "telnyx-timestamp": str(ts)}


def pem_public(key: nacl.signing.SigningKey = NACL) -> str:
    pub = ed25519.Ed25519PublicKey.from_public_bytes(key.verify_key.encode())
    return pub.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


# ------------------------------------------------------------------ discord / telnyx (PyNaCl)


@pytest.mark.parametrize(("conf", "make"), [(DISCORD, discord_headers), (TELNYX, telnyx_headers)])
def test_pynacl_signed_passes_and_any_change_fails(conf: dict[str, Any], make: Any) -> None:
    v = verifier(conf, {})
    ok = v.verify(signed(make(), BODY, NOW))
    assert (ok.ok, ok.secret_index) == (True, 0)
    for at in (0, 9, -1):
        assert v.verify(signed(make(), flip(BODY, at), NOW)).reason == "mismatch"
    assert v.verify(signed(make(key=OTHER), BODY, NOW)).reason == "mismatch"
    # The timestamp is signed: moving it breaks the signature, not just the window.
    moved = make()
    ts_header = next(k for k in moved if k.lower().endswith("timestamp"))
    moved[ts_header] = str(NOW + 1)
    assert v.verify(signed(moved, BODY, NOW)).reason == "mismatch"
    # A genuine signature outside the window is stale (replayed), in either direction.
    assert v.verify(signed(make(ts=NOW - 301), BODY, NOW)).reason == "stale"
    assert v.verify(signed(make(ts=NOW + 301), BODY, NOW)).reason == "stale"
    assert v.verify(signed(make(ts=NOW - 299), BODY, NOW)).ok


@pytest.mark.parametrize(("conf", "make"), [(DISCORD, discord_headers), (TELNYX, telnyx_headers)])
def test_malformed_and_missing(conf: dict[str, Any], make: Any) -> None:
    v = verifier(conf, {})
    good = make()
    sig_h, ts_h = list(good)
    assert v.verify(signed({}, BODY, NOW)).reason == "missing"
    assert v.verify(signed({ts_h: good[ts_h]}, BODY, NOW)).reason == "missing"
    assert v.verify(signed({sig_h: good[sig_h]}, BODY, NOW)).reason == "malformed"  # no timestamp
    for bad_sig in ("zz" * 64, good[sig_h][:-4], "", "x"):
        assert v.verify(signed({**good, sig_h: bad_sig}, BODY, NOW)).reason == "malformed", bad_sig
    for bad_ts in ("-1", "1.5", "01700000000", "now"):
        assert v.verify(signed({**good, ts_h: bad_ts}, BODY, NOW)).reason == "malformed", bad_ts
    twice = [(sig_h, good[sig_h]), (sig_h, good[sig_h]), (ts_h, good[ts_h])]
    assert v.verify(signed(twice, BODY, NOW)).reason == "malformed"


def test_key_forms_are_one_key_and_rotation_counts_positions() -> None:
    pem = pem_public()
    spki = base64.b64encode(
        ed25519.Ed25519PublicKey.from_public_bytes(NACL.verify_key.encode()).public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()
    for form in (PUBLIC_HEX, PUBLIC_HEX.upper(), PUBLIC_B64, "whpk_" + PUBLIC_B64, pem, spki):
        for conf, make in ((DISCORD, discord_headers), (TELNYX, telnyx_headers)):
            v = verifier({**conf, "public_keys": [form]}, {})
            assert v.verify(signed(make(), BODY, NOW)).ok, form
    other_hex = OTHER.verify_key.encode().hex()
    v = verifier({**DISCORD, "public_keys": [other_hex, "env:K"]}, {"K": PUBLIC_HEX})
    assert v.verify(signed(discord_headers(), BODY, NOW)).secret_index == 1
    assert v.verify(signed(discord_headers(OTHER), BODY, NOW)).secret_index == 0


def test_key_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "discord.pub"
    path.write_text(pem_public())
    v = verifier({**DISCORD, "public_keys": [f"file:{path}"]}, {})
    assert v.verify(signed(discord_headers(), BODY, NOW)).ok


@pytest.mark.parametrize(
    ("verify", "expected"),
    [
        ({"scheme": "discord"}, "routes[0].verify.public_keys: at least one Ed25519 public key is required"),
        ({"scheme": "discord", "public_keys": []}, "routes[0].verify.public_keys: at least one Ed25519"),
        ({"scheme": "discord", "public_keys": "abc"}, "routes[0].verify.public_keys: expected a list"),
        ({"scheme": "discord", "public_keys": ["abcd"]}, "routes[0].verify.public_keys[0]: cannot be parsed"),
        ({"scheme": "telnyx", "public_keys": [PUBLIC_B64, "@@"]}, "routes[0].verify.public_keys[1]: neither"),
        ({"scheme": "telnyx", "public_keys": [7]}, "routes[0].verify.public_keys[0]: expected a key"),
        (
            {"scheme": "telnyx", "public_keys": ["env:NOPE"]},
            "routes[0].verify.public_keys[0]: environment variable",
        ),
        ({"scheme": "sendgrid", "public_keys": [PUBLIC_B64]}, "routes[0].verify.public_keys[0]: "),
        ({"scheme": "discord", "public_keys": [SG_PUBLIC]}, "not an Ed25519 public key"),
        (
            {"scheme": "discord", "public_keys": [PUBLIC_HEX], "secrets": ["env:S"]},
            "routes[0].verify.secrets: discord verifies with public_keys, not shared secrets",
        ),
        ({"scheme": "telnyx", "public_keys": [PUBLIC_B64], "tolerance": "x"}, "routes[0].verify.tolerance"),
        ({"scheme": "standard-webhooks"}, "routes[0].verify.secrets: give secrets (v1"),
        ({"scheme": "standard-webhooks", "public_keys": ["whpk_AAAA"]}, "routes[0].verify.public_keys[0]"),
    ],
)
def test_malformed_keys_are_check_errors_with_their_location(verify: dict[str, Any], expected: str) -> None:
    problems = config_problems(verify, {"S": "s"})
    assert any(p.startswith(expected) or expected in p for p in problems), problems


# ------------------------------------------------------------------ sendgrid (ECDSA P-256)


def test_sendgrid_published_example() -> None:
    v = verifier(SENDGRID, {})
    headers = {SG_SIG_H: SG_SIGNATURE, SG_TS_H: SG_TIMESTAMP}
    now = int(SG_TIMESTAMP)
    assert v.verify(signed(headers, SG_PAYLOAD, now)).ok
    assert v.verify(signed(headers, SG_PAYLOAD + b" ", now)).reason == "mismatch"
    assert v.verify(signed({**headers, SG_TS_H: "1388788367"}, SG_PAYLOAD, now)).reason == "mismatch"
    assert v.verify(signed(headers, SG_PAYLOAD, now + 3600)).reason == "stale"
    # SendGrid's own helper agrees on the same vector.
    ew = EventWebhook()
    assert ew.verify_signature(
        SG_PAYLOAD.decode(), SG_SIGNATURE, SG_TIMESTAMP, ew.convert_public_key_to_ecdsa(SG_PUBLIC)
    )


def test_sendgrid_what_we_sign_the_sdk_verifies_and_back() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pub_b64 = base64.b64encode(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    conf = {**SENDGRID, "public_keys": [pub_b64]}
    body = b'[{"email":"a@example.com","event":"processed","sg_event_id":"x"}]'
    sig = sign(conf, {}, ToSign(body, NOW, private_key=pem))
    headers = dict(sig.headers)
    ew = EventWebhook()
    assert ew.verify_signature(
        body.decode(), headers[SG_SIG_H], headers[SG_TS_H], ew.convert_public_key_to_ecdsa(pub_b64)
    )
    assert verifier(conf, {}).verify(signed(headers, body, NOW)).ok
    assert verifier(conf, {}).verify(signed(headers, body[:-1], NOW)).reason == "mismatch"
    # SendGrid's own published key pair signs the same way (SEC1 DER base64 as the Go SDK holds it).
    sig = sign(SENDGRID, {}, ToSign(SG_PAYLOAD, int(SG_TIMESTAMP), private_key=SG_PRIVATE.encode()))
    h = dict(sig.headers)
    assert ew.verify_signature(
        SG_PAYLOAD.decode(), h[SG_SIG_H], h[SG_TS_H], ew.convert_public_key_to_ecdsa(SG_PUBLIC)
    )


def test_sign_needs_a_private_key_of_the_right_kind() -> None:
    with pytest.raises(ValueError, match="--private-key"):
        sign(DISCORD, {}, ToSign(BODY, NOW))
    with pytest.raises(ValueError, match="Ed25519"):
        sign(DISCORD, {}, ToSign(BODY, NOW, private_key=SG_PRIVATE.encode()))
    sig = sign(DISCORD, {}, ToSign(BODY, NOW, private_key=SEED.hex().encode()))
    assert dict(sig.headers) == discord_headers()  # Ed25519 is deterministic: PyNaCl agrees byte for byte
    sig = sign(TELNYX, {}, ToSign(BODY, NOW, private_key=base64.b64encode(SEED)))
    assert dict(sig.headers) == telnyx_headers()


# ------------------------------------------------------------------ standard-webhooks v1a

SW_SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
WHPK = "whpk_" + PUBLIC_B64


def sw_headers(sig: str, msg_id: str = "msg_1", ts: int = NOW) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sig}


def v1a(key: nacl.signing.SigningKey = NACL, msg_id: str = "msg_1", ts: int = NOW, body: bytes = BODY) -> str:
    return "v1a," + base64.b64encode(key.sign(f"{msg_id}.{ts}.".encode() + body).signature).decode()


def test_v1a_only_route() -> None:
    v = verifier({"scheme": "standard-webhooks", "public_keys": [WHPK]}, {})
    assert v.verify(signed(sw_headers(v1a()), BODY, NOW)).ok
    assert v.verify(signed(sw_headers(v1a(OTHER)), BODY, NOW)).reason == "mismatch"
    assert v.verify(signed(sw_headers(v1a(msg_id="msg_2"), msg_id="msg_1"), BODY, NOW)).reason == "mismatch"
    assert v.verify(signed(sw_headers(v1a()), flip(BODY, 3), NOW)).reason == "mismatch"
    assert v.verify(signed(sw_headers(v1a(ts=NOW - 400), ts=NOW - 400), BODY, NOW)).reason == "stale"
    # A v1 entry alone cannot pass a route without secrets; a bad v1a entry is malformed.
    hmac_only = "v1," + base64.b64encode(b"x" * 32).decode()
    assert v.verify(signed(sw_headers(hmac_only), BODY, NOW)).reason == "mismatch"
    assert v.verify(signed(sw_headers("v1a,AAAA"), BODY, NOW)).reason == "malformed"
    # Several entries (rotation): any one that verifies is enough.
    assert v.verify(signed(sw_headers(f"{v1a(OTHER)} {hmac_only} {v1a()}"), BODY, NOW)).ok


def test_v1_and_v1a_on_one_route_number_keys_after_secrets() -> None:
    conf = {"scheme": "standard-webhooks", "secrets": ["env:S"], "public_keys": [WHPK]}
    v = verifier(conf, {"S": SW_SECRET})
    assert v.verify(signed(sw_headers(v1a()), BODY, NOW)).secret_index == 1
    v1 = sign(conf, {"S": SW_SECRET}, ToSign(BODY, NOW, message_id="msg_1"))
    assert v.verify(signed(dict(v1.headers), BODY, NOW)).secret_index == 0
    # sign with a private key gives v1a, and the route verifies it.
    sig = sign(
        conf,
        {"S": SW_SECRET},
        ToSign(BODY, NOW, message_id="msg_1", private_key=b"whsk_" + base64.b64encode(SEED)),
    )
    assert dict(sig.headers)["webhook-signature"] == v1a()


# ------------------------------------------------------------------ through a real gateway


def _spool_config(tmp_path: Path, routes: list[dict[str, Any]]) -> dict[str, Any]:
    return base_config(routes, spool={"path": str(tmp_path / "spool.db")})


def _spooled_rows(tmp_path: Path) -> int:
    db = tmp_path / "spool.db"
    if not db.exists():
        return 0
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM pending").fetchone()[0])
    finally:
        conn.close()


@pytest.mark.parametrize("delivery", ["passthrough", "spool"])
async def test_discord_ping_answered_by_the_gateway(tmp_path: Path, delivery: str) -> None:
    ping = b'{"application_id":"1","id":"2","token":"t","type":1,"user":{"id":"3"},"version":1}'
    async with recording_upstream() as up:
        r = route("discord", upstream=up.url, verify=DISCORD, delivery=delivery)
        async with running_gateway(_spool_config(tmp_path, [r])) as gw:
            now = int(time.time())
            status, body, headers = await post(
                f"{gw.base}/hook/discord", ping, discord_headers(ts=now, body=ping)
            )
            assert (status, json.loads(body)) == (200, {"type": 1})
            assert headers["Content-Type"] == "application/json"
            assert (
                await gw.metric("webhook_gateway_requests_total", route="discord", outcome="handshake") == 1
            )
            # A forged PING is refused with 401, as Discord requires before it saves the URL.
            status, body, _ = await post(
                f"{gw.base}/hook/discord", ping, discord_headers(OTHER, ts=now, body=ping)
            )
            assert status == 401 and b'"type"' not in body
            status, _, _ = await post(f"{gw.base}/hook/discord", ping, {})
            assert status == 401
            assert await gw.metric("webhook_gateway_requests_total", route="discord", outcome="rejected") == 2
            assert up.received == [] and _spooled_rows(tmp_path) == 0
            # An interaction that is not a PING goes to the bot.
            status, _, _ = await post(f"{gw.base}/hook/discord", BODY, discord_headers(ts=now))
            assert status == 200
            if delivery == "passthrough":
                (got,) = up.received
                assert got.body == BODY
            else:
                assert _spooled_rows(tmp_path) + len(up.received) == 1


@pytest.mark.parametrize(
    ("conf", "make"),
    [
        (TELNYX, telnyx_headers),
        (SENDGRID, None),
        ({"scheme": "standard-webhooks", "public_keys": [WHPK]}, None),
    ],
)
async def test_enforced_through_the_gateway(conf: dict[str, Any], make: Any) -> None:
    now = int(time.time())
    if conf["scheme"] == "telnyx":
        good, bad = telnyx_headers(ts=now), telnyx_headers(OTHER, ts=now)
    elif conf["scheme"] == "sendgrid":
        s = sign(conf, {}, ToSign(BODY, now, private_key=SG_PRIVATE.encode()))
        good = dict(s.headers)
        bad = {**good, SG_TS_H: str(now - 1)}
    else:
        good, bad = sw_headers(v1a(ts=now), ts=now), sw_headers(v1a(OTHER, ts=now), ts=now)
    async with (
        recording_upstream() as up,
        running_gateway(base_config([route("r", upstream=up.url, verify=conf)])) as gw,
    ):
        assert (await post(f"{gw.base}/hook/r", BODY, good))[0] == 200
        assert (await post(f"{gw.base}/hook/r", BODY, bad))[0] == 401
        assert (await post(f"{gw.base}/hook/r", BODY + b" ", good))[0] == 401
        (got,) = up.received
        assert got.body == BODY and got.header("X-Webhook-Verdict") == "pass"
        labels = {"route": "r", "check": "signature", "mode": "enforce", "reason": "mismatch"}
        assert await gw.metric("webhook_gateway_check_failures_total", **labels) == 2
