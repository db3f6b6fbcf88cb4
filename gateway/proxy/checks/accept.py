"""Update filter: which verified Telegram updates reach the bot.

Runs only after verification. An allow-list: an update whose type or chat type is not listed
is answered 200 (so Telegram does not retry it) and not forwarded. A verified body that is not
a Telegram update at all cannot be shown to be accepted, so it is filtered too.
"""

from __future__ import annotations

from typing import Any

from gateway.config import AcceptConfig
from gateway.updates import chat_type, update_type


class AcceptCheck:
    __slots__ = ("chat_types", "updates")

    def __init__(self, config: AcceptConfig) -> None:
        self.updates = config.updates
        self.chat_types = config.chat_types

    def filtered(self, update: dict[str, Any] | None) -> str | None:
        """None to forward, else why not: malformed, update_type or chat_type."""
        if update is None:
            return "malformed"
        kind = update_type(update)
        if kind is None:
            return "malformed"
        if self.updates is not None and kind not in self.updates:
            return "update_type"
        if self.chat_types is not None:
            chat = chat_type(update, kind)
            # An update without a chat (inline query, poll, payment) is judged by type alone.
            if chat is not None and chat not in self.chat_types:
                return "chat_type"
        return None
