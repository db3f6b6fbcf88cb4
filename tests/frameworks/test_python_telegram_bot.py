"""python-telegram-bot (Application without an updater, `process_update` called from a web
server of the bot's own) as the real upstream behind a real gateway process: its handlers run on
realistic updates and its `{"method": "sendMessage", ...}` webhook reply comes back byte for
byte. What holds for every framework (secret checks, forged updates, report-only) is in
test_behind_the_gateway.py."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from telegram import Update

from tests.frameworks.harness import (
    FIRST_NAME,
    FRAMEWORKS,
    RTL_TEXT,
    Bot,
    bot_behind_gateway,
    message_update,
    wire,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")
UPDATE_IDS = itertools.count(900_000_001)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def bot(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Bot]:
    async with bot_behind_gateway(FRAMEWORKS["ptb"], tmp_path_factory.mktemp("ptb")) as b:
        yield b


@pytest.mark.parametrize(
    ("text", "command", "expected"),
    [("/start", True, f"Hello, {FIRST_NAME}!"), (RTL_TEXT, False, RTL_TEXT)],
    ids=["start-command", "rtl-text-echo"],
)
async def test_handler_runs_and_its_webhook_reply_comes_back_byte_for_byte(
    bot: Bot, text: str, command: bool, expected: str
) -> None:
    update_id = next(UPDATE_IDS)
    body = wire(message_update(update_id, text, command=command))
    handled, relayed = len(bot.seen), len(bot.client.tap.responses)

    status, answer, content_type = await bot.client.deliver(bot.enforce, body)

    assert status == 200, answer
    assert len(bot.seen) == handled + 1
    update: Update = bot.seen[-1]
    assert update.update_id == update_id
    assert update.message is not None and update.message.text == text
    assert update.effective_user is not None and update.effective_user.first_name == FIRST_NAME
    [written] = bot.client.tap.responses[relayed:]
    assert written.status == 200
    assert answer == written.body
    assert content_type == written.headers["content-type"] == "application/json; charset=utf-8"
    assert json.loads(answer) == {"method": "sendMessage", "chat_id": 5551234, "text": expected}
    assert expected.encode() in answer, "UTF-8 on the wire, not \\u escapes"
