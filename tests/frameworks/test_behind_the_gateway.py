"""What holds for every framework behind the gateway: the bot's own secret check keeps passing
(the header is forwarded unchanged), it sees one client IP and the verdict, a forged update never
reaches a handler in enforce, and in report-only the bot's own check still refuses it."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.frameworks.harness import FORGED, FRAMEWORKS, Bot, bot_behind_gateway, message_update, wire
from tests.support.env import TELEGRAM_IP, TG_SECRET

pytestmark = pytest.mark.asyncio(loop_scope="module")
UPDATE_IDS = itertools.count(700_000_001)


@pytest_asyncio.fixture(loop_scope="module", scope="module", params=sorted(FRAMEWORKS))
async def bot(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Bot]:
    async with bot_behind_gateway(FRAMEWORKS[request.param], tmp_path_factory.mktemp(request.param)) as b:
        yield b


def start() -> bytes:
    return wire(message_update(next(UPDATE_IDS), "/start", command=True))


async def test_the_bot_sees_its_secret_header_unchanged_one_client_ip_and_the_verdict(bot: Bot) -> None:
    body = start()
    arrived = len(bot.arrived)
    status, _, _ = await bot.client.deliver(bot.enforce, body)
    assert status == 200
    [request] = bot.arrived[arrived:]
    assert request.path == "/webhook"
    assert request.body == body
    assert request.headers["X-Telegram-Bot-Api-Secret-Token"] == TG_SECRET
    # the client sent "203.0.113.50, <Telegram>" through a trusted proxy: one resolved address
    assert request.headers["X-Forwarded-For"] == TELEGRAM_IP
    assert request.headers["X-Webhook-Verdict"] == "pass"


@pytest.mark.parametrize("token", [FORGED, None], ids=["wrong-token", "no-token"])
async def test_a_forged_update_never_reaches_the_bot_in_enforce(bot: Bot, token: str | None) -> None:
    handled, arrived = len(bot.seen), len(bot.arrived)
    status, answer, _ = await bot.client.deliver(bot.enforce, start(), token=token)
    assert status == 401
    assert answer.startswith(b'{"error":'), "the gateway's answer, not the bot's"
    assert len(bot.arrived) == arrived, "nothing was forwarded"
    assert len(bot.seen) == handled


async def test_report_only_forwards_a_forged_update_and_the_bot_still_refuses_it(bot: Bot) -> None:
    handled, arrived = len(bot.seen), len(bot.arrived)
    status, answer, _ = await bot.client.deliver(bot.report_only, start(), token=FORGED)
    # the gateway forwarded it, marked; the framework's own secret check answered
    assert (status, answer) == bot.framework.refusal
    [request] = bot.arrived[arrived:]
    assert request.headers["X-Webhook-Verdict"] == "would-reject; check=signature; reason=mismatch"
    assert request.headers["X-Telegram-Bot-Api-Secret-Token"] == FORGED
    assert len(bot.seen) == handled, "defence in depth: no handler ran"
    would_reject = await bot.client.gateway.metric(
        "webhook_gateway_requests_total", route=bot.report_only, outcome="would_reject"
    )
    assert would_reject >= 1


async def test_report_only_with_the_right_token_reaches_the_handler(bot: Bot) -> None:
    handled, relayed = len(bot.seen), len(bot.client.tap.responses)
    status, answer, content_type = await bot.client.deliver(bot.report_only, start())
    assert status == 200
    assert len(bot.seen) == handled + 1
    [written] = bot.client.tap.responses[relayed:]
    assert (answer, content_type) == (written.body, written.headers["content-type"])


async def test_nothing_but_the_frameworks_own_lookups_went_to_the_bot_api(bot: Bot) -> None:
    """Runs after the others for each framework: every reply travelled in a webhook answer."""
    assert bot.api.methods() == bot.framework.api_calls
