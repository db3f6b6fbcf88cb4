"""aiogram 3 (SimpleRequestHandler, handle_in_background=False, its own secret_token) as the real
upstream behind a real gateway process: its handlers run on realistic updates, its webhook
replies (multipart/form-data, with a file part or without, and `{}` when there is no reply) come
back byte for byte, its own secret check keeps passing, and a forged update never reaches a
handler in enforce (in report-only aiogram's own check still refuses it)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio
from aiogram.types import Message

from tests.frameworks.aiogram_bot import build_app
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
    form_fields,
    gateway_in_front,
    message_update,
    recorded,
    wire,
)
from tests.helpers import TELEGRAM_IP, TG_SECRET

pytestmark = pytest.mark.asyncio(loop_scope="module")
UPDATE_IDS = itertools.count(800_000_001)


@dataclass
class Setup:
    client: Client
    api: BotApiStub
    seen: list[Message]
    app_seen: list[SeenRequest]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def bot(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    seen: list[Message] = []
    async with bot_api_stub() as api:
        app = recorded(build_app(BOT_TOKEN, TG_SECRET, seen, api_base=api.base))
        async with gateway_in_front(app, "aiogram", tmp_path_factory.mktemp("aiogram")) as client:
            yield Setup(client, api, seen, app[SEEN])
        # aiogram never called the Bot API: every reply went back in a webhook answer
        assert api.calls == []


@pytest.mark.parametrize(
    ("text", "command", "method"),
    [("/start", True, "sendMessage"), ("/export " + RTL_TEXT, True, "sendDocument"), (RTL_TEXT, False, None)],
    ids=["start-sendMessage", "export-sendDocument-file", "rtl-text-no-reply"],
)
async def test_handler_runs_and_its_webhook_reply_comes_back_byte_for_byte(
    bot: Setup, text: str, command: bool, method: str | None
) -> None:
    update_id = next(UPDATE_IDS)
    body = wire(message_update(update_id, text, command=command))
    handled, relayed = len(bot.seen), len(bot.client.tap.responses)

    status, answer, content_type = await bot.client.deliver("aiogram-enforce", body)

    # the handler ran on the update, non-ASCII intact
    assert status == 200, answer
    assert len(bot.seen) == handled + 1
    message = bot.seen[-1]
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


async def test_aiogram_sees_the_secret_header_unchanged_and_one_client_ip(bot: Setup) -> None:
    body = wire(message_update(next(UPDATE_IDS), "/start", command=True))
    arrived = len(bot.app_seen)
    status, _, _ = await bot.client.deliver("aiogram-enforce", body)
    assert status == 200
    [request] = bot.app_seen[arrived:]
    assert request.path == "/webhook"
    assert request.body == body
    assert request.headers["X-Telegram-Bot-Api-Secret-Token"] == TG_SECRET
    assert request.headers["X-Forwarded-For"] == TELEGRAM_IP
    assert request.headers["X-Webhook-Verdict"] == "pass"


@pytest.mark.parametrize("token", [FORGED, None], ids=["wrong-token", "no-token"])
async def test_a_forged_update_never_reaches_aiogram_in_enforce(bot: Setup, token: str | None) -> None:
    body = wire(message_update(next(UPDATE_IDS), "/start", command=True))
    handled, arrived = len(bot.seen), len(bot.app_seen)
    status, answer, _ = await bot.client.deliver("aiogram-enforce", body, token=token)
    assert status == 401
    assert answer.startswith(b'{"error":'), "the gateway's answer, not aiogram's"
    assert len(bot.app_seen) == arrived, "nothing was forwarded"
    assert len(bot.seen) == handled


async def test_report_only_forwards_a_forged_update_and_aiogram_still_refuses_it(bot: Setup) -> None:
    body = wire(message_update(next(UPDATE_IDS), "/start", command=True))
    handled, arrived = len(bot.seen), len(bot.app_seen)
    status, answer, _ = await bot.client.deliver("aiogram-report-only", body, token=FORGED)
    # the gateway forwarded it, marked; aiogram's own secret check answered 401
    assert (status, answer) == (401, b"Unauthorized")
    [request] = bot.app_seen[arrived:]
    assert request.headers["X-Webhook-Verdict"] == "would-reject; check=signature; reason=mismatch"
    assert request.headers["X-Telegram-Bot-Api-Secret-Token"] == FORGED
    assert len(bot.seen) == handled, "defence in depth: the handler never ran"
    assert (
        await bot.client.gateway.metric(
            "webhook_gateway_requests_total", route="aiogram-report-only", outcome="would_reject"
        )
        >= 1
    )


async def test_report_only_with_the_right_token_reaches_the_handler(bot: Setup) -> None:
    body = wire(message_update(next(UPDATE_IDS), "/start", command=True))
    handled = len(bot.seen)
    status, answer, content_type = await bot.client.deliver("aiogram-report-only", body)
    assert status == 200
    assert form_fields(content_type, answer)["method"] == b"sendMessage"
    assert len(bot.seen) == handled + 1


async def test_nothing_went_to_the_bot_api(bot: Setup) -> None:
    """Runs after the others in this module: all the replies above travelled in webhook answers."""
    assert bot.api.calls == []
