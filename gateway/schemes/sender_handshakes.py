"""The handshakes of the HMAC presets (gateway/schemes/presets.py), answered by the gateway.

POST handshakes (Zoom, Twitch) are signed like any delivery and reach `answer` only once that
signature verified. GET handshakes (X's CRC, Dropbox's challenge) carry no signature: anyone can
send one, so what they return is limited (see docs/senders/x.md and dropbox.md): Dropbox's is an
echo of a short URL-safe token; X's is an HMAC of such a token under the consumer secret, which
is also the key X signs deliveries with, so the token alphabet keeps a CRC answer from ever being
the signature of a JSON body.
"""

from __future__ import annotations

import base64
import hmac
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.schemes.base import query_values
from gateway.schemes.handshake import MALFORMED, HandshakeAnswer

if TYPE_CHECKING:
    from gateway.schemes.base import Signed, Verifier

# What a handshake may echo or sign: a short token of URL-safe and base64 characters (Zoom,
# Twitch, X and Dropbox send random ids, UUIDs or base64), so the gateway never reflects markup
# and never signs anything that could be a JSON body.
_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]{1,256}")
_MAX_FIELDS = 16
_JSON = "application/json"
_REFUSED = HandshakeAnswer(400, reason=MALFORMED)


def _query_field(raw_query: str, name: str) -> str | None:
    """The one value of `name` in a raw query, if it is a well-formed token; None otherwise."""
    values = query_values(raw_query, name, _MAX_FIELDS)
    if values is None or len(values) != 1 or not _TOKEN.fullmatch(values[0]):
        return None
    return values[0]


def _json_object(body: bytes) -> dict[str, object] | None:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


@dataclass(frozen=True, repr=False)
class ZoomChallenge:
    """`endpoint.url_validation`: answer `{"plainToken", "encryptedToken"}`, the token's hex
    HMAC-SHA256 under the secret token that verified the request."""

    verifier: Verifier
    keys: tuple[tuple[int, bytes], ...]

    def answer(self, req: Signed) -> HandshakeAnswer | None:
        # A cheap look before parsing: every delivery comes through here.
        if b"endpoint.url_validation" not in req.body:
            return None
        event = _json_object(req.body)
        if event is None or event.get("event") != "endpoint.url_validation":
            return None
        payload = event.get("payload")
        plain = payload.get("plainToken") if isinstance(payload, dict) else None
        if not isinstance(plain, str) or not _TOKEN.fullmatch(plain):
            return _REFUSED
        matched = self.verifier.verify(req).secret_index
        key = next((k for i, k in self.keys if i == matched), None)
        if key is None:
            return _REFUSED
        encrypted = hmac.digest(key, plain.encode("ascii"), "sha256").hex()
        body = json.dumps({"plainToken": plain, "encryptedToken": encrypted}).encode()
        return HandshakeAnswer(200, body, content_type=_JSON)


@dataclass(frozen=True, slots=True)
class TwitchChallenge:
    """`Twitch-Eventsub-Message-Type: webhook_callback_verification`: answer the body's
    `challenge` as text/plain. Other message types (notification, revocation) go on as usual."""

    def answer(self, req: Signed) -> HandshakeAnswer | None:
        kind = req.headers.getall("Twitch-Eventsub-Message-Type", ())
        if list(kind) != ["webhook_callback_verification"]:
            return None
        event = _json_object(req.body)
        challenge = event.get("challenge") if event is not None else None
        if not isinstance(challenge, str) or not _TOKEN.fullmatch(challenge):
            return _REFUSED
        return HandshakeAnswer(200, challenge.encode("ascii"))


@dataclass(frozen=True, repr=False)
class XCrc:
    """X's challenge-response check: `GET ?crc_token=` answered with
    `{"response_token": "sha256=" + base64 HMAC-SHA256(consumer secret, crc_token)}`."""

    key: bytes

    def __repr__(self) -> str:
        return "XCrc(key=...)"

    def answer(self, raw_query: str) -> HandshakeAnswer:
        token = _query_field(raw_query, "crc_token")
        if token is None:
            return _REFUSED
        digest = hmac.digest(self.key, token.encode("ascii"), "sha256")
        body = json.dumps({"response_token": "sha256=" + base64.b64encode(digest).decode()}).encode()
        return HandshakeAnswer(200, body, content_type=_JSON)


@dataclass(frozen=True, slots=True)
class DropboxChallenge:
    """Dropbox's endpoint check: `GET ?challenge=` echoed as text/plain (the handler adds
    `X-Content-Type-Options: nosniff`, as Dropbox asks)."""

    def answer(self, raw_query: str) -> HandshakeAnswer:
        challenge = _query_field(raw_query, "challenge")
        if challenge is None:
            return _REFUSED
        return HandshakeAnswer(200, challenge.encode("ascii"))
