"""Telegram: `X-Telegram-Bot-Api-Secret-Token` carries the `secret_token` given to setWebhook.

Telegram signs nothing: the token is compared as bytes, in constant time.
"""

from __future__ import annotations

import re
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

HEADER = "X-Telegram-Bot-Api-Secret-Token"
_TOKEN_RE = re.compile(rb"^[A-Za-z0-9_-]{1,256}$")


class TelegramScheme:
    name = "telegram"
    option_keys: frozenset[str] = frozenset()
    replay_header = None

    def check_secret(self, value: bytes) -> str | None:
        if not _TOKEN_RE.match(value):
            return "a Telegram secret_token is 1-256 characters of A-Z a-z 0-9 _ -"
        return None

    def parse_options(self, r: Reader, problems: Problems) -> Any:
        return None

    def build(self, verify: VerifyConfig) -> TokenVerifier:
        return TokenVerifier(HEADER, indexed(verify))

    def sign(self, verify: VerifyConfig, req: ToSign) -> Signature:
        return Signature(((HEADER, secret_for_signing(verify).decode("ascii")),), req.query)
