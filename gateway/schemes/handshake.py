"""Verification handshakes the gateway answers itself; nothing here is ever forwarded upstream.

Two kinds: a `Handshake` answers a GET from its query (Meta below), and a `Challenge` answers a
POST that has already passed its route's signature check (a scheme's `build_challenge`), or says
it is not one (None) so that the request goes on as usual.

Meta (WhatsApp Cloud API, Messenger, Instagram) subscribes a webhook URL with
`GET ?hub.mode=subscribe&hub.verify_token=...&hub.challenge=...` and expects the challenge back
as the body. The GET carries no signature, so the token is the whole check: it is compared as
bytes in constant time. Nothing here is ever forwarded upstream.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import parse_qsl

if TYPE_CHECKING:
    from gateway.schemes.base import Signed

# The reason codes of gateway.schemes.base, spelled out: importing that package from here would
# make a cycle (the meta scheme builds this handshake).
MISSING, MISMATCH, MALFORMED = "missing", "mismatch", "malformed"
# The challenge is echoed in a response body: accept only a short token of URL-safe
# characters (Meta sends digits), so the gateway can never be made to reflect HTML or script.
_CHALLENGE = re.compile(r"[A-Za-z0-9._~-]{1,256}")
_MAX_FIELDS = 16


@dataclass(frozen=True, slots=True)
class HandshakeAnswer:
    status: int  # 200 answered, 400 malformed, 403 wrong or missing token
    body: bytes = b""  # the challenge, when answered
    reason: str | None = None  # missing | mismatch | malformed, when refused
    content_type: str = "text/plain; charset=utf-8"


class Handshake(Protocol):
    """A GET handshake (`build_handshake` on the scheme): answered from the raw query alone."""

    def answer(self, raw_query: str) -> HandshakeAnswer: ...


class Challenge(Protocol):
    """A POST handshake (`build_challenge` on the scheme), shown only requests whose signature
    verified: the answer, or None when this request is not a handshake. Never raises for bad
    input (a malformed handshake is a 400 answer); an exception is a refusal anyway."""

    def answer(self, req: Signed) -> HandshakeAnswer | None: ...


@dataclass(frozen=True, repr=False)
class MetaHandshake:
    verify_token: bytes

    def __repr__(self) -> str:
        return "MetaHandshake(verify_token=...)"

    def answer(self, raw_query: str) -> HandshakeAnswer:
        """Answer one GET from its raw (still percent-encoded) query string. Never raises."""
        try:
            pairs = parse_qsl(
                raw_query,
                keep_blank_values=True,
                encoding="utf-8",
                errors="strict",
                max_num_fields=_MAX_FIELDS,
            )
        except (ValueError, UnicodeDecodeError):
            return HandshakeAnswer(400, reason=MALFORMED)
        fields: dict[str, str] = {}
        for key, value in pairs:
            if key.startswith("hub.") and key in fields:
                return HandshakeAnswer(400, reason=MALFORMED)  # which one would Meta mean?
            fields[key] = value
        if fields.get("hub.mode") != "subscribe":
            return HandshakeAnswer(400, reason=MALFORMED)
        given = fields.get("hub.verify_token")
        if not given:
            return HandshakeAnswer(403, reason=MISSING)
        if not hmac.compare_digest(given.encode("utf-8"), self.verify_token):
            return HandshakeAnswer(403, reason=MISMATCH)
        challenge = fields.get("hub.challenge", "")
        if not _CHALLENGE.fullmatch(challenge):
            return HandshakeAnswer(400, reason=MALFORMED)
        return HandshakeAnswer(200, challenge.encode("ascii"))
