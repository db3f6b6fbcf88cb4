"""Meta (WhatsApp Cloud API, Messenger, Instagram).

Deliveries: `X-Hub-Signature-256: sha256=<lowercase hex HMAC-SHA256(app secret, raw body)>`.
Meta signs the escaped-unicode bytes it sends, so only the wire bytes verify: a body that was
parsed and re-serialised never does.

Subscribing: a GET with `hub.mode=subscribe`, `hub.verify_token`, `hub.challenge`, answered by
`gateway/schemes/handshake.py` when the route configures `verify_token` (an `env:` / `file:` reference).
"""

from __future__ import annotations

from dataclasses import dataclass

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
from gateway.schemes.handshake import MetaHandshake

HEADER = "X-Hub-Signature-256"


@dataclass(frozen=True, repr=False)
class MetaOptions:
    verify_token: bytes | None = None  # None: no GET handshake on this route

    def __repr__(self) -> str:
        return f"MetaOptions(verify_token={'set' if self.verify_token else None})"


class MetaScheme:
    name = "meta"
    option_keys = frozenset({"verify_token"})
    # Meta sends no delivery id header; message ids live in the body (entry[].changes[]...).
    replay_header = None

    def check_secret(self, value: bytes) -> str | None:
        return None

    def parse_options(self, r: Reader, problems: Problems) -> MetaOptions:
        token = r.secret("verify_token")
        if token is not None and not token.isascii():
            problems.add(r.loc("verify_token"), "a verify token is ASCII (it arrives in a URL)")
        return MetaOptions(verify_token=token)

    def build(self, verify: VerifyConfig) -> HubSignatureVerifier:
        return HubSignatureVerifier(indexed(verify), HEADER)

    def build_handshake(self, verify: VerifyConfig) -> MetaHandshake | None:
        options: MetaOptions = verify.options
        return MetaHandshake(options.verify_token) if options.verify_token else None

    def sign(self, verify: VerifyConfig, req: ToSign) -> Signature:
        return Signature(((HEADER, hub_signature(secret_for_signing(verify), req.body)),), req.query)
