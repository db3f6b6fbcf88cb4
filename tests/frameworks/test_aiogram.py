"""aiogram 3 (SimpleRequestHandler, handle_in_background=False, its own secret_token) as the real
upstream behind a real gateway process: its handlers run on realistic updates and its webhook
replies (multipart/form-data, with a file part or without, and `{}` when there is no reply) come
back byte for byte with their Content-Type. What holds for every framework (secret checks,
forged updates, report-only) is in test_behind_the_gateway.py."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiogram.types import Message

from tests.frameworks.harness import (
    FIRST_NAME,
    FRAMEWORKS,
    RTL_TEXT,
    Bot,
    bot_behind_gateway,
    form_fields,
    message_update,
    wire,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")
UPDATE_IDS = itertools.count(800_000_001)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def bot(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Bot]:
    async with bot_behind_gateway(FRAMEWORKS["aiogram"], tmp_path_factory.mktemp("aiogram")) as b:
        yield b


@pytest.mark.parametrize(
    ("text", "command", "method"),
    [("/start", True, "sendMessage"), ("/export " + RTL_TEXT, True, "sendDocument"), (RTL_TEXT, False, None)],
    ids=["start-sendMessage", "export-sendDocument-file", "rtl-text-no-reply"],
)
async def test_handler_runs_and_its_webhook_reply_comes_back_byte_for_byte(
    bot: Bot, text: str, command: bool, method: str | None
) -> None:
    body = wire(message_update(next(UPDATE_IDS), text, command=command))
    handled, relayed = len(bot.seen), len(bot.client.tap.responses)

    status, answer, content_type = await bot.client.deliver(bot.enforce, body)

    # the handler ran on the update, non-ASCII intact
    assert status == 200, answer
    assert len(bot.seen) == handled + 1
    message: Message = bot.seen[-1]
    assert message.text == text and message.from_user is not None
    assert message.from_user.first_name == FIRST_NAME
    # what aiogram wrote is what the client got, byte for byte, with the same Content-Type
    [written] = bot.client.tap.responses[relayed:]
    assert written.status == 200
    assert answer == written.body
    assert content_type == written.headers["content-type"]
    if method is None:
        assert (content_type, answer) == ("application/json", b"{}")
        return
    assert content_type.startswith("multipart/form-data; boundary=webhookBoundary")
    fields = form_fields(content_type, answer)
    assert fields["method"] == method.encode()
    assert fields["chat_id"] == b"5551234"
    if method == "sendMessage":
        assert fields["text"].decode() == f"Hello, {FIRST_NAME}!"
    else:
        attached = fields["document"].removeprefix(b"attach://").decode()
        assert fields[attached] == text.encode(), "the file part"
        assert fields["caption"] == b"Your export"
        assert "transfer-encoding" in written.headers, "a streamed file part: chunked upstream"
