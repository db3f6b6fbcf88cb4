"""Standard Webhooks (standardwebhooks.com; Svix and the many senders built on it).

Headers `webhook-id`, `webhook-timestamp` and `webhook-signature`; the signature header is a
space-separated list of `<version>,<base64>` entries (several while a secret rotates). A `v1`
entry is the base64 HMAC-SHA256 of `id + "." + timestamp + "." + raw body`, keyed with the
*decoded* secret: the configured value is `whsec_` + base64. Other versions (`v1a` is an
asymmetric signature) are skipped. The timestamp is refused outside `tolerance` (default 300 s).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from dataclasses import dataclass

from gateway.reader import Problems, Reader
from gateway.schemes.base import (
    FAIL_MALFORMED,
    FAIL_STALE,
    MISSING,
    Signature,
    Signed,
    SigResult,
    TimestampOptions,
    ToSign,
    VerifyConfig,
    base64_digest,
    hmac_sha256,
    is_stale,
    match_any_of,
    one_header,
    parse_timestamp,
    parse_tolerance,
    secret_for_signing,
)

ID = "webhook-id"
TIMESTAMP = "webhook-timestamp"
SIGNATURE = "webhook-signature"
PREFIX = b"whsec_"
_VERSION = re.compile(rb"v[0-9a-z]{1,8}")
_MAX_SIGNATURES = 32


def decode_secret(value: bytes) -> bytes | None:
    """`whsec_` + base64 (the prefix is optional, padding may be left off) -> key bytes."""
    raw = value[len(PREFIX) :] if value.startswith(PREFIX) else value
    try:
        key = base64.b64decode(raw + b"=" * (-len(raw) % 4), validate=True)
    except (ValueError, binascii.Error):
        return None
    return key or None


def parse_signatures(raw: bytes) -> tuple[bytes, ...] | None:
    """The v1 digests of a `webhook-signature` value, or None when it is not well formed."""
    entries = raw.split(b" ")
    if len(entries) > _MAX_SIGNATURES:
        return None
    digests: list[bytes] = []
    for entry in entries:  # an empty entry means a doubled, leading or trailing space
        version, sep, value = entry.partition(b",")
        if not sep or not _VERSION.fullmatch(version) or not value:
            return None
        if version == b"v1":
            digest = base64_digest(value, 32)
            if digest is None:
                return None
            digests.append(digest)
    return tuple(digests) or None  # nothing this gateway can check is not a pass


@dataclass(frozen=True)
class StandardWebhooksVerifier:
    keys: tuple[tuple[int, bytes], ...]  # decoded secrets
    tolerance: float

    def verify(self, req: Signed) -> SigResult:
        sig = one_header(req.headers, SIGNATURE)
        if isinstance(sig, SigResult):
            return sig
        msg_id = one_header(req.headers, ID)
        ts = one_header(req.headers, TIMESTAMP)
        for part in (msg_id, ts):
            if isinstance(part, SigResult):
                return FAIL_MALFORMED if part.reason == MISSING else part
        assert isinstance(msg_id, bytes) and isinstance(ts, bytes)
        timestamp = parse_timestamp(ts)
        digests = parse_signatures(sig)
        if timestamp is None or digests is None:
            return FAIL_MALFORMED
        body = req.body
        result = match_any_of(self.keys, digests, lambda key: hmac_sha256(key, msg_id, b".", ts, b".", body))
        if result.ok and is_stale(timestamp, req.now, self.tolerance):
            return FAIL_STALE
        return result


class StandardWebhooksScheme:
    name = "standard-webhooks"
    option_keys = frozenset({"tolerance"})
    # The spec's idempotency key: the same id on every retry of one message.
    replay_header = ID
    # ... and it is part of what is signed, so the replay check may key on it by default.
    replay_header_signed = True

    def check_secret(self, value: bytes) -> str | None:
        if decode_secret(value) is None:
            return "a Standard Webhooks secret is whsec_ followed by base64"
        return None

    def parse_options(self, r: Reader, problems: Problems) -> TimestampOptions:
        return parse_tolerance(r)

    def build(self, verify: VerifyConfig) -> StandardWebhooksVerifier:
        keys = tuple((s.index, decode_secret(s.value) or b"") for s in verify.secrets)
        return StandardWebhooksVerifier(keys, verify.options.tolerance)

    def sign(self, verify: VerifyConfig, req: ToSign) -> Signature:
        key = decode_secret(secret_for_signing(verify)) or b""
        msg_id = req.message_id or "msg_" + secrets.token_urlsafe(18)
        ts = str(req.now)
        digest = hmac_sha256(key, msg_id.encode(), b".", ts.encode(), b".", req.body)
        return Signature(
            ((ID, msg_id), (TIMESTAMP, ts), (SIGNATURE, "v1," + base64.b64encode(digest).decode())),
            req.query,
        )
