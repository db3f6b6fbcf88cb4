"""Helpers for the replay / rate-limit / accept / store tests: an injected clock, an
in-process gateway using it, an upstream that holds requests until told, Telegram updates."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gateway import config as cfg
from gateway.serve.service import Service
from tests.support.env import ENV, TG_SECRET
from tests.support.inprocess import RunningGateway, post
from tests.support.leaks import record_output
from tests.support.upstream import Received

TOKEN = {"X-Telegram-Bot-Api-Secret-Token": TG_SECRET}
FORGED = {"X-Telegram-Bot-Api-Secret-Token": "forged-token"}


class FakeClock:
    """Wall-clock seconds that move only when a test says so."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@contextlib.asynccontextmanager
async def gateway(
    config: dict[str, Any], clock: FakeClock | None = None, environ: Mapping[str, str] | None = None
) -> AsyncIterator[RunningGateway]:
    built = cfg.build(config, environ=dict(ENV if environ is None else environ))
    log = io.StringIO()
    service = Service(built, log_stream=log, clock=clock or FakeClock())
    await service.start()
    try:
        yield RunningGateway(service, log)
    finally:
        await service.stop()
        record_output("access log", log.getvalue())  # for the session's secret-leak scan


def update(uid: int, kind: str = "message", chat: str | None = "private", **extra: Any) -> bytes:
    """A Telegram update as Telegram sends it (compact JSON)."""
    obj: dict[str, Any] = {"message_id": uid, "date": 1_700_000_000, "text": "hi"}
    if chat is not None:
        obj["chat"] = {"id": 42, "type": chat}
    return json.dumps({"update_id": uid, kind: obj, **extra}, separators=(",", ":")).encode()


def tg(ip: str = "149.154.167.220", token: Mapping[str, str] = TOKEN) -> dict[str, str]:
    """Headers of a request from `ip` (named by the trusted proxy 127.0.0.1)."""
    return {**token, "X-Forwarded-For": ip}


async def send(gw: RunningGateway, body: bytes, headers: Mapping[str, str], path: str = "/hook/bot") -> Any:
    return await post(gw.base + path, body, headers)


@dataclass
class GatedUpstream:
    """Records each request at once, then answers only when `gate` is set."""

    status: int = 200
    body: bytes = b'{"method":"sendMessage","chat_id":42,"text":"hi"}'
    received: list[Received] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        body = await request.read()
        raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers]
        self.received.append(Received(request.method, request.raw_path, raw, body))
        self.arrived.set()
        await self.gate.wait()
        return web.Response(status=self.status, body=self.body, content_type="application/json")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhook"


@contextlib.asynccontextmanager
async def gated_upstream(**kwargs: Any) -> AsyncIterator[GatedUpstream]:
    up = GatedUpstream(**kwargs)
    runner = web.ServerRunner(web.Server(up.handle, auto_decompress=False))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    up.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield up
    finally:
        up.gate.set()
        await runner.cleanup()
