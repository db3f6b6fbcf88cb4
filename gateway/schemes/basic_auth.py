"""`basic-auth`: `Authorization: Basic <base64(user:password)>`, for senders that offer only that.

Each secret holds `user:password`; the decoded credentials are compared as bytes, in constant
time, with every configured secret. Nothing is signed: use it only over TLS, and only where the
sender has nothing better.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from gateway.reader import Problems, Reader
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

HEADER = "Authorization"


def _identity(secret: bytes) -> bytes:
    return secret


@dataclass(frozen=True)
class BasicAuthVerifier:
    secrets: tuple[tuple[int, bytes], ...]

    def verify(self, req: Signed) -> SigResult:
        given = one_header(req.headers, HEADER)
        if isinstance(given, SigResult):
            return given
        kind, sep, encoded = given.partition(b" ")
        if not sep or kind.lower() != b"basic":
            return FAIL_MALFORMED
        try:
            credentials = base64.b64decode(encoded.strip(b" "), validate=True)
        except (ValueError, binascii.Error):
            return FAIL_MALFORMED
        if b":" not in credentials:
            return FAIL_MALFORMED
        return match_any(self.secrets, credentials, _identity)


class BasicAuthScheme:
    name = "basic-auth"
    option_keys: frozenset[str] = frozenset()
    replay_header = None

    def check_secret(self, value: bytes) -> str | None:
        user, sep, _ = value.partition(b":")
        if not sep or not user:
            return "a basic-auth secret is user:password"
        return None

    def parse_options(self, r: Reader, problems: Problems) -> None:
        return None

    def build(self, verify: VerifyConfig) -> BasicAuthVerifier:
        return BasicAuthVerifier(indexed(verify))

    def sign(self, verify: VerifyConfig, req: ToSign) -> Signature:
        token = base64.b64encode(secret_for_signing(verify)).decode()
        return Signature(((HEADER, "Basic " + token),), req.query)
