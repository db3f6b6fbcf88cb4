"""Slack: `X-Slack-Signature: v0=<hex HMAC-SHA256(signing secret, "v0:" + timestamp + ":" + body)>`
with the timestamp from `X-Slack-Request-Timestamp`, refused outside `tolerance` (default 300 s).

Slack checks an Events API Request URL with a signed POST
`{"type": "url_verification", "challenge": "..."}`; `SlackChallenge` answers it with the
challenge as text/plain, once the signature verified (the pipeline shows it nothing else).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from gateway.reader import Problems, Reader
from gateway.schemes.base import (
    FAIL_MALFORMED,
    FAIL_STALE,
    MALFORMED,
    MISSING,
    Signature,
    Signed,
    SigResult,
    TimestampOptions,
    ToSign,
    VerifyConfig,
    hmac_sha256,
    indexed,
    is_stale,
    lower_hex_digest,
    match_any,
    one_header,
    parse_timestamp,
    parse_tolerance,
    secret_for_signing,
)
from gateway.schemes.handshake import HandshakeAnswer

SIGNATURE = "X-Slack-Signature"
TIMESTAMP = "X-Slack-Request-Timestamp"
VERSION = b"v0"
URL_VERIFICATION = b'"url_verification"'
# Echoed in a response body: a short token of URL-safe characters only (Slack sends letters
# and digits), so the gateway never reflects markup.
_CHALLENGE = re.compile(r"[A-Za-z0-9._~-]{1,256}")


def _basestring(timestamp: bytes, body: bytes) -> tuple[bytes, ...]:
    return (VERSION, b":", timestamp, b":", body)


@dataclass(frozen=True)
class SlackVerifier:
    secrets: tuple[tuple[int, bytes], ...]
    tolerance: float

    def verify(self, req: Signed) -> SigResult:
        sig = one_header(req.headers, SIGNATURE)
        if isinstance(sig, SigResult):
            return sig
        ts = one_header(req.headers, TIMESTAMP)
        if isinstance(ts, SigResult):
            # A signature without its timestamp is broken, not absent (on_missing must not allow it).
            return FAIL_MALFORMED if ts.reason == MISSING else ts
        version, sep, hexdigest = sig.partition(b"=")
        if not sep or version != VERSION:
            return FAIL_MALFORMED
        digest = lower_hex_digest(hexdigest, 32)
        timestamp = parse_timestamp(ts)
        if digest is None or timestamp is None:
            return FAIL_MALFORMED
        body = req.body
        result = match_any(self.secrets, digest, lambda key: hmac_sha256(key, *_basestring(ts, body)))
        # Signature first: a forgery reads as mismatch, a replayed genuine request as stale.
        if result.ok and is_stale(timestamp, req.now, self.tolerance):
            return FAIL_STALE
        return result


@dataclass(frozen=True, slots=True)
class SlackChallenge:
    """Answers Slack's `url_verification`; every other verified request is not a handshake."""

    def answer(self, req: Signed) -> HandshakeAnswer | None:
        # Most verified requests are events (or form-encoded interactivity payloads): a byte
        # search spares parsing them here.
        if URL_VERIFICATION not in req.body:
            return None
        try:
            data = json.loads(req.body)
        except (ValueError, RecursionError):
            return None
        if not isinstance(data, dict) or data.get("type") != "url_verification":
            return None
        challenge = data.get("challenge")
        if not isinstance(challenge, str) or not _CHALLENGE.fullmatch(challenge):
            return HandshakeAnswer(400, reason=MALFORMED)
        return HandshakeAnswer(200, challenge.encode("ascii"))


class SlackScheme:
    name = "slack"
    option_keys = frozenset({"tolerance"})
    # Slack sends no delivery id header (retries carry X-Slack-Retry-Num; event_id is in the body).
    replay_header = None

    def check_secret(self, value: bytes) -> str | None:
        return None

    def parse_options(self, r: Reader, problems: Problems) -> TimestampOptions:
        return parse_tolerance(r)

    def build(self, verify: VerifyConfig) -> SlackVerifier:
        return SlackVerifier(indexed(verify), verify.options.tolerance)

    def build_challenge(self, verify: VerifyConfig) -> SlackChallenge:
        return SlackChallenge()

    def sign(self, verify: VerifyConfig, req: ToSign) -> Signature:
        ts = str(req.now).encode()
        digest = hmac_sha256(secret_for_signing(verify), *_basestring(ts, req.body))
        return Signature(((TIMESTAMP, ts.decode()), (SIGNATURE, "v0=" + digest.hex())), req.query)
