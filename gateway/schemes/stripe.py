"""Stripe: `Stripe-Signature: t=<unix time>,v1=<hex>[,v1=<hex>...]`.

Each `v1` is the hex HMAC-SHA256 of `t + "." + raw body`, keyed with the whole endpoint secret
(`whsec_...` as text, not decoded). Several `v1` appear while Stripe rolls a secret; every
other scheme (`v0` and the like) is ignored, as Stripe's docs ask, so nothing can downgrade the
check. The timestamp is refused outside `tolerance` (default 300 s) in both directions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.reader import Problems, Reader
from gateway.schemes.base import (
    FAIL_MALFORMED,
    FAIL_STALE,
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
    match_any_of,
    one_header,
    parse_timestamp,
    parse_tolerance,
    secret_for_signing,
)

HEADER = "Stripe-Signature"
_KEY = re.compile(rb"[a-z][a-z0-9]*")
_VALUE = re.compile(rb"[\x21-\x7e]+")  # printable, no space: "t = 1" is not Stripe's format
_MAX_ITEMS = 32


def parse_header(raw: bytes) -> tuple[bytes, int, tuple[bytes, ...]] | None:
    """-> (timestamp as sent, timestamp, v1 digests), or None when the header is not well formed."""
    items = raw.split(b",")
    if len(items) > _MAX_ITEMS:
        return None
    t_raw: bytes | None = None
    digests: list[bytes] = []
    for item in items:
        key, sep, value = item.partition(b"=")
        if not sep or not _KEY.fullmatch(key) or not _VALUE.fullmatch(value):
            return None
        if key == b"t":
            if t_raw is not None:
                return None  # two timestamps: which one was signed?
            t_raw = value
        elif key == b"v1":
            digest = lower_hex_digest(value, 32)
            if digest is None:
                return None
            digests.append(digest)
        # Any other key (v0, a future scheme) is skipped: only v1 is ever trusted.
    if t_raw is None or not digests:
        return None
    timestamp = parse_timestamp(t_raw)
    if timestamp is None:
        return None
    return t_raw, timestamp, tuple(digests)


@dataclass(frozen=True)
class StripeVerifier:
    secrets: tuple[tuple[int, bytes], ...]
    tolerance: float

    def verify(self, req: Signed) -> SigResult:
        raw = one_header(req.headers, HEADER)
        if isinstance(raw, SigResult):
            return raw
        parsed = parse_header(raw)
        if parsed is None:
            return FAIL_MALFORMED
        t_raw, timestamp, digests = parsed
        body = req.body
        result = match_any_of(self.secrets, digests, lambda key: hmac_sha256(key, t_raw, b".", body))
        if result.ok and is_stale(timestamp, req.now, self.tolerance):
            return FAIL_STALE
        return result


class StripeScheme:
    name = "stripe"
    option_keys = frozenset({"tolerance"})
    # The event id (evt_...) is in the body, not a header; the signed timestamp bounds replays.
    replay_header = None

    def check_secret(self, value: bytes) -> str | None:
        if not value.startswith(b"whsec_"):
            return "a Stripe endpoint signing secret starts with whsec_ (not an API key)"
        return None

    def parse_options(self, r: Reader, problems: Problems) -> TimestampOptions:
        return parse_tolerance(r)

    def build(self, verify: VerifyConfig) -> StripeVerifier:
        return StripeVerifier(indexed(verify), verify.options.tolerance)

    def sign(self, verify: VerifyConfig, req: ToSign) -> Signature:
        t = str(req.now).encode()
        v1 = hmac_sha256(secret_for_signing(verify), t, b".", req.body).hex()
        return Signature(((HEADER, f"t={t.decode()},v1={v1}"),), req.query)
