"""Shopify: `X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256(app client secret, raw body)>`."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from gateway.reader import Problems, Reader
from gateway.schemes.base import (
    FAIL_MALFORMED,
    Signature,
    Signed,
    SigResult,
    ToSign,
    VerifyConfig,
    base64_digest,
    hmac_sha256,
    indexed,
    match_any,
    one_header,
    secret_for_signing,
)

HEADER = "X-Shopify-Hmac-Sha256"


@dataclass(frozen=True)
class ShopifyVerifier:
    secrets: tuple[tuple[int, bytes], ...]

    def verify(self, req: Signed) -> SigResult:
        given = one_header(req.headers, HEADER)
        if isinstance(given, SigResult):
            return given
        digest = base64_digest(given, 32)
        if digest is None:
            return FAIL_MALFORMED
        body = req.body
        return match_any(self.secrets, digest, lambda key: hmac_sha256(key, body))


class ShopifyScheme:
    name = "shopify"
    option_keys: frozenset[str] = frozenset()
    # Shopify's delivery id, kept across retries of one webhook (its docs' way to drop duplicates).
    replay_header = "X-Shopify-Webhook-Id"

    def check_secret(self, value: bytes) -> str | None:
        return None

    def parse_options(self, r: Reader, problems: Problems) -> Any:
        return None

    def build(self, verify: VerifyConfig) -> ShopifyVerifier:
        return ShopifyVerifier(indexed(verify))

    def sign(self, verify: VerifyConfig, req: ToSign) -> Signature:
        digest = hmac_sha256(secret_for_signing(verify), req.body)
        return Signature(((HEADER, base64.b64encode(digest).decode()),), req.query)
