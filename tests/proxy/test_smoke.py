from tests.support.env import TELEGRAM_IP, TG_SECRET
from tests.support.inprocess import base_config, post, route, running_gateway, tg_verify
from tests.support.upstream import recording_upstream


async def test_valid_update_is_forwarded_byte_exact() -> None:
    async with recording_upstream() as up:
        cfg = base_config([route(upstream=up.url, verify=tg_verify(), allow_sources=["telegram"])])
        async with running_gateway(cfg) as gw:
            body = b'{"update_id": 1}'
            status, answer, _ = await post(
                gw.base + "/hook/bot",
                body,
                {"X-Telegram-Bot-Api-Secret-Token": TG_SECRET, "X-Forwarded-For": TELEGRAM_IP},
            )
            assert status == 200
            assert answer == b'{"ok":true}'
            assert up.received[0].body == body
            assert up.received[0].header("X-Webhook-Verdict") == "pass"
            assert await gw.metric("webhook_gateway_requests_total", route="bot", outcome="forwarded") == 1
