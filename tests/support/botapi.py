"""A fake Telegram Bot API on loopback: the same URL shape (`/bot<token>/<method>`) and answer
shape (`{"ok": ..., "result" | "error_code", "description"}`) as api.telegram.org."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

BOT_TOKEN = "123456789:AAFakeTokenForTests_0123456789abcdefgh"


@dataclass
class FakeBotApi:
    token: str = BOT_TOKEN
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    info: dict[str, Any] = field(
        default_factory=lambda: {"url": "", "has_custom_certificate": False, "pending_update_count": 0}
    )
    redirect_forever: bool = False
    port: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def methods(self) -> list[str]:
        return [m for m, _ in self.calls]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.redirect_forever:
            raise web.HTTPFound(request.path)
        token, method = request.match_info["token"], request.match_info["method"]
        if token != self.token:
            return web.json_response(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401
            )
        body = await request.read()
        params = json.loads(body) if body else {}
        self.calls.append((method, params))
        if method == "setWebhook":
            self.info = {
                **self.info,
                "url": params["url"],
                "max_connections": params.get("max_connections", 40),
            }
            if "allowed_updates" in params:
                self.info["allowed_updates"] = params["allowed_updates"]
            if params.get("drop_pending_updates"):
                self.info["pending_update_count"] = 0
            return web.json_response({"ok": True, "result": True, "description": "Webhook was set"})
        if method == "getWebhookInfo":
            return web.json_response({"ok": True, "result": self.info})
        if method == "getMe":  # what bot frameworks ask when they start
            me = {"id": int(self.token.split(":")[0]), "is_bot": True, "first_name": "Test Bot"}
            return web.json_response({"ok": True, "result": {**me, "username": "test_bot"}})
        return web.json_response({"ok": False, "error_code": 404, "description": "Not Found"}, status=404)


@contextlib.asynccontextmanager
async def fake_bot_api(**kwargs: Any) -> AsyncIterator[FakeBotApi]:
    api = FakeBotApi(**kwargs)
    app = web.Application()
    app.router.add_route("*", "/bot{token}/{method}", api.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    api.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield api
    finally:
        await runner.cleanup()
