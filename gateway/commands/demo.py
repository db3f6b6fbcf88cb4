"""`webhook-gateway demo`: a gateway in front of a built-in echo bot, and three updates.

Needs nothing outside this process: it shows a valid, a forged and a foreign-IP update, the
verdict each got, what the bot received, and the metrics that moved.
"""

from __future__ import annotations

import json
import secrets
from typing import IO

import aiohttp
from aiohttp import web

from gateway import config as cfg
from gateway.serve.service import Service

UPDATE = {
    "update_id": 10001,
    "message": {"message_id": 1, "chat": {"id": 42, "type": "private"}, "text": "/start"},
}


async def _echo_bot(received: list[dict[str, str]]) -> tuple[web.AppRunner, int]:
    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        received.append({"verdict": request.headers.get("X-Webhook-Verdict", ""), "bytes": str(len(body))})
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/webhook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port


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
