"""hmac-template and its presets: each preset against a signer written here from the sender's
documentation (not the gateway's code), `sign` against the same signers, and `check` errors.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from gateway import config as cfg
from gateway.schemes.base import ToSign
from gateway.schemes.template import parse_timestamp
from tests.support.env import ROOT_DIR
from tests.support.schemes import config_problems, flip, sign, signed, verifier

NOW = 1_700_000_000
BODY = b'{"event":"meeting.started","payload":{"object":{"topic":"caf\\u00e9"}}}'
SECRET = "s3cr3t-token-0123456789"
ENV = {"S": SECRET, "S2": "second-key-abcdef"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def rfc3339(ts: int, frac: str = "") -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + frac + "Z"


# Each signer follows the sender's documentation: what it concatenates, how it encodes.
def zoom_headers(secret: str, body: bytes, ts: int) -> dict[str, str]:
    # developers.zoom.us/docs/api/webhooks "Verify webhook events":
    # message = "v0:" + x-zm-request-timestamp + ":" + body; x-zm-signature = "v0=" + hex HMAC.
    msg = f"v0:{ts}:".encode() + body
    return {
        "x-zm-request-timestamp": str(ts),
        "x-zm-signature": "v0=" + hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest(),
    }


def twitch_headers(
    secret: str, body: bytes, ts: int, msg_id: str = "e76c6bd4-55c9-4987-8304-da1588d8988b"
) -> dict[str, str]:
    # dev.twitch.tv/docs/eventsub/handling-webhook-events: hmac = id + timestamp + body,
    # "sha256=" + hex; the timestamp is RFC 3339 with nanoseconds.
    stamp = rfc3339(ts, ".634234626")
    msg = msg_id.encode() + stamp.encode() + body
    return {
        "Twitch-Eventsub-Message-Id": msg_id,
        "Twitch-Eventsub-Message-Timestamp": stamp,
        "Twitch-Eventsub-Message-Signature": "sha256="
        + hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest(),
    }


def x_headers(secret: str, body: bytes, ts: int) -> dict[str, str]:
    # X "Securing webhooks": x-twitter-webhooks-signature = "sha256=" + base64 HMAC of the body.
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return {"x-twitter-webhooks-signature": "sha256=" + b64(digest)}


def box_headers(secret: str, body: bytes, ts: int, secondary: str = "other-key") -> dict[str, str]:
    # developer.box.com/guides/webhooks/v2/signatures-v2: HMAC over the body bytes, then the
    # BOX-DELIVERY-TIMESTAMP bytes; base64; one signature per key.
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S-00:00", time.gmtime(ts))
    primary = hmac.new(secret.encode(), body + stamp.encode(), hashlib.sha256).digest()
    second = hmac.new(secondary.encode(), body + stamp.encode(), hashlib.sha256).digest()
    return {
        "BOX-DELIVERY-TIMESTAMP": stamp,
        "BOX-SIGNATURE-PRIMARY": b64(primary),
        "BOX-SIGNATURE-SECONDARY": b64(second),
        "BOX-SIGNATURE-VERSION": "1",
        "BOX-SIGNATURE-ALGORITHM": "HmacSHA256",
    }


def dropbox_headers(secret: str, body: bytes, ts: int) -> dict[str, str]:
    # Dropbox webhooks: X-Dropbox-Signature = hex HMAC-SHA256(app secret, body).
    return {"X-Dropbox-Signature": hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


def xero_headers(secret: str, body: bytes, ts: int) -> dict[str, str]:
    # Xero webhooks: x-xero-signature = base64 HMAC-SHA256(webhook key, body).
    return {"x-xero-signature": b64(hmac.new(secret.encode(), body, hashlib.sha256).digest())}


TEAMS_TOKEN = b64(b"teams-security-token-bytes-32b!!")


def teams_headers(secret: str, body: bytes, ts: int) -> dict[str, str]:
    # Microsoft Teams outgoing webhooks: Authorization: HMAC <base64 HMAC-SHA256>, keyed with
    # the base64-decoded security token.
    key = base64.b64decode(secret)
    return {"Authorization": "HMAC " + b64(hmac.new(key, body, hashlib.sha256).digest())}


def worldline_headers(secret: str, body: bytes, ts: int) -> dict[str, str]:
    # Worldline webhooks: X-GCS-Signature = base64 HMAC-SHA256(secret key, body), X-GCS-KeyId.
    return {
        "X-GCS-Signature": b64(hmac.new(secret.encode(), body, hashlib.sha256).digest()),
        "X-GCS-KeyId": "key-1",
    }


SIGNERS: dict[str, Any] = {
    "zoom": zoom_headers,
    "twitch": twitch_headers,
    "x": x_headers,
    "box": box_headers,
    "dropbox": dropbox_headers,
    "xero": xero_headers,
    "teams": teams_headers,
    "worldline": worldline_headers,
}
TIMESTAMPED = {"zoom": 300, "twitch": 600, "box": 600}


def secret_for(name: str) -> str:
    return TEAMS_TOKEN if name == "teams" else SECRET


@pytest.mark.parametrize("name", sorted(SIGNERS))
def test_preset_verifies_what_the_documented_signer_sends(name: str) -> None:
    secret = secret_for(name)
    v = verifier({"scheme": name, "secrets": ["env:K"]}, {"K": secret})
    headers = SIGNERS[name](secret, BODY, NOW)
    r = v.verify(signed(headers, BODY, NOW + 5))
    assert (r.ok, r.secret_index) == (True, 0)
    for at in (0, len(BODY) // 2, -1):
        assert v.verify(signed(headers, flip(BODY, at), NOW)).reason == "mismatch"
    other = b64(b"another-token-entirely-32-bytes!") if name == "teams" else "not-the-secret"
    wrong = SIGNERS[name](other, BODY, NOW)
    assert v.verify(signed(wrong, BODY, NOW)).reason == "mismatch"
    assert v.verify(signed({}, BODY, NOW)).reason == "missing"


@pytest.mark.parametrize("name", sorted(TIMESTAMPED))
def test_timestamped_presets_refuse_outside_their_window(name: str) -> None:
    window = TIMESTAMPED[name]
    v = verifier({"scheme": name, "secrets": ["env:S"]}, ENV)
    headers = SIGNERS[name](SECRET, BODY, NOW)
    assert v.verify(signed(headers, BODY, NOW + window - 1)).ok
    assert v.verify(signed(headers, BODY, NOW + window + 2)).reason == "stale"
    assert v.verify(signed(headers, BODY, NOW - window - 2)).reason == "stale"
    # The timestamp is signed: moving it breaks the signature rather than the window.
    moved = SIGNERS[name](SECRET, BODY, NOW + 1)
    ts_header = next(k for k in moved if "TIMESTAMP" in k.upper())
    tampered = dict(headers, **{ts_header: moved[ts_header]})
    assert v.verify(signed(tampered, BODY, NOW)).reason == "mismatch"
    # A route may widen or narrow the window.
    narrow = verifier({"scheme": name, "secrets": ["env:S"], "tolerance": "10s"}, ENV)
    assert narrow.verify(signed(headers, BODY, NOW + 30)).reason == "stale"


@pytest.mark.parametrize("name", sorted(SIGNERS))
def test_sign_prints_what_the_documented_signer_would(name: str) -> None:
    secret = secret_for(name)
    out = dict(
        sign(
            {"scheme": name, "secrets": ["env:K"]}, {"K": secret}, ToSign(BODY, NOW, message_id="m-1")
        ).headers
    )
    if name == "twitch":
        expected = hmac.new(
            secret.encode(),
            out["Twitch-Eventsub-Message-Id"].encode()
            + out["Twitch-Eventsub-Message-Timestamp"].encode()
            + BODY,
            hashlib.sha256,
        ).hexdigest()
        assert out["Twitch-Eventsub-Message-Signature"] == "sha256=" + expected
        assert out["Twitch-Eventsub-Message-Id"] == "m-1"
    elif name == "box":
        stamp = out["BOX-DELIVERY-TIMESTAMP"]
        assert parse_timestamp(stamp.encode(), "rfc3339") == NOW
        digest = hmac.new(secret.encode(), BODY + stamp.encode(), hashlib.sha256).digest()
        assert out["BOX-SIGNATURE-PRIMARY"] == b64(digest)
    else:
        # The key id Worldline sends alongside is not signed; `sign` leaves it out.
        expected = {k: v for k, v in SIGNERS[name](secret, BODY, NOW).items() if k != "X-GCS-KeyId"}
        assert out == expected
    v = verifier({"scheme": name, "secrets": ["env:K"]}, {"K": secret})
    assert v.verify(signed(out, BODY, NOW)).ok


def test_box_secondary_key_verifies_during_rotation() -> None:
    # Box signs with both keys: a route listing only the secondary (primary rotated away) verifies.
    headers = box_headers("old-primary", BODY, NOW, secondary=SECRET)
    v = verifier({"scheme": "box", "secrets": ["env:S"]}, ENV)
    r = v.verify(signed(headers, BODY, NOW))
    assert (r.ok, r.secret_index) == (True, 0)
    only_secondary = {k: v for k, v in headers.items() if k != "BOX-SIGNATURE-PRIMARY"}
    assert v.verify(signed(only_secondary, BODY, NOW)).ok
    both = verifier({"scheme": "box", "secrets": ["env:S2", "env:S"]}, ENV)
    assert both.verify(signed(headers, BODY, NOW)).secret_index == 1


def test_twitch_rfc3339_with_offsets_and_nanoseconds() -> None:
    assert parse_timestamp(b"2023-11-14T22:13:20.634234626Z", "rfc3339") == pytest.approx(NOW + 0.634234626)
    assert parse_timestamp(b"2023-11-14T14:13:20-08:00", "rfc3339") == NOW
    assert parse_timestamp(b"2023-11-15T00:13:20+02:00", "rfc3339") == NOW
    for bad in (
        b"2023-11-14",
        b"2023-13-14T22:13:20Z",
        b"2023-11-14T22:13:20",
        b" 2023-11-14T22:13:20Z",
        b"x",
    ):
        assert parse_timestamp(bad, "rfc3339") is None
    assert parse_timestamp(b"1700000000000", "unix-ms") == NOW
    assert parse_timestamp(b"-1", "unix") is None


def teams_conf() -> dict[str, Any]:
    return {"scheme": "teams", "secrets": ["env:T"]}


def test_teams_key_is_the_decoded_token() -> None:
    # Keyed with the token text itself (a common mistake) the signature must not verify.
    v = verifier(teams_conf(), {"T": TEAMS_TOKEN})
    raw_keyed = {
        "Authorization": "HMAC " + b64(hmac.new(TEAMS_TOKEN.encode(), BODY, hashlib.sha256).digest())
    }
    assert v.verify(signed(raw_keyed, BODY, NOW)).reason == "mismatch"
    assert v.verify(signed({"Authorization": "Bearer abc"}, BODY, NOW)).reason == "malformed"


# ---------------------------------------------------------------- the generic template


def zoom_like(**over: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "scheme": "hmac-template",
        "secrets": ["env:S"],
        "template": "v0:{header:X-Ts}:{body}",
        "signature_header": "X-Sig",
        "prefix": "v0=",
        "timestamp_header": "X-Ts",
    }
    conf.update(over)
    return conf


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("hex", lambda d: d.hex()),
        ("base64", lambda d: base64.b64encode(d).decode()),
        ("base64url", lambda d: base64.urlsafe_b64encode(d).decode().rstrip("=")),
    ],
)
@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "sha512"])
def test_template_encodings_and_algorithms(encoding: str, encode: Any, algorithm: str) -> None:
    conf = zoom_like(encoding=encoding, algorithm=algorithm)
    msg = f"v0:{NOW}:".encode() + BODY
    digest = hmac.new(SECRET.encode(), msg, getattr(hashlib, algorithm)).digest()
    v = verifier(conf, ENV)
    assert v.verify(signed({"X-Ts": str(NOW), "X-Sig": "v0=" + encode(digest)}, BODY, NOW)).ok
    assert (
        v.verify(signed({"X-Ts": str(NOW), "X-Sig": "v0=" + encode(digest[:-1])}, BODY, NOW)).reason
        == "malformed"
    )
    assert v.verify(signed({"X-Ts": str(NOW), "X-Sig": encode(digest)}, BODY, NOW)).reason == "malformed"
    out = dict(sign(conf, ENV, ToSign(BODY, NOW)).headers)
    assert out == {"X-Ts": str(NOW), "X-Sig": "v0=" + encode(digest)}


def test_template_query_literal_braces_and_ms_timestamps() -> None:
    conf = zoom_like(template="{{{header:X-Ts}}}.{query}.{body}", timestamp_format="unix-ms", prefix="")
    ms = str(NOW * 1000)
    msg = b"{" + ms.encode() + b"}.a=1&b=%20." + BODY
    sig = hmac.new(SECRET.encode(), msg, hashlib.sha256).hexdigest()
    v = verifier(conf, ENV)
    assert v.verify(signed({"X-Ts": ms, "X-Sig": sig}, BODY, NOW, "a=1&b=%20")).ok
    assert v.verify(signed({"X-Ts": ms, "X-Sig": sig}, BODY, NOW, "a=1&b=+")).reason == "mismatch"
    assert v.verify(signed({"X-Ts": ms, "X-Sig": sig}, BODY, NOW + 301, "a=1&b=%20")).reason == "stale"


def test_template_signed_header_absent_or_repeated_is_malformed() -> None:
    conf = zoom_like(template="{header:X-Id}.{body}", timestamp_header=None)
    del conf["timestamp_header"]
    v = verifier(conf, ENV)
    sig = "v0=" + hmac.new(SECRET.encode(), b"id-1." + BODY, hashlib.sha256).hexdigest()
    assert v.verify(signed({"X-Id": "id-1", "X-Sig": sig}, BODY, NOW)).ok
    assert v.verify(signed({"X-Sig": sig}, BODY, NOW)).reason == "malformed"
    assert (
        v.verify(signed([("X-Id", "id-1"), ("X-Id", "id-1"), ("X-Sig", sig)], BODY, NOW)).reason
        == "malformed"
    )
    assert (
        v.verify(signed([("X-Id", "id-1"), ("X-Sig", sig), ("X-Sig", sig)], BODY, NOW)).reason == "malformed"
    )


def test_template_base64_secret_and_rotation() -> None:
    key = b"\x00\xffbinary-key"
    conf = zoom_like(secret_encoding="base64", secrets=["env:OLD", "env:NEW"])
    env = {"OLD": b64(b"old-key"), "NEW": b64(key)}
    sig = "v0=" + hmac.new(key, f"v0:{NOW}:".encode() + BODY, hashlib.sha256).hexdigest()
    r = verifier(conf, env).verify(signed({"X-Ts": str(NOW), "X-Sig": sig}, BODY, NOW))
    assert (r.ok, r.secret_index) == (True, 1)


@pytest.mark.parametrize(
    ("over", "expected"),
    [
        ({"template": "{header:X-Ts}"}, "template: a template must sign {body}"),
        ({"template": "v0:{bdy}"}, "template: unknown placeholder {bdy}"),
        ({"template": "v0:{body"}, "template: unclosed '{' at position 3"),
        ({"template": "v0}{body}"}, "template: unmatched '}' at position 2"),
        ({"template": "{header:}{body}"}, "template: unknown placeholder {header:}"),
        ({"template": "{header:X Y}{body}"}, "unknown placeholder {header:X Y}"),
        ({"template": "é{body}"}, "template: a template is ASCII"),
        ({"template": 5}, "template: expected a string"),
        ({"template": "{body}"}, "timestamp_header: the template must sign it: add {header:X-Ts}"),
        ({"encoding": "base32"}, "encoding: 'base32' is not one of: hex, base64, base64url"),
        ({"algorithm": "md5"}, "algorithm: 'md5' is not one of: sha1, sha256, sha512"),
        ({"timestamp_format": "iso"}, "timestamp_format: 'iso' is not one of"),
        ({"tolerance": "soon"}, "tolerance: 'soon' is not a duration"),
        ({"signature_header": "X Sig"}, "signature_header: 'X Sig' is not a header name"),
        ({"signature_headers": ["A", "B"]}, "give signature_header or signature_headers, not both"),
        ({"secret_encoding": "base64"}, "secrets[0]: with secret_encoding: base64 a secret is base64"),
        ({"prefix": "v0=\n"}, "prefix: a prefix is ASCII on one line"),
        ({"templat": "x"}, "templat: unknown key (did you mean template?)"),
    ],
)
def test_template_check_errors(over: dict[str, Any], expected: str) -> None:
    problems = config_problems(zoom_like(**over), {"S": "not base64!"})
    assert any(expected in p for p in problems), problems


def test_template_check_errors_without_timestamp_header() -> None:
    conf = {
        "scheme": "hmac-template",
        "secrets": ["env:S"],
        "template": "{body}",
        "signature_header": "X",
        "tolerance": "5m",
    }
    assert any(
        "tolerance: only means something with timestamp_header" in p for p in config_problems(conf, ENV)
    )
    missing = {"scheme": "hmac-template", "secrets": ["env:S"]}
    problems = config_problems(missing, ENV)
    assert any("verify.template: is required" in p for p in problems)
    assert any("verify.signature_header: is required" in p for p in problems)


@pytest.mark.parametrize(
    ("verify", "expected"),
    [
        ({"scheme": "zoom", "secrets": ["env:S"], "template": "{body}"}, "verify.template: unknown key"),
        ({"scheme": "xero", "secrets": ["env:S"], "tolerance": "5m"}, "verify.tolerance: unknown key"),
        ({"scheme": "teams", "secrets": ["env:S"]}, "secret from env:S: a teams secret is base64"),
        (
            {"scheme": "twitch", "secrets": ["env:S"], "tolerance": "0s"},
            "tolerance: a duration must be positive",
        ),
    ],
)
def test_preset_check_errors(verify: dict[str, Any], expected: str) -> None:
    problems = config_problems(verify, {"S": "not base64!"})
    assert any(expected in p for p in problems), problems


def test_dropbox_published_vector() -> None:
    # The vector in the hapi-dropbox-webhooks plugin's tests (app.unpkg.com, hapi-dropbox-webhooks
    # 1.1.0, test/index.js): Dropbox's own page gives no worked example.
    v = verifier({"scheme": "dropbox", "secrets": ["env:D"]}, {"D": "the_secret"})
    body = b'{"delta": {"users": [12345]}}'
    sig = "0a8c16b085420b960dc78664279fe09e936a2a01b1f91064869d9e77dfd64529"
    assert v.verify(signed({"X-Dropbox-Signature": sig}, body, NOW)).ok
    assert v.verify(signed({"X-Dropbox-Signature": sig}, flip(body, 2), NOW)).reason == "mismatch"


def test_twitch_replay_key_defaults_to_its_signed_message_id() -> None:
    def replay_of(scheme: str) -> Any:
        conf = {"scheme": scheme, "secrets": ["env:S"]}
        r = {"name": "r", "path": "/r", "upstream": "http://127.0.0.1:1/", "verify": conf, "replay": {}}
        return cfg.build({"routes": [r]}, environ=ENV).routes[0].replay

    assert (replay_of("twitch").key, replay_of("twitch").header) == ("header", "Twitch-Eventsub-Message-Id")
    assert replay_of("zoom").key == "body-sha256"


def test_check_command_points_at_a_bad_template(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "routes:\n"
        "  - name: t\n"
        "    path: /t\n"
        "    upstream: http://127.0.0.1:3000/\n"
        "    verify:\n"
        "      scheme: hmac-template\n"
        "      secrets: [env:S]\n"
        '      template: "{header:X-Ts}.{bdy}"\n'
        "      signature_header: X-Sig\n"
        "      encoding: base32\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check", "--config", str(path)],
        cwd=ROOT_DIR,
        env={**os.environ, "S": SECRET, "PYTHONPATH": str(ROOT_DIR)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "8:17: routes[0].verify.template: unknown placeholder {bdy}" in result.stderr + result.stdout
    assert "10:17: routes[0].verify.encoding: 'base32' is not one of" in result.stderr + result.stdout


def test_xero_key_is_used_as_text_even_though_it_looks_like_base64() -> None:
    # Xero's webhook key is a base64-looking string, yet its intent-to-receive samples key the
    # HMAC with the text itself (unlike Teams, whose token is decoded first).
    key = base64.b64encode(b"xero-webhook-key-bytes-0123456789" * 2).decode()
    v = verifier({"scheme": "xero", "secrets": ["env:X"]}, {"X": key})
    assert v.verify(signed(xero_headers(key, BODY, NOW), BODY, NOW)).ok
    decoded = {"x-xero-signature": b64(hmac.new(base64.b64decode(key), BODY, hashlib.sha256).digest())}
    assert v.verify(signed(decoded, BODY, NOW)).reason == "mismatch"
