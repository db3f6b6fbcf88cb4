"""Signature schemes, by config name. Adding a sender is one file plus one line here."""

from __future__ import annotations

from gateway.schemes.base import Scheme
from gateway.schemes.hmac_body import HmacScheme
from gateway.schemes.telegram import TelegramScheme

SCHEMES: dict[str, Scheme] = {s.name: s for s in (TelegramScheme(), HmacScheme())}
