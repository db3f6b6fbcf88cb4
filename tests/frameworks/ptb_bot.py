"""A python-telegram-bot (21+) bot behind webhook-gateway, on a web server of its own: PTB builds
no updater, this aiohttp app hands each update to `Application.process_update` and answers the
webhook with the handler's reply (docs/frameworks/python-telegram-bot.md shows this file;
tests/frameworks/test_python_telegram_bot.py runs it behind a real gateway process)."""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from telegram import Update
from telegram.ext import Application, CommandHandler, ContextTypes, MessageHandler, filters

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
PTB: web.AppKey[Application] = web.AppKey("ptb", Application)  # type: ignore[type-arg]
SECRET: web.AppKey[str] = web.AppKey("secret_token", str)


def reply(context: ContextTypes.DEFAULT_TYPE, update: Update, method: str, **params: Any) -> None:
    """Queue a Bot API call as this update's webhook reply (Telegram executes it)."""
    context.bot_data.setdefault("replies", {})[update.update_id] = {"method": method, **params}


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    assert update.effective_user is not None and update.effective_chat is not None
    context.bot_data["seen"].append(update)
    text = f"Hello, {update.effective_user.first_name}!"
    reply(context, update, "sendMessage", chat_id=update.effective_chat.id, text=text)


async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    assert update.message is not None
    context.bot_data["seen"].append(update)
    reply(context, update, "sendMessage", chat_id=update.message.chat_id, text=update.message.text)


async def webhook(request: web.Request) -> web.Response:
    application = request.app[PTB]
    # PTB's own webhook server refuses a missing or wrong secret token with 403; a custom
    # server does the same. The gateway forwards the header unchanged, so this keeps passing.
    token = request.headers.get(SECRET_HEADER, "")
    if not token or not hmac.compare_digest(token.encode(), request.app[SECRET].encode()):
        return web.Response(status=403, text="Request had the wrong secret token")
    update = Update.de_json(await request.json(), application.bot)
    await application.process_update(update)  # handlers run before the answer goes out
    answer = application.bot_data["replies"].pop(update.update_id, None)
    if answer is None:
        return web.Response(status=200)
    body = json.dumps(answer, ensure_ascii=False).encode()
    return web.Response(body=body, content_type="application/json", charset="utf-8")


def build_app(
    token: str, secret_token: str, seen: list[Update], base_url: str = "https://api.telegram.org/bot"
) -> web.Application:
    """The bot's web app. `seen` collects every update a handler got (the tests read it)."""
    application = Application.builder().token(token).base_url(base_url).updater(None).build()
    application.bot_data.update(seen=seen, replies={})
    application.add_handler(CommandHandler("start", start))
    application.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, echo))

    async def lifespan(app: web.Application) -> AsyncIterator[None]:
        async with application:  # initialize() (one getMe call) ... shutdown()
            yield

    app = web.Application()
    app[PTB] = application
    app[SECRET] = secret_token
    app.cleanup_ctx.append(lifespan)
    app.router.add_post("/webhook", webhook)
    return app


if __name__ == "__main__":
    # The gateway's route: upstream http://127.0.0.1:3000/webhook, same secret as setWebhook.
    web.run_app(build_app(os.environ["BOT_TOKEN"], os.environ["TG_SECRET"], []), host="127.0.0.1", port=3000)
