"""Ordering keys: which spooled updates must reach the upstream one after another.

Rows of one key are delivered strictly in arrival order (the next waits until the previous one
was delivered or dead-lettered); rows of different keys may be in flight at the same time, up
to the route's `spool_concurrency`. Telegram itself only orders updates per chat, so a
Telegram route keys by the update's chat; anything else keys by the route (one queue) unless
`spool_order_by` names a field.

The key is computed once, when the update is stored, and kept in the row.
"""

from __future__ import annotations

import json
from typing import Any

from gateway.config import RouteConfig

ROUTE_KEY = ""  # the whole route is one ordered queue

# Where a Telegram update carries its chat (`callback_query` through the message it belongs to).
_CHAT_KINDS = (
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "business_message",
    "edited_business_message",
    "my_chat_member",
    "chat_member",
    "chat_join_request",
    "message_reaction",
    "message_reaction_count",
    "chat_boost",
    "removed_chat_boost",
)
TELEGRAM_CHAT_PATHS: tuple[tuple[str, ...], ...] = (
    *((kind, "chat", "id") for kind in _CHAT_KINDS),
    ("callback_query", "message", "chat", "id"),
)


def _dig(doc: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(part)
    return doc


def _scalar(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | str):
        return str(value)
    return None


def order_key(route: RouteConfig, body: bytes) -> str:
    """The ordering key of one update; `ROUTE_KEY` when the body names none."""
    how = route.spool_order_by
    if how == "auto":
        verify = route.verify
        telegram = route.telegram is not None or (verify is not None and verify.scheme == "telegram")
        how = "chat" if telegram else "route"
    if how == "route":
        return ROUTE_KEY
    try:
        doc = json.loads(body)
    except ValueError:
        return ROUTE_KEY
    if how == "chat":
        for path in TELEGRAM_CHAT_PATHS:
            chat = _scalar(_dig(doc, path))
            if chat is not None:
                return "chat:" + chat
        return ROUTE_KEY
    value = _scalar(_dig(doc, tuple(how[6:].split("."))))
    return ROUTE_KEY if value is None else "field:" + value
