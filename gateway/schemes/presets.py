"""Named senders that sign with an HMAC layout `hmac-template` can describe: each one is data.

A preset is the `hmac-template` options the sender's documentation gives, read by the same code
as a route's own options, plus the name of its handshake when it has one. A route using a preset
may only change the tolerance (where the preset has a timestamp). See docs/senders/<name>.md.
"""

from __future__ import annotations

from typing import Any

from gateway.reader import Problems, Reader
from gateway.schemes.base import Signature, ToSign, VerifyConfig, secret_for_signing
from gateway.schemes.handshake import Challenge, Handshake
from gateway.schemes.sender_handshakes import DropboxChallenge, TwitchChallenge, XCrc, ZoomChallenge
from gateway.schemes.template import (
    OPTION_KEYS,
    TemplateOptions,
    TemplateVerifier,
    decode_secret,
    keys_of,
    parse_template_options,
    sign_template,
)

PRESETS: dict[str, dict[str, Any]] = {
    # developers.zoom.us/docs/api/webhooks: "v0:" + x-zm-request-timestamp + ":" + body, hex.
    "zoom": {
        "template": "v0:{header:x-zm-request-timestamp}:{body}",
        "signature_header": "x-zm-signature",
        "prefix": "v0=",
        "timestamp_header": "x-zm-request-timestamp",
        "challenge": "zoom",
    },
    # dev.twitch.tv/docs/eventsub/handling-webhook-events: id + timestamp + body; Twitch asks
    # receivers to refuse messages older than 10 minutes.
    "twitch": {
        "template": "{header:Twitch-Eventsub-Message-Id}{header:Twitch-Eventsub-Message-Timestamp}{body}",
        "signature_header": "Twitch-Eventsub-Message-Signature",
        "prefix": "sha256=",
        "timestamp_header": "Twitch-Eventsub-Message-Timestamp",
        "timestamp_format": "rfc3339",
        "tolerance": "10m",
        "challenge": "twitch",
        # A resent message keeps its id, and the id is signed: a replay check may key on it.
        "replay_header": "Twitch-Eventsub-Message-Id",
    },
    # X Account Activity API, "Securing webhooks": base64 HMAC-SHA256 of the body.
    "x": {
        "template": "{body}",
        "signature_header": "x-twitter-webhooks-signature",
        "prefix": "sha256=",
        "encoding": "base64",
        "handshake": "x-crc",
    },
    # developer.box.com/guides/webhooks/v2/signatures-v2: body bytes then the timestamp's,
    # base64, a primary and a secondary key, 10 minute window.
    "box": {
        "template": "{body}{header:BOX-DELIVERY-TIMESTAMP}",
        "signature_headers": ["BOX-SIGNATURE-PRIMARY", "BOX-SIGNATURE-SECONDARY"],
        "encoding": "base64",
        "timestamp_header": "BOX-DELIVERY-TIMESTAMP",
        "timestamp_format": "rfc3339",
        "tolerance": "10m",
    },
    # Dropbox webhooks: hex HMAC-SHA256 of the body under the app secret.
    "dropbox": {
        "template": "{body}",
        "signature_header": "X-Dropbox-Signature",
        "handshake": "dropbox",
    },
    # Xero webhooks: base64 HMAC-SHA256 of the body under the webhook key.
    "xero": {"template": "{body}", "signature_header": "x-xero-signature", "encoding": "base64"},
    # Microsoft Teams outgoing webhooks: `Authorization: HMAC <base64>`, keyed with the
    # base64-decoded security token.
    "teams": {
        "template": "{body}",
        "signature_header": "Authorization",
        "prefix": "HMAC ",
        "encoding": "base64",
        "secret_encoding": "base64",
    },
    # Worldline (Connect / Direct webhooks): base64 HMAC-SHA256 of the body under the secret key.
    "worldline": {"template": "{body}", "signature_header": "X-GCS-Signature", "encoding": "base64"},
}

_NOT_OPTIONS = ("challenge", "handshake", "replay_header")


class PresetScheme:
    """One preset: `hmac-template` with the options written above."""

    def __init__(self, name: str, data: dict[str, Any]) -> None:
        self.name = name
        self.data = {k: v for k, v in data.items() if k not in _NOT_OPTIONS}
        self.challenge: str | None = data.get("challenge")
        self.handshake: str | None = data.get("handshake")
        self.replay_header: str | None = data.get("replay_header")
        # Only a signed header is a safe default replay key (gateway/config/build.py).
        self.replay_header_signed = self.replay_header is not None
        self.option_keys = frozenset({"tolerance"} if "timestamp_header" in self.data else ())

    def check_secret(self, value: bytes) -> str | None:
        encoding = self.data.get("secret_encoding", "raw")
        if decode_secret(value, encoding) is None:
            return f"a {self.name} secret is base64"
        return None

    def parse_options(self, r: Reader, problems: Problems) -> TemplateOptions | None:
        raw = dict(self.data)
        raw.update({k: r.raw[k] for k in self.option_keys if k in r.raw})
        inner = Reader(raw, r.at, problems, set(OPTION_KEYS), r.environ)
        return parse_template_options(inner, problems)

    def build(self, verify: VerifyConfig) -> TemplateVerifier:
        return TemplateVerifier(verify.options, keys_of(verify))

    def build_challenge(self, verify: VerifyConfig) -> Challenge | None:
        if self.challenge == "zoom":
            return ZoomChallenge(self.build(verify), keys_of(verify))
        if self.challenge == "twitch":
            return TwitchChallenge()
        return None

    def build_handshake(self, verify: VerifyConfig) -> Handshake | None:
        if self.handshake == "x-crc":
            return XCrc(secret_for_signing(verify))
        if self.handshake == "dropbox":
            return DropboxChallenge()
        return None

    def sign(self, verify: VerifyConfig, req: ToSign) -> Signature:
        return sign_template(verify, req)


PRESET_SCHEMES = tuple(PresetScheme(name, data) for name, data in PRESETS.items())
