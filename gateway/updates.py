"""What the gateway reads from a *verified* Telegram update: its id, its type, its chat's type.

Only ever called after the signature check passed: an unverified body is never parsed. The raw
bytes are what gets forwarded; the parsed object is only looked at, never re-serialised.
"""

from __future__ import annotations

import json
from typing import Any

# Bot API `Update` fields besides `update_id` (Bot API 9.x). Config names are checked against
# this list, because a misspelt type would silently filter every update of the intended one.
UPDATE_TYPES = frozenset(
    {
        "message",
        "edited_message",
        "channel_post",
        "edited_channel_post",
        "business_connection",
        "business_message",
        "edited_business_message",
        "deleted_business_messages",
        "message_reaction",
        "message_reaction_count",
        "inline_query",
        "chosen_inline_result",
        "callback_query",
        "shipping_query",
        "pre_checkout_query",
        "purchased_paid_media",
        "poll",
        "poll_answer",
        "my_chat_member",
        "chat_member",
        "chat_join_request",
        "chat_boost",
        "removed_chat_boost",
    }
)
CHAT_TYPES = frozenset({"private", "group", "supergroup", "channel"})


def parse_update(body: bytes) -> dict[str, Any] | None:
    """The update as a JSON object, or None when the body is not one. Never raises."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return value if isinstance(value, dict) else None


def update_id(update: dict[str, Any] | None) -> int | None:
    if update is None:
        return None
    value = update.get("update_id")
    # bool is an int in Python; `true` is not an update id.
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def update_type(update: dict[str, Any]) -> str | None:
    """The update's kind: its one field besides `update_id` (a known one first)."""
    other = None
    for key in update:
        if key in UPDATE_TYPES:
            return key
        if key != "update_id" and other is None:
            other = key
    return other


def chat_type(update: dict[str, Any], kind: str) -> str | None:
    """The type of the chat the update happened in, or None when it has no chat.

    Most updates carry `chat` directly; a callback query carries it in its `message`
    (absent for buttons under inline-mode messages). Inline queries, polls and payments have
    no chat.
    """
    obj = update.get(kind)
    if not isinstance(obj, dict):
        return None
    chat = obj.get("chat")
    if not isinstance(chat, dict):
        message = obj.get("message")
        chat = message.get("chat") if isinstance(message, dict) else None
    if not isinstance(chat, dict):
        return None
    value = chat.get("type")
    return value if isinstance(value, str) else None
