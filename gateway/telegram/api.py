"""A small Bot API client. The bot token is part of every call's URL path
(`/bot<token>/<method>`), so every error that leaves this module is redacted first."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from gateway.telegram.config import TelegramConfig

TIMEOUT = aiohttp.ClientTimeout(total=15)
REDACTED = "<bot-token>"


class BotApiError(Exception):
    """A failed call. The message never holds the token."""

    def __init__(self, method: str, message: str, code: int | None = None) -> None:
        super().__init__(f"{method}: {message}")
        self.code = code


def redact(text: str, token: str) -> str:
    if not token:
        return text
    for form in (token, token.replace(":", "%3A"), token.replace(":", "%3a")):
        text = text.replace(form, REDACTED)
    return text


class BotApi:
    def __init__(self, config: TelegramConfig, session: aiohttp.ClientSession) -> None:
        self._token = config.bot_token.value.decode("ascii", "replace")
        self._base = config.api_base
        self._session = session

    def __repr__(self) -> str:
        return f"BotApi(base={self._base!r})"

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """POST the parameters as JSON; return `result`, or raise BotApiError."""
        url = f"{self._base}/bot{self._token}/{method}"
        try:
            async with self._session.post(url, json=params or {}, timeout=TIMEOUT) as resp:
                raw = await resp.read()
                status = resp.status
        except TimeoutError:
            raise BotApiError(method, f"no answer from {self._base} within {TIMEOUT.total:g}s") from None
        except aiohttp.ClientError as exc:
            text = redact(f"{type(exc).__name__}: {exc}", self._token)
            raise BotApiError(method, f"cannot reach {self._base}: {text}") from None
        except Exception as exc:  # anything else may quote the URL too: redact, never re-raise raw
            raise BotApiError(method, redact(f"{type(exc).__name__}: {exc}", self._token)) from None
        try:
            data = json.loads(raw)
        except ValueError:
            raise BotApiError(method, f"HTTP {status} with a body that is not JSON", status) from None
        if not isinstance(data, dict) or data.get("ok") is not True:
            description = data.get("description") if isinstance(data, dict) else None
            code = data.get("error_code", status) if isinstance(data, dict) else status
            message = redact(str(description or f"HTTP {status}"), self._token)
            raise BotApiError(method, f"{code} {message}", code if isinstance(code, int) else status)
        return data.get("result")

    async def get_webhook_info(self) -> dict[str, Any]:
        result = await self.call("getWebhookInfo")
        if not isinstance(result, dict):
            raise BotApiError("getWebhookInfo", "the result is not an object")
        return result

    async def set_webhook(self, params: dict[str, Any]) -> Any:
        return await self.call("setWebhook", params)
