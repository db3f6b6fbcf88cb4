"""The shared shape of the timestamped public-key schemes (Discord, Telnyx, SendGrid).

Each sends a signature header and a timestamp header and signs `prefix(timestamp) + body`;
they differ only in header names, the signature's encoding, the key type and the joiner. A
scheme is a few lines of data over `TimestampedKeyScheme`.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass

from gateway.reader import Problems, Reader
from gateway.schemes.base import (
    FAIL_MALFORMED,
    FAIL_MISMATCH,
    FAIL_STALE,
    MISSING,
    Signature,
    Signed,
    SigResult,
    ToSign,
    VerifyConfig,
    is_stale,
    one_header,
    parse_timestamp,
    parse_tolerance,
)
from gateway.schemes.keys import (
    AsymmetricOptions,
    Kind,
    PublicKey,
    load_private_key,
    no_secrets,
    read_public_keys,
    signer,
    verify_any,
)

# DER ECDSA P-256 signatures are at most 72 bytes; Ed25519 ones exactly 64.
_MAX_SIGNATURE = 128


@dataclass(frozen=True)
class Layout:
    signature_header: str
    timestamp_header: str
    kind: Kind
    decode: Callable[[bytes], bytes | None]  # the header's encoding -> signature bytes
    encode: Callable[[bytes], str]
    joiner: bytes  # between timestamp and body in the signed message


def _hex(raw: bytes) -> bytes | None:
    if len(raw) != 128:
        return None
    try:
        return bytes.fromhex(raw.decode("ascii"))
    except ValueError:
        return None


def _base64(raw: bytes) -> bytes | None:
    try:
        out = base64.b64decode(raw, validate=True)
    except ValueError:
        return None
    return out if 0 < len(out) <= _MAX_SIGNATURE else None


HEX = (_hex, bytes.hex)
BASE64 = (_base64, lambda sig: base64.b64encode(sig).decode())


@dataclass(frozen=True)
class TimestampedKeyVerifier:
    layout: Layout
    keys: tuple[tuple[int, PublicKey], ...]
    tolerance: float

    def verify(self, req: Signed) -> SigResult:
        lay = self.layout
        sig = one_header(req.headers, lay.signature_header)
        if isinstance(sig, SigResult):
            return sig
        ts = one_header(req.headers, lay.timestamp_header)
        if isinstance(ts, SigResult):
            # A signature without its timestamp is broken, not absent (on_missing must not allow it).
            return FAIL_MALFORMED if ts.reason == MISSING else ts
        signature = lay.decode(sig)
        timestamp = parse_timestamp(ts)
        if signature is None or timestamp is None or (lay.kind == "ed25519" and len(signature) != 64):
            return FAIL_MALFORMED
        index = verify_any(self.keys, signature, ts + lay.joiner + req.body)
        if index is None:
            return FAIL_MISMATCH
        # Signature first: a forgery reads as mismatch, a replayed genuine request as stale.
        if is_stale(timestamp, req.now, self.tolerance):
            return FAIL_STALE
        return SigResult(True, None, index)


class TimestampedKeyScheme:
    """`public_keys:` (inline, env: or file:) and `tolerance` (default 300 s); no `secrets`."""

    option_keys = frozenset({"public_keys", "tolerance"})
    replay_header: str | None = None
    secrets_required = False

    def __init__(self, name: str, layout: Layout) -> None:
        self.name = name
        self.layout = layout

    def check_secret(self, value: bytes) -> str | None:
        return None

    def parse_options(self, r: Reader, problems: Problems) -> AsymmetricOptions:
        no_secrets(r, self.name)
        keys = read_public_keys(r, self.layout.kind, required=True)
        return AsymmetricOptions(keys, parse_tolerance(r).tolerance)

    def build(self, verify: VerifyConfig) -> TimestampedKeyVerifier:
        opts: AsymmetricOptions = verify.options
        return TimestampedKeyVerifier(self.layout, tuple(enumerate(opts.public_keys)), opts.tolerance)

    def sign(self, verify: VerifyConfig, req: ToSign) -> Signature:
        if not req.private_key:
            raise ValueError(f"{self.name} signs with a private key: give --private-key FILE")
        lay = self.layout
        sign = signer(load_private_key(req.private_key, lay.kind))
        ts = str(req.now).encode()
        sig = sign(ts + lay.joiner + req.body)
        return Signature(
            ((lay.timestamp_header, ts.decode()), (lay.signature_header, lay.encode(sig))), req.query
        )
