"""Standard Webhooks (standardwebhooks.com; Svix and the many senders built on it).

Headers `webhook-id`, `webhook-timestamp` and `webhook-signature`; the signature header is a
space-separated list of `<version>,<base64>` entries (several while a secret rotates). A `v1`
entry is the base64 HMAC-SHA256 of `id + "." + timestamp + "." + raw body`, keyed with the
*decoded* secret: the configured value is `whsec_` + base64. A `v1a` entry is the base64
Ed25519 signature of the same string, checked under the route's `public_keys:` (`whpk_` +
base64). A route holds secrets, public keys or both; entries of a version it has no key for
(and unknown versions) are skipped. The timestamp is refused outside `tolerance` (default 300 s).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from dataclasses import dataclass

from gateway.reader import Problems, Reader, parse_duration
from gateway.schemes.base import (
    DEFAULT_TOLERANCE,
    FAIL_MALFORMED,
    FAIL_MISMATCH,
    FAIL_STALE,
    MISSING,
    Signature,
    Signed,
    SigResult,
    ToSign,
    VerifyConfig,
    base64_digest,
    hmac_sha256,
    is_stale,
    match_any_of,
    one_header,
    parse_timestamp,
    secret_for_signing,
)
from gateway.schemes.keys import PublicKey, load_private_key, read_public_keys, signer, verify_any

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


def parse_signatures(raw: bytes) -> tuple[tuple[bytes, ...], tuple[bytes, ...]] | None:
    """The v1 digests and v1a signatures of a `webhook-signature` value, or None when it is
    not well formed (or holds neither)."""
    entries = raw.split(b" ")
    if len(entries) > _MAX_SIGNATURES:
        return None
    digests: list[bytes] = []
    signatures: list[bytes] = []
    for entry in entries:  # an empty entry means a doubled, leading or trailing space
        version, sep, value = entry.partition(b",")
        if not sep or not _VERSION.fullmatch(version) or not value:
            return None
        if version == b"v1":
            digest = base64_digest(value, 32)
            if digest is None:
                return None
            digests.append(digest)
        elif version == b"v1a":
            signature = base64_digest(value, 64)
            if signature is None:
                return None
            signatures.append(signature)
    if not digests and not signatures:
        return None  # nothing this gateway can check is not a pass
    return tuple(digests), tuple(signatures)


@dataclass(frozen=True)
class StandardWebhooksOptions:
    tolerance: float = DEFAULT_TOLERANCE
    public_keys: tuple[PublicKey, ...] = ()  # v1a: Ed25519


@dataclass(frozen=True)
class StandardWebhooksVerifier:
    keys: tuple[tuple[int, bytes], ...]  # decoded secrets
    tolerance: float
    # v1a keys, numbered after the secrets (the index `secret_matched` counts)
    public_keys: tuple[tuple[int, PublicKey], ...] = ()

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
        parsed = parse_signatures(sig)
        if timestamp is None or parsed is None:
            return FAIL_MALFORMED
        digests, signatures = parsed
        body = req.body
        result = FAIL_MISMATCH
        if digests and self.keys:
            result = match_any_of(
                self.keys, digests, lambda key: hmac_sha256(key, msg_id, b".", ts, b".", body)
            )
        if not result.ok and signatures and self.public_keys:
            message = b"".join((msg_id, b".", ts, b".", body))
            for signature in signatures:
                index = verify_any(self.public_keys, signature, message)
                if index is not None:
                    result = SigResult(True, None, index)
                    break
        if result.ok and is_stale(timestamp, req.now, self.tolerance):
            return FAIL_STALE
        return result


class StandardWebhooksScheme:
    name = "standard-webhooks"
    option_keys = frozenset({"tolerance", "public_keys"})
    secrets_required = False  # v1a-only routes hold public keys instead
    # The spec's idempotency key: the same id on every retry of one message.
    replay_header = ID
    # ... and it is part of what is signed, so the replay check may key on it by default.
    replay_header_signed = True

    def check_secret(self, value: bytes) -> str | None:
        if decode_secret(value) is None:
            return "a Standard Webhooks secret is whsec_ followed by base64"
        return None

    def parse_options(self, r: Reader, problems: Problems) -> StandardWebhooksOptions:
        keys = read_public_keys(r, "ed25519", required=False)
        if not r.has("secrets") and not r.has("public_keys") and not r.misspelt:
            problems.add(
                r.loc("secrets"),
                "give secrets (v1, env:NAME or file:PATH) and/or public_keys (v1a, whpk_...)",
            )
        return StandardWebhooksOptions(r.get("tolerance", parse_duration, DEFAULT_TOLERANCE), keys)

    def build(self, verify: VerifyConfig) -> StandardWebhooksVerifier:
        keys = tuple((s.index, decode_secret(s.value) or b"") for s in verify.secrets)
        opts: StandardWebhooksOptions = verify.options
        public = tuple((len(keys) + i, key) for i, key in enumerate(opts.public_keys))
        return StandardWebhooksVerifier(keys, opts.tolerance, public)

    def sign(self, verify: VerifyConfig, req: ToSign) -> Signature:
        """v1a with `--private-key`, else v1 with the first secret."""
        msg_id = req.message_id or "msg_" + secrets.token_urlsafe(18)
        ts = str(req.now)
        signed = b"".join((msg_id.encode(), b".", ts.encode(), b".", req.body))
        if req.private_key:
            sig = signer(load_private_key(req.private_key, "ed25519"))(signed)
            value = "v1a," + base64.b64encode(sig).decode()
        elif verify.secrets:
            key = decode_secret(secret_for_signing(verify)) or b""
            value = "v1," + base64.b64encode(hmac_sha256(key, signed)).decode()
        else:
            raise ValueError("this route verifies v1a only: give --private-key FILE")
        return Signature(((ID, msg_id), (TIMESTAMP, ts), (SIGNATURE, value)), req.query)
