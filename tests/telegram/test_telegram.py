"""`telegram set-webhook | info` and the watcher, against a fake Bot API on loopback.
The bot token and the secret must never appear in output, errors or logs."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from gateway import config as cfg
from gateway.logs import JsonFormatter
from gateway.proxy.snapshot import compile_snapshot
from gateway.telegram.api import BotApi, BotApiError, redact
from tests.support.botapi import BOT_TOKEN, FakeBotApi, fake_bot_api
from tests.support.env import ENV, ROOT_DIR, TG_SECRET
from tests.support.inprocess import base_config, route, running_gateway, tg_verify
from tests.support.tls import write_config

PUBLIC = "https://bot.example.com/hook/bot"
TG_ENV = {**ENV, "BOT_TOKEN": BOT_TOKEN}


def tg_route(api: FakeBotApi | str, **telegram: Any) -> dict[str, Any]:
    base = api if isinstance(api, str) else api.base
    section = {"bot_token": "env:BOT_TOKEN", "api_base": base, "expected_url": PUBLIC, **telegram}
    return route(upstream="http://127.0.0.1:9/x", verify=tg_verify(), telegram=section)


async def cli(tmp_path: Path, config: dict[str, Any], *args: str) -> tuple[int, str, str]:
    path = write_config(tmp_path / "g.yaml", config)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "telegram",
        *args,
        "--config",
        str(path),
        cwd=ROOT_DIR,
        env={**TG_ENV, "PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    text_out, text_err = out.decode(), err.decode()
    for secret in (BOT_TOKEN, BOT_TOKEN.split(":")[1], TG_SECRET):
        assert secret not in text_out + text_err
    return proc.returncode, text_out, text_err


async def test_set_webhook_registers_the_route_secret(tmp_path: Path) -> None:
    async with fake_bot_api() as api:
        code, out, err = await cli(
            tmp_path,
            base_config([tg_route(api)]),
            "set-webhook",
            "--route",
            "bot",
            "--allowed-updates",
            "message, callback_query",
            "--max-connections",
            "10",
            "--drop-pending-updates",
        )
    assert (code, err) == (0, "")
    assert api.methods() == ["setWebhook", "getWebhookInfo"]
    assert api.calls[0][1] == {
        "url": PUBLIC,  # telegram.expected_url when --url is not given
        "secret_token": TG_SECRET,  # the route's first secret, so Telegram sends what it accepts
        "allowed_updates": ["message", "callback_query"],
        "max_connections": 10,
        "drop_pending_updates": True,
    }
    assert "route bot: webhook set" in out
    assert "secret_token    routes[0].verify.secrets[0] (env:TG_SECRET)" in out


async def test_set_webhook_warnings_and_refusals(tmp_path: Path) -> None:
    async with fake_bot_api() as api:
        # Another URL than expected_url, with another path than the route's: set, with warnings.
        code, _, err = await cli(
            tmp_path,
            base_config([tg_route(api)]),
            "set-webhook",
            "--route",
            "bot",
            "--url",
            "https://x.test/other",
        )
        assert code == 0
        assert "Telegram will POST to /other, but route bot listens on /hook/bot" in err
        assert "the watcher will report webhook_url_matches 0" in err
        assert api.calls[-2][1] == {"url": "https://x.test/other", "secret_token": TG_SECRET}

        # A route that does not check Telegram's secret: refused before any call.
        unverified = tg_route(api)
        del unverified["verify"]
        calls = len(api.calls)
        code, _, err = await cli(tmp_path, base_config([unverified]), "set-webhook", "--route", "bot")
        assert code == 1
        assert "does not verify with scheme: telegram" in err
        assert len(api.calls) == calls

        code, _, err = await cli(tmp_path, base_config([tg_route(api)]), "set-webhook", "--route", "nope")
        assert (code, err.strip()) == (1, "error: no route named 'nope' (routes: bot)")

    # A token Telegram does not know: its error, without the token.
    async with fake_bot_api(token="999:SomeOtherTokenNotTheConfiguredOne_xx") as api:
        code, _, err = await cli(tmp_path, base_config([tg_route(api)]), "set-webhook", "--route", "bot")
    assert code == 1
    assert "error: route bot (bot 123456789): setWebhook: 401 Unauthorized" in err


async def test_info_is_readable(tmp_path: Path) -> None:
    async with fake_bot_api() as api:
        error_at = int(time.time()) - 300
        api.info = {
            "url": "https://attacker.test/steal",
            "has_custom_certificate": False,
            "pending_update_count": 17,
            "last_error_date": error_at,
            "last_error_message": "Wrong response from the webhook: 502 Bad Gateway",
            "max_connections": 40,
            "ip_address": "203.0.113.7",
        }
        code, out, err = await cli(tmp_path, base_config([tg_route(api)]), "info")
        assert (code, err) == (0, "")
        lines = out.splitlines()
        assert lines[0] == f"route bot (bot 123456789, {api.base})"
        assert (
            lines[1]
            == f"  url               https://attacker.test/steal  (DIFFERS from expected_url {PUBLIC})"
        )
        assert lines[2] == "  pending updates   17"
        assert lines[3].startswith("  last error        ") and lines[3].endswith(
            "(5 min ago): Wrong response from the webhook: 502 Bad Gateway"
        )
        assert "  ip address        203.0.113.7" in lines

        code, out, _ = await cli(tmp_path, base_config([tg_route(api)]), "info", "--json")
        assert code == 0
        assert json.loads(out)["bot"]["pending_update_count"] == 17


async def test_the_token_is_redacted_from_client_errors() -> None:
    # aiohttp quotes the request URL (which holds the token) in a redirect-loop error.
    async with fake_bot_api(redirect_forever=True) as api:
        config = cfg.build(base_config([tg_route(api)]), environ=TG_ENV)
        tg = config.routes[0].telegram
        assert tg is not None
        import aiohttp

        async with aiohttp.ClientSession() as session:
            with pytest.raises(BotApiError) as err:
                await BotApi(tg, session).get_webhook_info()
    message = str(err.value)
    assert "<bot-token>" in message
    assert BOT_TOKEN not in message and BOT_TOKEN.split(":")[1] not in message
    assert redact(f"/bot{BOT_TOKEN.replace(':', '%3A')}/x", BOT_TOKEN) == "/bot<bot-token>/x"


async def test_watcher_exports_the_webhook_state(caplog: pytest.LogCaptureFixture) -> None:
    async with fake_bot_api() as api:
        api.info = {"url": PUBLIC, "pending_update_count": 3, "last_error_date": 1_700_000_000}
        config = base_config([tg_route(api, watch=True, watch_interval="100ms")])
        caplog.set_level("INFO", logger="webhook_gateway.telegram")
        async with running_gateway(config, environ=TG_ENV) as gw:

            async def metric(name: str) -> float:
                return await gw.metric(f"webhook_gateway_telegram_{name}", route="bot")

            async def until(name: str, value: float) -> None:
                async with asyncio.timeout(20):
                    while await metric(name) != value:
                        await asyncio.sleep(0.05)

            await until("watch_up", 1)
            assert await metric("pending_updates") == 3
            assert await metric("last_error_timestamp_seconds") == 1_700_000_000
            assert await metric("webhook_url_matches") == 1

            # Someone points the webhook elsewhere.
            api.info = {**api.info, "url": "https://attacker.test/steal", "pending_update_count": 0}
            await until("webhook_url_matches", 0)
            assert any(
                r.getMessage() == "telegram webhook points elsewhere"
                and getattr(r, "webhook_url", None) == "https://attacker.test/steal"
                for r in caplog.records
            )

            # The token is revoked: the watch goes down, and the logs never show the token.
            api.token = "1:RevokedRevokedRevokedRevokedRevoked"
            await until("watch_up", 0)
            assert any(
                "getWebhookInfo: 401 Unauthorized" in str(getattr(r, "problem", "")) for r in caplog.records
            )

            # A reload that turns the watch off removes the route's series.
            current = gw.service.holder.current.config
            quiet = dataclasses.replace(
                current.routes[0],
                telegram=dataclasses.replace(current.routes[0].telegram, watch=False),  # type: ignore[arg-type]
            )
            new = dataclasses.replace(current, routes=(quiet,))
            gw.service.holder.current = compile_snapshot(new, gw.service.metrics)
            async with asyncio.timeout(20):
                while "webhook_gateway_telegram_watch_up{" in await gw.metrics_text():
                    await asyncio.sleep(0.05)
    # Every field of every log line, as the JSON formatter writes it.
    lines = [JsonFormatter().format(r) for r in caplog.records]
    assert any("401 Unauthorized" in line for line in lines)
    assert not [line for line in lines if BOT_TOKEN.split(":")[1] in line]
    assert BOT_TOKEN not in gw.log.getvalue()


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({}, "routes[0].telegram.bot_token: is required (env:NAME or file:PATH)"),
        (
            {"bot_token": BOT_TOKEN},
            "routes[0].telegram.bot_token: secrets come only from env:NAME or file:PATH",
        ),
        (
            {"bot_token": "env:NOT_SET"},
            "routes[0].telegram.bot_token: environment variable NOT_SET is not set",
        ),
        (
            {"bot_token": "env:TG_SECRET"},
            "routes[0].telegram.bot_token: the value of env:TG_SECRET does not look like a bot token",
        ),
        (
            {"bot_token": "env:BOT_TOKEN", "watch": True},
            "routes[0].telegram.expected_url: is required with watch: true",
        ),
        (
            {"bot_token": "env:BOT_TOKEN", "api_base": "ftp://x"},
            "routes[0].telegram.api_base: 'ftp://x' is not",
        ),
        (
            {"bot_token": "env:BOT_TOKEN", "watch_intervall": "5s"},
            "routes[0].telegram.watch_intervall: unknown key",
        ),
    ],
)
def test_config_problems(section: dict[str, Any], expected: str) -> None:
    raw = base_config([route(upstream="http://127.0.0.1:9/x", telegram=section)])
    with pytest.raises(cfg.ConfigError) as err:
        cfg.build(raw, environ=TG_ENV)
    assert any(p.startswith(expected) for p in err.value.problems), err.value.problems
    assert all(BOT_TOKEN not in p for p in err.value.problems)


def test_config_defaults() -> None:
    raw = base_config([route(upstream="http://127.0.0.1:9/x", telegram={"bot_token": "env:BOT_TOKEN"})])
    tg = cfg.build(raw, environ=TG_ENV).routes[0].telegram
    assert tg is not None
    assert (tg.api_base, tg.watch, tg.watch_interval, tg.expected_url) == (
        "https://api.telegram.org",
        False,
        60.0,
        None,
    )
    assert BOT_TOKEN not in repr(tg)
