"""Public keys of the asymmetric schemes (Discord, Telnyx, Standard Webhooks v1a, SendGrid).

A public key is not a secret: it only checks signatures, it cannot make one. So the
`public_keys:` list takes a key inline as well as from `env:NAME` / `file:PATH`, and a key
may be given in any form a sender hands it out in, the same for every scheme:

- PEM (`-----BEGIN PUBLIC KEY-----`, SubjectPublicKeyInfo)
- base64 of the SubjectPublicKeyInfo DER (SendGrid's "verification key")
- Ed25519 only: 64 hex digits (Discord), base64 of the 32 raw bytes (Telnyx), `whpk_` + base64
  (Standard Webhooks)

Private keys (for `webhook-gateway sign` only) take PEM (PKCS#8) or, for Ed25519, the 32-byte
seed in hex, base64 or `whsk_` + base64.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gateway.reader import Reader, resolve_secret

Kind = Literal["ed25519", "p256"]
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey

WHPK = b"whpk_"
WHSK = b"whsk_"
_HEX64 = re.compile(rb"[0-9a-fA-F]{64}")
_MAX_KEYS = 16
_MAX_KEY_BYTES = 16384


def _b64(raw: bytes) -> bytes | None:
    """Standard or URL-safe base64, padding optional -> bytes (None when it is not base64)."""
    raw = raw.replace(b"-", b"+").replace(b"_", b"/")
    try:
        return base64.b64decode(raw + b"=" * (-len(raw) % 4), validate=True)
    except (ValueError, binascii.Error):
        return None


def _ed25519_raw(value: bytes) -> bytes | None:
    """The 32 raw bytes of an Ed25519 key written as hex, `whpk_`/`whsk_` + base64 or base64."""
    if _HEX64.fullmatch(value):
        return bytes.fromhex(value.decode("ascii"))
    for prefix in (WHPK, WHSK):
        if value.startswith(prefix):
            value = value[len(prefix) :]
    raw = _b64(value)
    return raw if raw is not None and len(raw) == 32 else None


def _check_kind(key: Any, kind: Kind) -> PublicKey:
    if kind == "ed25519" and isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if kind == "p256" and isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1":
        return key
    raise ValueError(f"not an {_KIND_NAME[kind]} public key")


_KIND_NAME = {"ed25519": "Ed25519", "p256": "ECDSA P-256"}


def load_public_key(value: bytes, kind: Kind) -> PublicKey:
    """Parse a public key in any accepted form; ValueError says what is wrong (never the key)."""
    value = value.strip()
    if not value or len(value) > _MAX_KEY_BYTES:
        raise ValueError("empty or oversized key")
    try:
        if value.startswith(b"-----BEGIN"):
            return _check_kind(serialization.load_pem_public_key(value), kind)
        if kind == "ed25519":
            raw = _ed25519_raw(value)
            if raw is not None:
                return ed25519.Ed25519PublicKey.from_public_bytes(raw)
        der = _b64(value)
        if der is None:
            raise ValueError("neither PEM, base64 nor hex")
        return _check_kind(serialization.load_der_public_key(der), kind)
    except (UnsupportedAlgorithm, TypeError) as exc:
        raise ValueError(f"not an {_KIND_NAME[kind]} public key") from exc
    except ValueError as exc:
        msg = str(exc) if str(exc).startswith(("not ", "neither ", "empty ")) else "cannot be parsed"
        raise ValueError(f"{msg} (expected an {_KIND_NAME[kind]} public key)") from None


def load_private_key(value: bytes, kind: Kind) -> PrivateKey:
    """A signing key for `webhook-gateway sign`: PEM, or for Ed25519 the 32-byte seed."""
    value = value.strip()
    try:
        if value.startswith(b"-----BEGIN"):
            key = serialization.load_pem_private_key(value, password=None)
        elif kind == "ed25519" and (raw := _ed25519_raw(value)) is not None:
            key = ed25519.Ed25519PrivateKey.from_private_bytes(raw)
        else:
            der = _b64(value)
            if der is None:
                raise ValueError("neither PEM, base64 nor hex")
            key = serialization.load_der_private_key(der, password=None)
    except (UnsupportedAlgorithm, TypeError, ValueError) as exc:
        raise ValueError(f"the private key cannot be read as {_KIND_NAME[kind]}: {exc}") from None
    if kind == "ed25519" and isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    if kind == "p256" and isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1":
        return key
    raise ValueError(f"the private key is not an {_KIND_NAME[kind]} key")


def load_private_key_rsa(value: bytes) -> rsa.RSAPrivateKey:
    """An RSA signing key (PEM) for `webhook-gateway sign` on an SNS route."""
    try:
        key = serialization.load_pem_private_key(value.strip(), password=None)
    except (UnsupportedAlgorithm, TypeError, ValueError) as exc:
        raise ValueError(f"the private key cannot be read as PEM: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the private key is not an RSA key")
    return key


def read_public_keys(r: Reader, kind: Kind, *, required: bool) -> tuple[PublicKey, ...]:
    """The `public_keys:` list: each entry inline, `env:NAME` or `file:PATH`; errors located."""
    at = r.loc("public_keys")
    refs = r.list("public_keys")
    if refs is None:
        if required and not r.has("public_keys") and "public_keys" not in r.misspelt:
            r.problems.add(at, f"at least one {_KIND_NAME[kind]} public key is required")
        elif r.has("public_keys") and not isinstance(r.raw["public_keys"], list):
            pass  # r.list said "expected a list"
        return ()
    if required and not refs:
        r.problems.add(at, f"at least one {_KIND_NAME[kind]} public key is required")
    if len(refs) > _MAX_KEYS:
        r.problems.add(at, f"at most {_MAX_KEYS} public keys")
        return ()
    keys: list[PublicKey] = []
    for i, ref in enumerate(refs):
        loc = f"{at}[{i}]"
        if not isinstance(ref, str):
            r.problems.add(loc, "expected a key (inline, env:NAME or file:PATH)")
            continue
        before = len(r.problems)
        raw = (
            resolve_secret(ref, loc, r.problems, r.environ)
            if ref.startswith(("env:", "file:"))
            else ref.encode("utf-8", "surrogateescape")
        )
        if len(r.problems) != before:
            continue
        try:
            keys.append(load_public_key(raw, kind))
        except ValueError as exc:
            r.problems.add(loc, str(exc))
    return tuple(keys)


def no_secrets(r: Reader, scheme: str) -> None:
    """Asymmetric schemes hold no shared secret: `secrets:` there is a mistake worth naming."""
    if r.has("secrets"):
        r.problems.add(r.loc("secrets"), f"{scheme} verifies with public_keys, not shared secrets")


@dataclass(frozen=True)
class AsymmetricOptions:
    public_keys: tuple[PublicKey, ...]
    tolerance: float


def verify_any(keys: tuple[tuple[int, PublicKey], ...], signature: bytes, message: bytes) -> int | None:
    """Position of the first key the signature verifies under (None: under none).

    No constant-time concern: the keys are public and the signature is the sender's.
    """
    for index, key in keys:
        try:
            if isinstance(key, ed25519.Ed25519PublicKey):
                key.verify(signature, message)
            else:
                key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            continue
        return index
    return None


Signer = Callable[[bytes], bytes]


def signer(key: PrivateKey) -> Signer:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign
    return lambda message: key.sign(message, ec.ECDSA(hashes.SHA256()))
