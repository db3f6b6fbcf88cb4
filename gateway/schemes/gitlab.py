"""GitLab: `X-Gitlab-Token` carries the webhook's secret token in plain text.

GitLab signs nothing (like Telegram): the token is compared as bytes, in constant time, with
every configured secret.
"""

from __future__ import annotations

from typing import Any

from gateway.reader import Problems, Reader
from gateway.schemes.base import (
    Signature,
    TokenVerifier,
    ToSign,
    VerifyConfig,
    indexed,
    secret_for_signing,
)

HEADER = "X-Gitlab-Token"


class GitlabScheme:
    name = "gitlab"
    option_keys: frozenset[str] = frozenset()
    # GitLab (17.4 on) sends one Idempotency-Key for a delivery and keeps it on every retry;
    # X-Gitlab-Event-UUID names the triggering event instead, which several hooks may share.
    replay_header = "Idempotency-Key"

    def check_secret(self, value: bytes) -> str | None:
        if not all(0x21 <= b <= 0x7E or b == 0x20 for b in value):
            return "a GitLab secret token travels in a header: printable ASCII only"
        return None

    def parse_options(self, r: Reader, problems: Problems) -> Any:
        return None

    def build(self, verify: VerifyConfig) -> TokenVerifier:
        return TokenVerifier(HEADER, indexed(verify))

    def sign(self, verify: VerifyConfig, req: ToSign) -> Signature:
        return Signature(((HEADER, secret_for_signing(verify).decode("ascii")),), req.query)
