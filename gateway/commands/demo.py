"""`webhook-gateway demo`: a gateway in front of a built-in echo bot, and three updates.

Needs nothing outside this process: it shows a valid, a forged and a foreign-IP update, the
verdict each got, what the bot received, and the metrics that moved. With `--serve` it keeps
the bot and the gateway running and prints a curl that gets the bot's answer through it.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import sys
from typing import IO

import aiohttp
from aiohttp import web

from gateway import config as cfg
from gateway.config.overrides import Overrides
from gateway.serve.service import Service

# `demo --serve` is driven by hand from a printed curl, so its path and token are fixed and
# shown. It binds loopback only and forwards only to its own echo bot.
SERVE_LISTEN = "127.0.0.1:8080"
SERVE_ADMIN = "127.0.0.1:9090"
SERVE_PATH = "/tg/demo-bot/quickstart"
SERVE_TOKEN = "demo-secret-token"  # noqa: S105 - public by design, shown in the curl
TELEGRAM_IP = "149.154.167.220"  # inside 149.154.160.0/20, Telegram's webhook network

UPDATE = {
    "update_id": 10001,
    "message": {"message_id": 1, "chat": {"id": 42, "type": "private"}, "text": "/start"},
}


async def _echo_bot(received: list[dict[str, str]]) -> tuple[web.AppRunner, int]:
    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        received.append({"verdict": request.headers.get("X-Webhook-Verdict", ""), "bytes": str(len(body))})
        return web.json_response(_echo(body))

    app = web.Application()
    app.router.add_post("/webhook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port


def _echo(body: bytes) -> dict[str, object]:
    """The bot's webhook reply: a Bot API call in the response body, as Telegram bots may send."""
    try:
        message = json.loads(body)["message"]
        return {"method": "sendMessage", "chat_id": message["chat"]["id"], "text": message["text"]}
    except (ValueError, KeyError, TypeError):
        return {"ok": True}


async def run_demo(out: IO[str] | None = None) -> int:
    import io
    import sys

    write = (out or sys.stdout).write
    received: list[dict[str, str]] = []
    bot, bot_port = await _echo_bot(received)
    token = secrets.token_urlsafe(24)
    config = cfg.build(
        {
            "listen": "127.0.0.1:0",
            "admin_listen": "127.0.0.1:0",
            "mode": "enforce",
            "trusted_proxies": ["127.0.0.1/32"],  # the demo client plays a proxy naming senders
            "routes": [
                {
                    "name": "demo-bot",
                    "path": "/tg/demo-bot/" + secrets.token_hex(6),
                    "upstream": f"http://127.0.0.1:{bot_port}/webhook",
                    "verify": {"scheme": "telegram", "secrets": ["env:DEMO_TG_SECRET"]},
                    "allow_sources": ["telegram"],
                }
            ],
        },
        environ={"DEMO_TG_SECRET": token},
    )
    service = Service(config, log_stream=io.StringIO())
    await service.start()
    path = config.routes[0].path
    url = f"http://127.0.0.1:{service.public_port}{path}"
    body = json.dumps(UPDATE).encode()
    cases = [
        ("valid update from Telegram", "149.154.167.220", token),
        ("forged secret token", "149.154.167.220", "guessed-" + secrets.token_hex(4)),
        ("right token, foreign IP", "203.0.113.7", token),
    ]
    write(f"gateway on {url} -> echo bot on 127.0.0.1:{bot_port} (route demo-bot, enforce)\n\n")
    try:
        async with aiohttp.ClientSession() as session:
            for label, ip, secret in cases:
                before = len(received)
                headers = {
                    "Content-Type": "application/json",
                    "X-Forwarded-For": ip,
                    "X-Telegram-Bot-Api-Secret-Token": secret,
                }
                async with session.post(url, data=body, headers=headers) as resp:
                    text = await resp.text()
                reached = received[before]["verdict"] if len(received) > before else "(not forwarded)"
                write(f"{label:28} from {ip:16} -> {resp.status} {text.strip():40} bot saw: {reached}\n")
            async with session.get(f"http://127.0.0.1:{service.admin_port}/metrics") as resp:
                metrics = await resp.text()
        write("\nmetrics (http://ADMIN/metrics):\n")
        for line in metrics.splitlines():
            if line.startswith(("webhook_gateway_requests_total", "webhook_gateway_check_failures_total")):
                write("  " + line + "\n")
    finally:
        await service.stop()
        await bot.cleanup()
    ok = [r["verdict"] for r in received] == ["pass"]
    write("\ndemo " + ("passed: only the valid update reached the bot\n" if ok else "FAILED\n"))
    return 0 if ok else 1


def serve_curl(listen: cfg.Listen, text: str = "hello") -> str:
    update = {**UPDATE, "message": {**UPDATE["message"], "text": text}}  # type: ignore[dict-item]
    return (
        f"curl -s http://{listen}{SERVE_PATH} \\\n"
        "  -H 'Content-Type: application/json' \\\n"
        f"  -H 'X-Telegram-Bot-Api-Secret-Token: {SERVE_TOKEN}' \\\n"
        f"  -H 'X-Forwarded-For: {TELEGRAM_IP}' \\\n"
        f"  -d '{json.dumps(update, separators=(',', ':'))}'"
    )


async def serve_demo(over: Overrides, out: IO[str] | None = None) -> int:
    """Keep the echo bot and an enforcing gateway in front of it running until SIGINT/SIGTERM."""
    write = (out or sys.stdout).write
    received: list[dict[str, str]] = []
    bot, bot_port = await _echo_bot(received)
    try:
        config = over.apply(
            cfg.build(
                {
                    "listen": SERVE_LISTEN,
                    "admin_listen": SERVE_ADMIN,
                    "mode": "enforce",
                    # curl plays the load balancer in front of the gateway: it names the sender.
                    "trusted_proxies": ["127.0.0.1/32", "::1/128"],
                    "routes": [
                        {
                            "name": "demo-bot",
                            "path": SERVE_PATH,
                            "upstream": f"http://127.0.0.1:{bot_port}/webhook",
                            "verify": {"scheme": "telegram", "secrets": ["env:DEMO_TG_SECRET"]},
                            "allow_sources": ["telegram"],
                        }
                    ],
                },
                environ={"DEMO_TG_SECRET": SERVE_TOKEN},
            )
        )
    except cfg.ConfigError as exc:
        await bot.cleanup()
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    # Access log lines on stderr: stdout holds only what to paste.
    service = Service(config, log_stream=sys.stderr)
    try:
        await service.start()
    except OSError as exc:
        await bot.cleanup()
        print(f"cannot listen: {exc} (choose other ports with --listen/--admin-listen)", file=sys.stderr)
        return 1
    listen = cfg.Listen(config.listen.host, service.public_port)
    admin = cfg.Listen(config.admin_listen.host, service.admin_port)
    write(
        f"demo gateway on http://{listen} (route demo-bot, enforce, Telegram secret token and "
        f"source check) -> echo bot on 127.0.0.1:{bot_port}; metrics on http://{admin}/metrics\n"
        "paste this in another terminal:\n\n"
        f"{serve_curl(listen)}\n\n"
        "the bot's answer comes back through the gateway:\n"
        f"{json.dumps(_echo(json.dumps(UPDATE).replace('/start', 'hello').encode()))}\n\n"
        "Ctrl-C stops it.\n"
    )
    (out or sys.stdout).flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await service.stop()
        await bot.cleanup()
    write(f"stopped; the bot received {len(received)} update(s)\n")
    return 0
