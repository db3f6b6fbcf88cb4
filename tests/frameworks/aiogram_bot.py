"""An aiogram 3 bot answering its webhook behind webhook-gateway (docs/frameworks/aiogram.md shows
this file; tests/frameworks/test_aiogram.py runs it behind a real gateway process)."""

from __future__ import annotations

import os

from aiogram import Bot, Dispatcher, F, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.filters import Command, CommandStart
from aiogram.methods import SendDocument, SendMessage
from aiogram.types import BufferedInputFile, Message
from aiogram.webhook.aiohttp_server import SimpleRequestHandler, setup_application
from aiohttp import web


def build_router() -> Router:
    router = Router()

    # Returning a method instead of awaiting it makes it the webhook reply: Telegram executes
    # it, and the bot makes no call to the Bot API of its own.
    @router.message(CommandStart())
    async def start(message: Message, seen: list[Message]) -> SendMessage:
        seen.append(message)
        name = message.from_user.first_name if message.from_user else "there"
        return message.answer(f"Hello, {name}!")

    @router.message(Command("export"))
    async def export(message: Message, seen: list[Message]) -> SendDocument:
        seen.append(message)
        data = (message.text or "").encode()
        return message.answer_document(BufferedInputFile(data, filename="export.txt"), caption="Your export")

    @router.message(F.text)
    async def note(message: Message, seen: list[Message]) -> None:
        seen.append(message)  # no reply: aiogram answers the webhook with {}

    return router


def build_app(
    token: str, secret_token: str, seen: list[Message], api_base: str = "https://api.telegram.org"
) -> web.Application:
    """The bot's web app. `seen` collects every message a handler got (the tests read it)."""
    bot = Bot(token, session=AiohttpSession(api=TelegramAPIServer.from_base(api_base)))
    dispatcher = Dispatcher(seen=seen)
    dispatcher.include_router(build_router())
    app = web.Application()
    # handle_in_background=False: the handler's result goes back as the webhook reply.
    # secret_token: aiogram's own check of X-Telegram-Bot-Api-Secret-Token, which the gateway
    # forwards unchanged, so it keeps passing behind the gateway.
    SimpleRequestHandler(
        dispatcher=dispatcher, bot=bot, handle_in_background=False, secret_token=secret_token
    ).register(app, path="/webhook")
    setup_application(app, dispatcher, bot=bot)
    return app


if __name__ == "__main__":
    # The gateway's route: upstream http://127.0.0.1:3000/webhook, same secret as setWebhook.
    web.run_app(build_app(os.environ["BOT_TOKEN"], os.environ["TG_SECRET"], []), host="127.0.0.1", port=3000)
