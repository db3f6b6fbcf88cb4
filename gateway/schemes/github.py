"""GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>` with the webhook secret.

GitHub also sends the legacy SHA-1 `X-Hub-Signature` for old receivers; it is ignored here
(never accepted in place of the SHA-256 one).
"""

from __future__ import annotations

from typing import Any

from gateway.reader import Problems, Reader
from gateway.schemes.base import (
    HubSignatureVerifier,
    Signature,
    ToSign,
    VerifyConfig,
    hub_signature,
    indexed,
    secret_for_signing,
)

HEADER = "X-Hub-Signature-256"


class GithubScheme:
    name = "github"
    option_keys: frozenset[str] = frozenset()
    # One GUID per event, kept by redeliveries: exactly what a duplicate looks like.
    replay_header = "X-GitHub-Delivery"

    def check_secret(self, value: bytes) -> str | None:
        return None

    def parse_options(self, r: Reader, problems: Problems) -> Any:
        return None

    def build(self, verify: VerifyConfig) -> HubSignatureVerifier:
        return HubSignatureVerifier(indexed(verify), HEADER)

    def sign(self, verify: VerifyConfig, req: ToSign) -> Signature:
        return Signature(((HEADER, hub_signature(secret_for_signing(verify), req.body)),), req.query)
