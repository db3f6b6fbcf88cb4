"""python-telegram-bot (Application without an updater, `process_update` called from a web
server of the bot's own, PTB's secret-token check) as the real upstream behind a real gateway
process: its handlers run on realistic updates, its `{"method": "sendMessage", ...}` webhook
reply comes back byte for byte, its secret check keeps passing, and a forged update never
reaches a handler in enforce (in report-only the bot's own check still refuses it)."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio
from telegram import Update

from tests.frameworks.ptb_bot import build_app
from tests.frameworks.support import (
    BOT_TOKEN,
    FIRST_NAME,
    FORGED,
    RTL_TEXT,
    SEEN,
    BotApiStub,
    Client,
    SeenRequest,
    bot_api_stub,
    gateway_in_front,
    message_update,
    recorded,
    wire,
)
from tests.helpers import TELEGRAM_IP, TG_SECRET

pytestmark = pytest.mark.asyncio(loop_scope="module")
UPDATE_IDS = itertools.count(900_000_001)


@dataclass
class Setup:
    client: Client
    api: BotApiStub
    seen: list[Update]
    app_seen: list[SeenRequest]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def bot(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    seen: list[Update] = []
    async with bot_api_stub() as api:
        app = recorded(build_app(BOT_TOKEN, TG_SECRET, seen, base_url=f"{api.base}/bot"))
        async with gateway_in_front(app, "ptb", tmp_path_factory.mktemp("ptb")) as client:
            yield Setup(client, api, seen, app[SEEN])
        # PTB's initialize() asked the stand-in who the bot is; nothing else went to the Bot API
        assert api.calls == ["getMe"]


@pytest.mark.parametrize(
    ("text", "command", "expected"),
    [("/start", True, f"Hello, {FIRST_NAME}!"), (RTL_TEXT, False, RTL_TEXT)],
    ids=["start-command", "rtl-text-echo"],
)
async def test_handler_runs_and_its_webhook_reply_comes_back_byte_for_byte(
    bot: Setup, text: str, command: bool, expected: str
) -> None:
    update_id = next(UPDATE_IDS)
    body = wire(message_update(update_id, text, command=command))
    handled, relayed = len(bot.seen), len(bot.client.tap.responses)

    status, answer, content_type = await bot.client.deliver("ptb-enforce", body)

    assert status == 200, answer
    assert len(bot.seen) == handled + 1
    update = bot.seen[-1]
    assert update.update_id == update_id
    assert update.message is not None and update.message.text == text
    assert update.effective_user is not None and update.effective_user.first_name == FIRST_NAME
    [written] = bot.client.tap.responses[relayed:]
    assert written.status == 200
    assert answer == written.body
    assert content_type == written.headers["content-type"] == "application/json; charset=utf-8"
    assert json.loads(answer) == {"method": "sendMessage", "chat_id": 5551234, "text": expected}
    assert expected.encode() in answer, "UTF-8 on the wire, not \\u escapes"


async def test_the_bot_sees_the_secret_header_unchanged_and_one_client_ip(bot: Setup) -> None:
    body = wire(message_update(next(UPDATE_IDS), "/start", command=True))
    arrived = len(bot.app_seen)
    status, _, _ = await bot.client.deliver("ptb-enforce", body)
    assert status == 200
    [request] = bot.app_seen[arrived:]
    assert request.body == body
    assert request.headers["X-Telegram-Bot-Api-Secret-Token"] == TG_SECRET
    assert request.headers["X-Forwarded-For"] == TELEGRAM_IP
    assert request.headers["X-Webhook-Verdict"] == "pass"


@pytest.mark.parametrize("token", [FORGED, None], ids=["wrong-token", "no-token"])
async def test_a_forged_update_never_reaches_the_bot_in_enforce(bot: Setup, token: str | None) -> None:
    body = wire(message_update(next(UPDATE_IDS), "/start", command=True))
    handled, arrived = len(bot.seen), len(bot.app_seen)
    status, answer, _ = await bot.client.deliver("ptb-enforce", body, token=token)
    assert status == 401
    assert answer.startswith(b'{"error":'), "the gateway's answer, not the bot's"
    assert len(bot.app_seen) == arrived, "nothing was forwarded"
    assert len(bot.seen) == handled


async def test_report_only_forwards_a_forged_update_and_the_bot_still_refuses_it(bot: Setup) -> None:
    body = wire(message_update(next(UPDATE_IDS), "/start", command=True))
    handled, arrived = len(bot.seen), len(bot.app_seen)
    status, answer, _ = await bot.client.deliver("ptb-report-only", body, token=FORGED)
    assert (status, answer) == (403, b"Request had the wrong secret token")
    [request] = bot.app_seen[arrived:]
    assert request.headers["X-Webhook-Verdict"] == "would-reject; check=signature; reason=mismatch"
    assert request.headers["X-Telegram-Bot-Api-Secret-Token"] == FORGED
    assert len(bot.seen) == handled, "defence in depth: the handler never ran"
    assert (
        await bot.client.gateway.metric(
            "webhook_gateway_requests_total", route="ptb-report-only", outcome="would_reject"
        )
        >= 1
    )


async def test_report_only_with_the_right_token_reaches_the_handler(bot: Setup) -> None:
    body = wire(message_update(next(UPDATE_IDS), "/start", command=True))
    handled = len(bot.seen)
    status, answer, _ = await bot.client.deliver("ptb-report-only", body)
    assert status == 200
    assert json.loads(answer)["method"] == "sendMessage"
    assert len(bot.seen) == handled + 1


async def test_nothing_went_to_the_bot_api(bot: Setup) -> None:
    """Runs after the others in this module: all the replies above travelled in webhook answers."""
    assert bot.api.calls == ["getMe"]
