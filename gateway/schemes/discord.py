"""Discord interactions: `X-Signature-Ed25519` = hex Ed25519 signature of timestamp + raw body,
with the timestamp from `X-Signature-Timestamp`, under the application's public key (hex, from
the Developer Portal). Discord refuses to save an endpoint that accepts a bad signature, so a
route in enforce answers it 401.

The PING Discord sends when the endpoint is saved (and now and then after) is a signed
`{"type": 1}`: answered `{"type": 1}` by the gateway itself, once its signature verified.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from gateway.schemes.asymmetric import HEX, Layout, TimestampedKeyScheme
from gateway.schemes.base import Signed, VerifyConfig
from gateway.schemes.handshake import HandshakeAnswer

LAYOUT = Layout("X-Signature-Ed25519", "X-Signature-Timestamp", "ed25519", *HEX, joiner=b"")
PONG = b'{"type":1}'
# A PING is a small object; a large body is an interaction for the bot, not worth parsing here.
_MAX_PING = 16384


@dataclass(frozen=True)
class DiscordPing:
    def answer(self, req: Signed) -> HandshakeAnswer | None:
        body = req.body
        if len(body) > _MAX_PING or b'"type"' not in body:
            return None
        try:
            data = json.loads(body)
        except ValueError:
            return None
        if isinstance(data, dict) and data.get("type") == 1 and not isinstance(data.get("type"), bool):
            return HandshakeAnswer(200, PONG, content_type="application/json")
        return None


class DiscordScheme(TimestampedKeyScheme):
    def __init__(self) -> None:
        super().__init__("discord", LAYOUT)

    def build_challenge(self, verify: VerifyConfig) -> DiscordPing:
        return DiscordPing()
