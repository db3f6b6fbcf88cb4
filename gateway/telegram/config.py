"""A route's `telegram:` section: the bot token (env:/file: only) and the watcher's settings."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from yarl import URL

from gateway.reader import Problems, Reader, Secret, boolean, parse_duration, resolve_secret

TELEGRAM_KEYS = {"bot_token", "api_base", "watch", "watch_interval", "expected_url"}
DEFAULT_API_BASE = "https://api.telegram.org"
# "<bot id>:<secret part>" as @BotFather hands it out.
_TOKEN_RE = re.compile(rb"^[0-9]{1,20}:[A-Za-z0-9_-]{20,100}$")


@dataclass(frozen=True)
class TelegramConfig:
    bot_token: Secret
    api_base: str = DEFAULT_API_BASE
    watch: bool = False
    watch_interval: float = 60.0
    expected_url: str | None = None  # the URL setWebhook was given; the watcher compares

    @property
    def bot_id(self) -> str:
        """The public half of the token (the bot's user id): safe to print."""
        return self.bot_token.value.split(b":", 1)[0].decode("ascii", "replace")


def _http_url(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a URL")
    try:
        url = URL(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"{value!r} is not an http(s) URL")
    if url.query_string or url.fragment:
        raise ValueError(f"{value!r}: no query or fragment here")
    return value


def parse_telegram(
    raw: Any, at: str, problems: Problems, environ: Mapping[str, str]
) -> TelegramConfig | None:
    r = Reader(raw, at, problems, TELEGRAM_KEYS)
    ref = r.raw.get("bot_token")
    token = b""
    if ref is None:
        problems.add(r.loc("bot_token"), "is required (env:NAME or file:PATH)")
    else:
        before = len(problems.items)
        token = resolve_secret(ref, r.loc("bot_token"), problems, environ)
        if len(problems.items) == before and not _TOKEN_RE.match(token):
            problems.add(
                r.loc("bot_token"), f"the value of {ref} does not look like a bot token (123456:ABC...)"
            )
    api_base = r.get("api_base", _http_url, DEFAULT_API_BASE)
    watch = r.get("watch", boolean, False)
    interval = r.get("watch_interval", parse_duration, 60.0)
    expected = r.get("expected_url", _http_url, None)
    if watch and expected is None:
        problems.add(
            r.loc("expected_url"),
            "is required with watch: true (the URL given to setWebhook, so a re-pointed webhook is noticed)",
        )
    source = ref if isinstance(ref, str) else "inline"
    return TelegramConfig(
        bot_token=Secret(0, source, token),
        api_base=api_base.rstrip("/"),
        watch=watch,
        watch_interval=interval,
        expected_url=expected,
    )
