"""Generic `hmac`: HMAC of the raw body in one header, hex or base64, with an optional prefix.

Covers `X-Telegram-Bot-Api-Secret-Hash` as some guides describe it (a relay that signs
bodies: Telegram itself never sends it), `X-Hub-Signature-256: sha256=...` and the like.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Any

from gateway.reader import Problems, Reader, choice, text
from gateway.schemes.base import (
    FAIL_MALFORMED,
    Signature,
    Signed,
    SigResult,
    ToSign,
    VerifyConfig,
    indexed,
    match_any,
    one_header,
    secret_for_signing,
)

_HEX = re.compile(rb"[0-9A-Fa-f]+")
ALGORITHMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}


@dataclass(frozen=True)
class HmacOptions:
    header: str
    algorithm: str = "sha256"
    encoding: str = "hex"
    prefix: str = ""


def decode_digest(raw: bytes, encoding: str, size: int) -> bytes | None:
    """Strictly decode a transmitted digest; None when it is not a well-formed digest."""
    try:
        if encoding == "hex":
            # fromhex would skip spaces: insist on exactly 2*size hex digits.
            if len(raw) != size * 2 or not _HEX.fullmatch(raw):
                return None
            return bytes.fromhex(raw.decode("ascii"))
        digest = base64.b64decode(raw, validate=True)
    except (ValueError, binascii.Error):
        return None
    return digest if len(digest) == size else None


@dataclass(frozen=True)
class HmacVerifier:
    options: HmacOptions
    secrets: tuple[tuple[int, bytes], ...]

    def verify(self, req: Signed) -> SigResult:
        given = one_header(req.headers, self.options.header)
        if isinstance(given, SigResult):
            return given
        prefix = self.options.prefix.encode("ascii")
        if prefix:
            if not given.startswith(prefix):
                return FAIL_MALFORMED
            given = given[len(prefix) :]
        algo = ALGORITHMS[self.options.algorithm]
        digest = decode_digest(given, self.options.encoding, algo().digest_size)
        if digest is None:
            return FAIL_MALFORMED
        body = req.body
        return match_any(self.secrets, digest, lambda key: hmac.digest(key, body, algo))


def _header_name(value: Any) -> str:
    name = text(value)
    if not name or not name.isascii() or any(c in name for c in " :\t\r\n"):
        raise ValueError(f"{name!r} is not a header name")
    return name


def _prefix(value: Any) -> str:
    p = text(value)
    if not p.isascii():
        raise ValueError("a prefix is ASCII")
    return p


class HmacScheme:
    name = "hmac"
    option_keys = frozenset({"header", "algorithm", "encoding", "prefix"})
    replay_header = None

    def check_secret(self, value: bytes) -> str | None:
        return None

    def parse_options(self, r: Reader, problems: Problems) -> HmacOptions:
        return HmacOptions(
            header=r.get("header", _header_name, "X-Signature", required=True),
            algorithm=r.get("algorithm", choice(*ALGORITHMS), "sha256"),
            encoding=r.get("encoding", choice("hex", "base64"), "hex"),
            prefix=r.get("prefix", _prefix, ""),
        )

    def build(self, verify: VerifyConfig) -> HmacVerifier:
        return HmacVerifier(verify.options, indexed(verify))

    def sign(self, verify: VerifyConfig, req: ToSign) -> Signature:
        o: HmacOptions = verify.options
        digest = hmac.new(secret_for_signing(verify), req.body, ALGORITHMS[o.algorithm]).digest()
        encoded = digest.hex() if o.encoding == "hex" else base64.b64encode(digest).decode()
        return Signature(((o.header, o.prefix + encoded),), req.query)
